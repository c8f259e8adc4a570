"""A POSIX/bash tokenizer that keeps exactly what the classifier needs.

``shlex`` cannot help here: it knows no operators, no ``$(…)``, no heredocs, and it
silently joins ``a;b``. Hiding a command from the classifier is the whole game of
an evasive agent, so every place bash would run code is surfaced: pipelines and
``&& || ; & newline`` lists, subshells and groups, ``$(…)``/backticks/``<(…)`` even
inside double quotes and ``${x:-$(…)}``, heredoc bodies that the outer shell expands,
and ``$'\\x72\\x6d'`` (ANSI-C quoting, decoded). Words keep a mark when they came
from an expansion (see :class:`~agent_shim.risk.model.Word`).

Anything bash itself would reject (an unbalanced quote, a missing ``)``) raises
:class:`ParseError`; the caller treats that as "cannot see what runs".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from agent_shim.risk.model import MAX_DEPTH, Word


class ParseError(ValueError):
    """The text is not something bash would run as written."""


@dataclass(slots=True)
class Redirect:
    fd: str
    op: str
    target: str
    body: str | None = None
    quoted: bool = False
    dynamic_body: bool = False


@dataclass(slots=True)
class Command:
    words: list[str] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    group: Script | None = None

    def empty(self) -> bool:
        return not self.words and not self.redirects and self.group is None


@dataclass(slots=True)
class Script:
    """``pipelines`` in order; ``subs`` are substitutions the shell runs to build words."""

    pipelines: list[list[Command]] = field(default_factory=list)
    subs: list[Script] = field(default_factory=list)


_BLANK: Final = re.compile(r"(?:[ \t\r\f\v]|\\\n)+")
_PLAIN: Final = re.compile(r"[^\s;&|<>()'\"\\$`*?\[{]+")
_DQ_PLAIN: Final = re.compile(r'[^"\\$`]+')
_HD_PLAIN: Final = re.compile(r"[^\\$`]+")
_REDIR: Final = re.compile(r"(\d*)(<<<|<<-|<<|<>|<&|<|>>|>&|>\||>|&>>|&>)")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-]")
_GLOB_CLASS: Final = re.compile(r"\[[^\s;&|<>()\]]+\]")
_BRACE: Final = re.compile(r"\{[^\s{}'\"]*(?:,|\.\.)[^\s{}'\"]*\}")
_ANSI: Final = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "e": "\x1b", "E": "\x1b", "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip
_WORD_END: Final = frozenset(" \t\n\r\f\v;&|<>()")
_TEST_OPS: Final = ("&&", "||", "<", ">", "(", ")")


def parse(text: str, depth: int = 0) -> Script:
    """Parse ``text`` as bash would; raise :class:`ParseError` where bash would refuse."""
    return _Parser(text, depth).parse()


class _Parser:
    def __init__(self, src: str, depth: int) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.depth = depth
        self.heredocs: list[Redirect] = []
        self.scripts: list[Script] = []
        self.last_quoted = False

    def parse(self) -> Script:
        script = self.parse_list(None)
        for r in self.heredocs:
            r.body = ""
        return script

    # -- lists, pipelines, commands -------------------------------------------

    def parse_list(self, close: str | None) -> Script:
        if self.depth + len(self.scripts) > MAX_DEPTH:
            raise ParseError("nested too deeply")
        script = Script()
        self.scripts.append(script)
        pipeline: list[Command] = []
        cmd = Command()
        s = self.s
        while True:
            m = _BLANK.match(s, self.i)
            if m:
                self.i = m.end()
            if self.i >= self.n:
                if close:
                    raise ParseError(f"missing '{close}'")
                break
            c = s[self.i]
            if cmd.words and cmd.words[0] == "[[" and "]]" not in cmd.words:
                op = next((o for o in _TEST_OPS if s.startswith(o, self.i)), None)
                if op:
                    cmd.words.append(op)
                    self.i += len(op)
                    continue
            if c == "#":
                j = s.find("\n", self.i)
                self.i = self.n if j < 0 else j
                continue
            if c == "\n":
                self.i += 1
                self._end(script, pipeline, cmd, True)
                pipeline, cmd = [], Command()
                self.read_heredocs()
                continue
            if c == ")":
                self.i += 1
                if close == ")":
                    break
                cmd = Command()  # a `case` pattern such as `start)`: not a command
                continue
            if c == ";":
                self.i += 1
                while self.i < self.n and s[self.i] in ";&":
                    self.i += 1
                self._end(script, pipeline, cmd, True)
                pipeline, cmd = [], Command()
                continue
            if c == "|" or (c == "&" and not s.startswith("&>", self.i)):
                two = s[self.i : self.i + 2]
                if two in ("||", "&&"):
                    self.i += 2
                    self._end(script, pipeline, cmd, True)
                elif c == "|":
                    self.i += 2 if two == "|&" else 1
                    self._end(script, pipeline, cmd, False)
                else:
                    self.i += 1
                    self._end(script, pipeline, cmd, True)
                cmd = Command()
                continue
            if c == "(":
                self._paren(cmd)
                if cmd.group is None and not cmd.words:
                    cmd = Command()
                continue
            if s.startswith(("<(", ">("), self.i):
                start = self.i
                self.i += 2
                sub = self.parse_list(")")
                self.scripts[-1].subs.append(sub)
                cmd.words.append(Word(s[start : self.i], splittable=False))
                continue
            m = _REDIR.match(s, self.i) if c in "<>&0123456789" else None
            if m:
                self._redirect(cmd, m)
                continue
            start = self.i
            w = self.word()
            if self.i == start:
                raise ParseError(f"unexpected {c!r}")
            cmd.words.append(w)
        self._end(script, pipeline, cmd, True)
        self.scripts.pop()
        return script

    @staticmethod
    def _end(script: Script, pipeline: list[Command], cmd: Command, finish: bool) -> None:
        if not cmd.empty():
            pipeline.append(cmd)
        if finish and pipeline:
            script.pipelines.append(list(pipeline))
            pipeline.clear()

    def _paren(self, cmd: Command) -> None:
        s = self.s
        if cmd.words or cmd.group is not None:
            m = _BLANK.match(s, self.i + 1)
            j = m.end() if m else self.i + 1
            if j < self.n and s[j] == ")":  # `name ()` starts a function definition
                self.i = j + 1
                cmd.words.clear()
                return
            raise ParseError("unexpected '('")
        if s.startswith("((", self.i):
            end = self.arith_end(self.i + 2)
            if end > 0:
                self.scan_text(s[self.i + 2 : end - 2])
                self.i = end
                cmd.words.append("((")
                return
        self.i += 1
        cmd.group = self.parse_list(")")

    def _redirect(self, cmd: Command, m: re.Match[str]) -> None:
        fd, op = m.group(1), m.group(2)
        self.i = m.end()
        b = _BLANK.match(self.s, self.i)
        if b:
            self.i = b.end()
        start = self.i
        target = self.word()
        if self.i == start:
            raise ParseError(f"redirect {op} has no target")
        r = Redirect(fd, op, target, quoted=self.last_quoted)
        if op in ("<<", "<<-"):
            self.heredocs.append(r)
        elif op == "<<<":
            r.body = str(target) + "\n"
            r.dynamic_body = isinstance(target, Word)
        cmd.redirects.append(r)

    def read_heredocs(self) -> None:
        pending, self.heredocs = self.heredocs, []
        s = self.s
        for r in pending:
            lines: list[str] = []
            while self.i < self.n:
                j = s.find("\n", self.i)
                end = self.n if j < 0 else j
                line = s[self.i : end]
                self.i = self.n if j < 0 else j + 1
                if r.op == "<<-":
                    line = line.lstrip("\t")
                if line == r.target:
                    break
                lines.append(line)
            r.body = "".join(x + "\n" for x in lines)
            if not r.quoted:
                r.dynamic_body = self.scan_text(r.body)

    # -- words ------------------------------------------------------------------

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
        sub = _Parser(inner, self.depth + len(self.scripts)).parse()
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
        sub = _Parser(text, self.depth + len(self.scripts))
        sub.scripts.append(self.scripts[-1])
        return sub.dquote([], heredoc=True)
