"""Option parsing shared by the tool handlers.

Every tool spells flags its own way (``-rf``, ``-r -f``, ``--recursive``,
``--force=true``, ``-auto-approve``, ``-pSECRET``); handlers that look for "is
--force there?" with substring tests get fooled by values (``-m 'rf'``) and miss
bundles (``-fr``). One getopt-like parser, told which options take a value, keeps
that uniform and lets ``Word`` marks survive into the values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from agent_shim.risk.model import derive


class Opts:
    """Options seen (names without dashes), their values, and positional arguments.

    A plain slotted class rather than a dataclass: one is built per handled command,
    and default factories showed up in profiles.
    """

    __slots__ = ("dashdash", "flags", "pos", "rest", "values")

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.values: dict[str, list[str]] = {}
        self.pos: list[str] = []
        self.rest: list[str] = []
        self.dashdash = False

    def has(self, *names: str) -> bool:
        return not self.flags.isdisjoint(names)

    def prefix(self, full: str, minimum: int = 3) -> bool:
        """GNU and git accept unambiguous abbreviations: ``--forc`` is ``--force``."""
        return any(len(f) >= minimum and full.startswith(f) for f in self.flags if len(f) > 1)

    def value(self, *names: str) -> str | None:
        found: str | None = None
        for n in names:
            vals = self.values.get(n)
            if vals:
                found = vals[-1]
        return found

    def all(self, *names: str) -> list[str]:
        out: list[str] = []
        for n in names:
            out.extend(self.values.get(n, ()))
        return out

    @property
    def args(self) -> list[str]:
        """Positional arguments, including those after ``--``."""
        return self.pos + self.rest


def getopt(
    args: Sequence[str],
    short_values: str = "",
    long_values: Iterable[str] = (),
    *,
    optional_short: str = "",
    stop_at_positional: bool = False,
    single_dash_long: bool = False,
) -> Opts:
    """Parse ``args`` the way GNU getopt (or Go's ``flag`` with ``single_dash_long``) would.

    ``stop_at_positional`` is for wrappers (``sudo``, ``xargs``, ``ssh``) whose first
    positional begins another command whose options are not theirs.
    """
    longs = frozenset(long_values)
    o = Opts()
    i = 0
    n = len(args)
    while i < n:
        a = args[i]
        i += 1
        if a == "--":
            o.dashdash = True
            o.rest.extend(args[i:])
            break
        if a.startswith("--") or (single_dash_long and a.startswith("-") and len(a) > 2):
            body = a[2:] if a.startswith("--") else a[1:]
            name, eq, val = body.partition("=")
            o.flags.add(name)
            if eq:
                o.values.setdefault(name, []).append(derive(a, val))
            elif name in longs and i < n:
                o.values.setdefault(name, []).append(args[i])
                i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                j += 1
                o.flags.add(ch)
                if ch in short_values:
                    if j < len(a):
                        o.values.setdefault(ch, []).append(derive(a, a[j:]))
                    elif i < n:
                        o.values.setdefault(ch, []).append(args[i])
                        i += 1
                    break
                if ch in optional_short:
                    o.values.setdefault(ch, []).append(derive(a, a[j:]))
                    break
            continue
        o.pos.append(a)
        if stop_at_positional:
            o.rest.extend(args[i:])
            break
    return o


def wants_help(
    args: Sequence[str],
    *,
    short_h: bool = False,
    word: bool = False,
    value_opts: Collection[str] | None = None,
) -> bool:
    """``--help`` (and, where the tool means it, ``-h`` / a ``help`` word) before ``--``.

    A help flag right after another option is ignored: it may be that option's
    value (``curl -H --help -X DELETE …`` sends a header and still deletes).
    ``value_opts`` names the options that take a value, when the caller knows them.
    """
    prev = ""
    for a in args:
        if a == "--":
            return False
        is_help = a in ("--help", "-help") or (short_h and a == "-h") or (word and a == "help")
        if is_help and not _may_take(prev, value_opts):
            return True
        prev = a
    return False


def _may_take(prev: str, value_opts: Collection[str] | None) -> bool:
    if not prev.startswith("-") or "=" in prev or prev in ("--help", "-h", "-help"):
        return False
    return value_opts is None or prev.lstrip("-") in value_opts


def flag_value(args: Sequence[str], *names: str) -> str | None:
    """Value of ``--name=v`` / ``--name v`` / ``-name v`` without a full parse."""
    found: str | None = None
    for idx, a in enumerate(args):
        for name in names:
            if a == name and idx + 1 < len(args):
                found = args[idx + 1]
            elif a.startswith(name + "="):
                found = a[len(name) + 1 :]
    return found


def numeric_zero(value: str | None) -> bool:
    return value is not None and value.strip() in ("0", "00", "0.0", "+0")
