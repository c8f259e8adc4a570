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
from agent_shim.risk.shellwords import ParseError, WordLexer

__all__ = ["Command", "ParseError", "Redirect", "Script", "parse"]


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
_REDIR: Final = re.compile(r"(\d*)(<<<|<<-|<<|<>|<&|<|>>|>&|>\||>|&>>|&>)")
_TEST_OPS: Final = ("&&", "||", "<", ">", "(", ")")


def parse(text: str, depth: int = 0) -> Script:
    """Parse ``text`` as bash would; raise :class:`ParseError` where bash would refuse."""
    return _Parser(text, depth).parse()


class _Parser(WordLexer):
    def __init__(self, src: str, depth: int) -> None:
        super().__init__(src, depth)
        self.heredocs: list[Redirect] = []

    def sub_lexer(self, text: str) -> WordLexer:
        return _Parser(text, self.depth + len(self.scripts))

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
        if self.s.startswith(("<(", ">("), start):  # `< <(curl …)`
            self.i += 2
            self.scripts[-1].subs.append(self.parse_list(")"))
            target: str = Word(self.s[start : self.i])
        else:
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
