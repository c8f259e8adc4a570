"""The values every part of the classifier speaks: verdicts, words, stdin, calls.

Kept apart from the parser and the tool tables so that a tool module can be
written (and read) without knowing how the shell grammar is handled, and so that
nothing here can import anything that does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from agent_shim.types import Risk, risk_rank

# Beyond this nesting (bash -c inside ssh inside sudo ...) we stop looking and
# assume the worst; it bounds recursion on hostile input.
MAX_DEPTH: Final = 12


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the classifier concluded, with the why an operator needs to decide.

    ``segments`` (not part of equality) lists the simple commands or SQL statements
    found inside the action, for policy globs; see :mod:`agent_shim.risk.segments`.
    """

    risk: Risk
    reasons: tuple[str, ...]
    segments: tuple[str, ...] = field(default=(), compare=False, repr=False)


def wordset(text: str) -> frozenset[str]:
    """A frozenset from a whitespace-separated literal: keeps long vocabularies readable."""
    return frozenset(text.split())


def clip(text: str, limit: int = 60) -> str:
    """Quote command text in a reason without letting it swamp the approval view."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def read(reason: str) -> Assessment:
    return Assessment("read", (reason,))


def write(reason: str) -> Assessment:
    return Assessment("write", (reason,))


def destructive(reason: str) -> Assessment:
    return Assessment("destructive", (reason,))


_LEVEL: Final = {"read": 2, "write": 1, "destructive": 0}


def combine(parts: Iterable[Assessment]) -> Assessment:
    """Worst risk wins; reasons keep the worst first so the approval view leads with them.

    Reasons of read-only parts are dropped once anything writes: they would only
    dilute what the operator has to look at.
    """
    items = parts if isinstance(parts, list) else list(parts)
    if len(items) == 1:
        return items[0]
    if not items:
        return Assessment("read", ())
    buckets: tuple[dict[str, None], dict[str, None], dict[str, None]] = ({}, {}, {})
    for p in items:
        bucket = buckets[_LEVEL[p.risk]]
        for r in p.reasons:
            bucket[r] = None
    if any(p.risk == "destructive" for p in items):
        risk: Risk = "destructive"
    elif any(p.risk == "write" for p in items):
        risk = "write"
    else:
        return Assessment("read", tuple(buckets[2]))
    merged = dict(buckets[0])
    merged.update(buckets[1])
    return Assessment(risk, tuple(merged))


def at_least(a: Assessment, risk: Risk, reason: str) -> Assessment:
    """Raise ``a`` to ``risk`` (never lower it); ``reason`` is the context that floors it.

    The context is kept even when ``a`` is already worse (``ssh host 'rm -rf /'`` should
    still say which host), after ``a``'s own reasons so the worst stays first.
    """
    if risk_rank(a.risk) >= risk_rank(risk):
        return a if reason in a.reasons else Assessment(a.risk, (*a.reasons, reason))
    kept = a.reasons if a.risk != "read" else ()
    return Assessment(risk, (reason, *kept))


class Word(str):
    """A shell word after quote removal that remembers it came from an expansion.

    Literal words stay plain ``str`` (cheap); only words that held ``$x``, ``$(…)``,
    backticks, globs or braces become ``Word``, so a handler can tell that the
    text it sees is not what will run.
    """

    dynamic: bool
    splittable: bool

    def __new__(cls, text: str, *, splittable: bool = False) -> Word:
        obj = super().__new__(cls, text)
        obj.dynamic = True
        obj.splittable = splittable
        return obj


def is_dynamic(word: str) -> bool:
    return isinstance(word, Word)


def is_splittable(word: str) -> bool:
    """An unquoted expansion may become several words, options included."""
    return isinstance(word, Word) and word.splittable


def derive(parent: str, text: str) -> str:
    """A piece cut out of ``parent`` keeps its dynamic mark (e.g. ``-c$CMD``)."""
    if isinstance(parent, Word):
        return Word(text, splittable=parent.splittable)
    return text


StdinSource = Literal["none", "pipe", "text", "file"]


@dataclass(frozen=True, slots=True)
class Stdin:
    """What a command's standard input holds, as far as the text shows it.

    ``text`` is set only when the content is visible in the command itself (a
    heredoc, a here-string, ``echo '…' |``); ``dynamic`` says the outer shell will
    expand parts of it first, so the visible text is not what arrives.
    """

    source: StdinSource
    text: str | None = None
    dynamic: bool = False
    origin: str = ""

    @property
    def visible(self) -> bool:
        return self.text is not None and not self.dynamic


NO_STDIN: Final = Stdin("none")


class Runner(Protocol):
    """Lets a tool handler classify the commands it would run, without importing shell.py."""

    def shell(self, text: str, depth: int, stdin: Stdin) -> Assessment: ...

    def argv(self, words: Sequence[str], depth: int, stdin: Stdin) -> Assessment: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One command about to run: its name (basename), arguments and stdin."""

    name: str
    args: tuple[str, ...]
    stdin: Stdin
    depth: int
    runner: Runner

    def shell(self, text: str, stdin: Stdin | None = None) -> Assessment:
        """Classify a shell string this command would hand to a shell (stdin is inherited)."""
        if is_dynamic(text):
            return destructive(
                f"{self.name} runs shell code built from an expansion ({clip(text)}); "
                "what runs is not visible"
            )
        return self.runner.shell(text, self.depth + 1, stdin or self.stdin)

    def argv(self, words: Sequence[str], stdin: Stdin | None = None) -> Assessment:
        """Classify a command this one would execute directly (stdin is inherited)."""
        if not words:
            return read("no command")
        return self.runner.argv(words, self.depth + 1, stdin or self.stdin)

    def with_args(self, name: str, args: Sequence[str]) -> Call:
        return Call(name, tuple(args), self.stdin, self.depth, self.runner)


Handler = Callable[[Call], Assessment]

