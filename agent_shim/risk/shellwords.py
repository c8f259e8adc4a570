"""Shell words: quoting, expansions and substitutions, as bash reads them.

The structural parser (:mod:`agent_shim.risk.shellparse`) builds on this lexer. It is
kept apart because this is where hiding happens inside a single word: ``r\\m``,
``'r'"m"``, ``$'\\x72\\x6d'`` (decoded), ``"$(rm …)"`` inside double quotes,
``${x:-$(rm …)}``, backticks, ``$((…$(rm …)…))``, globs and ``{a,b}`` braces. Every
substitution found is recorded in the script being built so that it is classified
as a command of its own, and words that came from an expansion are marked
(:class:`~agent_shim.risk.model.Word`) so that nothing trusts their text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from agent_shim.risk.model import Word

if TYPE_CHECKING:
    from agent_shim.risk.shellparse import Script


class ParseError(ValueError):
    """The text is not something bash would run as written."""


_PLAIN: Final = re.compile(r"[^\s;&|<>()'\"\\$`*?\[{]+")
_DQ_PLAIN: Final = re.compile(r'[^"\\$`]+')
_HD_PLAIN: Final = re.compile(r"[^\\$`]+")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-]")
_GLOB_CLASS: Final = re.compile(r"\[[^\s;&|<>()\]]+\]")
_BRACE: Final = re.compile(r"\{[^\s{}'\"]*(?:,|\.\.)[^\s{}'\"]*\}")
_ANSI: Final = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "e": "\x1b", "E": "\x1b", "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip
_WORD_END: Final = frozenset(" \t\n\r\f\v;&|<>()")


class WordLexer:
    """Reads words at ``self.i``; the structural parser supplies lists and sub-parsers."""

    def __init__(self, src: str, depth: int) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.depth = depth
        self.scripts: list[Script] = []
        self.last_quoted = False

    def parse(self) -> Script:
        raise NotImplementedError

    def parse_list(self, close: str | None) -> Script:
        raise NotImplementedError

    def sub_lexer(self, text: str) -> WordLexer:
        raise NotImplementedError

    def word(self) -> str:
        s, n = self.s, self.n
        parts: list[str] = []
        dyn = split = quoted = False
        while self.i < n:
            m = _PLAIN.match(s, self.i)
            if m:
                parts.append(m.group())
                self.i = m.end()
                continue
            c = s[self.i]
            if c in _WORD_END:
                break
            if c == "'":
                j = s.find("'", self.i + 1)
                if j < 0:
                    raise ParseError("unbalanced single quote")
                parts.append(s[self.i + 1 : j])
                self.i = j + 1
                quoted = True
            elif c == '"':
                self.i += 1
                dyn |= self.dquote(parts, heredoc=False)
                quoted = True
            elif c == "\\":
                if self.i + 1 < n and s[self.i + 1] != "\n":
                    parts.append(s[self.i + 1])
                elif self.i + 1 >= n:
                    parts.append("\\")
                self.i += 2
                quoted = True
            elif c == "$":
                d, q = self.dollar(parts, in_dq=False)
                dyn, split, quoted = dyn or d, split or d, quoted or q
            elif c == "`":
                self.backtick(parts)
                dyn = split = True
            elif c == "[" and not _GLOB_CLASS.match(s, self.i):
                parts.append(c)
                self.i += 1
            elif c == "{":
                b = _BRACE.match(s, self.i)
                if b:
                    dyn = split = True
                    parts.append(b.group())
                    self.i = b.end()
                else:
                    parts.append(c)
                    self.i += 1
            else:  # * ? [..]: a glob, expanded by the shell into names we cannot see
                parts.append(c)
                self.i += 1
                dyn = True
        self.last_quoted = quoted
        text = "".join(parts)
        return Word(text, splittable=split) if dyn else text

    def dquote(self, parts: list[str], *, heredoc: bool) -> bool:
        """Consume a double-quoted body (or a heredoc body); True when it expands anything."""
        s, n = self.s, self.n
        plain = _HD_PLAIN if heredoc else _DQ_PLAIN
        dyn = False
        while True:
            if self.i >= n:
                if heredoc:
                    return dyn
                raise ParseError("unbalanced double quote")
            m = plain.match(s, self.i)
            if m:
                parts.append(m.group())
                self.i = m.end()
                continue
            c = s[self.i]
            if c == '"':
                self.i += 1
                return dyn
            if c == "\\":
                nxt = s[self.i + 1 : self.i + 2]
                if (nxt and nxt in "$`\\\n") or (nxt == '"' and not heredoc):
                    if nxt != "\n":
                        parts.append(nxt)
                    self.i += 2
                else:
                    parts.append("\\")
                    self.i += 1
            elif c == "$":
                dyn |= self.dollar(parts, in_dq=True)[0]
            else:
                self.backtick(parts)
                dyn = True

    def dollar(self, parts: list[str], *, in_dq: bool) -> tuple[bool, bool]:
        """Handle text at a ``$``; returns (expands, was-quoting)."""
        s, i = self.s, self.i
        nxt = s[i + 1 : i + 2]
        if nxt == "'" and not in_dq:
            parts.append(self.ansi_c())
            return False, True
        if nxt == '"' and not in_dq:
            self.i += 2
            return self.dquote(parts, heredoc=False), True
        if nxt == "(":
            if s.startswith("$((", i):
                end = self.arith_end(i + 3)
                if end > 0:
                    self.scan_text(s[i + 3 : end - 2])
                    parts.append(s[i:end])
                    self.i = end
                    return True, False
            self.i = i + 2
            sub = self.parse_list(")")
            self.scripts[-1].subs.append(sub)
            parts.append(s[i : self.i])
            return True, False
        if nxt == "{":
            self.i = i + 2
            self.param()
            parts.append(s[i : self.i])
            return True, False
        m = _NAME.match(s, i + 1)
        if m:
            parts.append(s[i : m.end()])
            self.i = m.end()
            return True, False
        parts.append("$")
        self.i += 1
        return False, False

    def param(self) -> None:
        """Skip a ``${…}`` body, recording any substitution inside (``${x:-$(cmd)}``)."""
        s, n = self.s, self.n
        depth = 1
        scratch: list[str] = []
        while self.i < n:
            c = s[self.i]
            if c == "}":
                self.i += 1
                depth -= 1
                if depth == 0:
                    return
            elif c == "{":
                depth += 1
                self.i += 1
            elif c == "\\":
                self.i += 2
            elif c == "'":
                j = s.find("'", self.i + 1)
                if j < 0:
                    raise ParseError("unbalanced single quote")
                self.i = j + 1
            elif c == '"':
                self.i += 1
                self.dquote(scratch, heredoc=False)
            elif c == "$":
                self.dollar(scratch, in_dq=True)
            elif c == "`":
                self.backtick(scratch)
            else:
                self.i += 1
        raise ParseError("unterminated ${")

    def arith_end(self, j: int) -> int:
        """Index just past the ``))`` closing an arithmetic expansion, or -1."""
        depth = 0
        s = self.s
        while j < self.n:
            c = s[j]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    return j + 2 if s.startswith("))", j) else -1
                depth -= 1
            j += 1
        return -1

    def backtick(self, parts: list[str]) -> None:
        s, n = self.s, self.n
        j = self.i + 1
        buf: list[str] = []
        while j < n:
            c = s[j]
            if c == "\\" and j + 1 < n and s[j + 1] in "`$\\":
                buf.append(s[j + 1])
                j += 2
                continue
            if c == "`":
                break
            buf.append(c)
            j += 1
        else:
            raise ParseError("unbalanced backtick")
        inner = "".join(buf)
        sub = self.sub_lexer(inner).parse()
        self.scripts[-1].subs.append(sub)
        parts.append(f"`{inner}`")
        self.i = j + 1

    def ansi_c(self) -> str:
        """Decode ``$'…'`` the way bash does, so ``$'\\x72m'`` is seen as ``rm``."""
        s, n = self.s, self.n
        i = self.i + 2
        out: list[str] = []
        while i < n:
            c = s[i]
            if c == "'":
                self.i = i + 1
                return "".join(out)
            if c != "\\" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            e = s[i + 1]
            if e in _ANSI:
                out.append(_ANSI[e])
                i += 2
                continue
            spec = {"x": (16, 2), "u": (16, 4), "U": (16, 8)}.get(e)
            if spec or e in "01234567":
                base, width = spec or (8, 3)
                start = i + 2 if spec else i + 1
                pattern = f"[0-9a-fA-F]{{1,{width}}}" if base == 16 else "[0-7]{1,3}"
                digits = re.match(pattern, s[start:])
                if digits:
                    try:
                        out.append(chr(int(digits.group(), base)))
                    except (ValueError, OverflowError) as exc:
                        raise ParseError("bad escape in $'…'") from exc
                    i = start + len(digits.group())
                    continue
            if e == "c" and i + 2 < n:
                out.append(chr(ord(s[i + 2]) & 31))
                i += 3
                continue
            out.append("\\" + e)
            i += 2
        raise ParseError("unbalanced $' quote")

    def scan_text(self, text: str) -> bool:
        """Record substitutions in text the shell expands but does not split (heredocs, $((…)))."""
        sub = self.sub_lexer(text)
        sub.scripts.append(self.scripts[-1])
        return sub.dquote([], heredoc=True)
