"""A SQL lexer that splits statements the way the server will.

Comments and quoting are where SQL hides things: ``-- WHERE id=1`` is not a WHERE,
``/*! DROP TABLE x */`` runs on MySQL, ``'a\\'; DROP TABLE x; --'`` is one string
to MySQL but a string and a DROP to PostgreSQL. The lexer therefore has two
dialects, and the classifier runs both whenever the text contains a character on
which they disagree, keeping the worse reading.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

TokKind = Literal["w", "s", "q", "n", "p", "body", "meta", "dot"]


class SqlParseError(ValueError):
    """The text cannot be split into statements (an unterminated string or comment)."""


class Tok(NamedTuple):
    """A token; a tuple because statements are lexed into many of them (hot path)."""

    kind: TokKind
    text: str

    @property
    def up(self) -> str:
        return self.text.upper() if self.kind == "w" else ""


_SIMPLE: Final = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)"
    r"|(?P<param>\$\d+|@@?[A-Za-z_][\w.]*)"
    r"|(?P<op><>|!=|<=|>=|::|\|\||:=|=>|[-+*/%<>=~!^&|#.,;()\[\]{}:@?])"
)
# Stops before a character followed by a quote, so that E'…' / N'…' reach the string code.
_RUN: Final = re.compile(r"(?:[A-Za-z0-9_\s,()*=<>!+%](?!'))+")
_PIECE: Final = re.compile(
    r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|<>|!=|<=|>=|[^\s]"
)
_DOLLAR: Final = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_META_TERMINATORS: Final = frozenset({"g", "G", "gx", "gexec", "gset", "gdesc", "crosstabview"})


def dialects_differ(text: str) -> bool:
    """Only then is it worth lexing twice."""
    return any(c in text for c in ("#", "\\", "/*", "--", '"'))


def split_statements(text: str, mysql: bool) -> list[list[Tok]]:
    """Statements as token lists; comments dropped, MySQL ``/*! … */`` kept as code."""
    out: list[list[Tok]] = []
    cur: list[Tok] = []
    i, n = 0, len(text)

    def end() -> None:
        nonlocal cur
        if cur:
            out.append(cur)
        cur = []

    while i < n:
        m = _RUN.match(text, i)
        if m:  # the common case: a run of words, numbers and plain operators, lexed in bulk
            for piece in _PIECE.findall(m.group()):
                c = piece[0]
                cur.append(Tok("n" if c.isdigit() else "w" if c.isalpha() or c == "_" else "p",
                               piece))
            i = m.end()
            continue
        c = text[i]
        if (c == "-" and text.startswith("--", i) and (
                not mysql or i + 2 >= n or text[i + 2] in " \t\r\n\f\v")) or (mysql and c == "#"):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and text.startswith("/*", i):
            if mysql and text.startswith("/*!", i):
                j = text.find("*/", i)
                if j < 0:
                    raise SqlParseError("unterminated /*! comment")
                inner = re.sub(r"^\d{5,6}", "", text[i + 3 : j])
                text = text[:i] + " " + inner + " " + text[j + 2 :]
                n = len(text)
                continue
            i = _skip_block(text, i, nested=not mysql)
            continue
        if c == "'" or (c in "EeBbXxNn" and text[i + 1 : i + 2] == "'" and _word_start(text, i)):
            backslash = mysql or c in "Ee"
            start = i + (0 if c == "'" else 1)
            j = _string_end(text, start, backslash)
            cur.append(Tok("s", text[start + 1 : j - 1].replace("''", "'")))
            i = j
            continue
        if c == '"' and mysql:
            j = _string_end(text, i, True, '"')
            cur.append(Tok("s", text[i + 1 : j - 1]))
            i = j
            continue
        if c in '"`' or (c == "[" and not mysql):
            close = "]" if c == "[" else c
            j = text.find(close, i + 1)
            while j >= 0 and close != "]" and text.startswith(close * 2, j):
                j = text.find(close, j + 2)
            if j < 0:
                raise SqlParseError(f"unterminated {c} identifier")
            cur.append(Tok("q", text[i + 1 : j]))
            i = j + 1
            continue
        if c == "$":
            m = _DOLLAR.match(text, i)
            if m:
                j = text.find(m.group(), m.end())
                if j < 0:
                    raise SqlParseError("unterminated dollar quote")
                cur.append(Tok("body", text[m.end() : j]))
                i = j + len(m.group())
                continue
        if c == "\\":
            m = re.match(r"\\([A-Za-z!?+]*)", text[i:])
            name = m.group(1) if m else ""
            if name in _META_TERMINATORS:
                end()
                if name == "gexec":
                    out.append([Tok("meta", "\\gexec")])
                i += 1 + len(name)
                continue
            if not cur or name:
                j = text.find("\n", i)
                j = n if j < 0 else j
                end()
                out.append([Tok("meta", text[i:j].strip())])
                i = j
                continue
        if c == "." and not cur and (i == 0 or text[i - 1] in "\n;"):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append([Tok("dot", text[i:j].strip())])
            i = j
            continue
        if c == ";":
            end()
            i += 1
            continue
        m = _SIMPLE.match(text, i)
        if not m:
            cur.append(Tok("p", c))
            i += 1
            continue
        kind = m.lastgroup
        if kind == "word":
            cur.append(Tok("w", m.group()))
        elif kind == "num":
            cur.append(Tok("n", m.group()))
        elif kind in ("op", "param"):
            cur.append(Tok("p", m.group()))
        i = m.end()
    end()
    return out


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _string_end(text: str, i: int, backslash: bool, quote: str = "'") -> int:
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if text.startswith(quote * 2, j):
                j += 2
                continue
            return j + 1
        j += 1
    raise SqlParseError("unterminated string")


def _skip_block(text: str, i: int, nested: bool) -> int:
    depth = 0
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth = depth + 1 if nested or depth == 0 else depth
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlParseError("unterminated /* comment")
