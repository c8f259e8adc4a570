"""The simple commands inside an action, for policy globs.

A policy rule such as ``deny "terraform destroy*"`` is matched by the policy
evaluator against the whole command *or any segment*, and a loosening rule
against the whole command *and every segment* (see ``agent_shim.policy_eval``).
That only works if the segments are complete: every simple command of every
pipeline and list, every ``$(…)``/backtick/``<(…)`` body, and the commands hidden
behind wrappers (``sudo``, ``env``, ``timeout``, ``xargs``…), ``bash -c '…'``,
``ssh host '…'`` and ``eval``, each both as written and with the wrapper removed.
For SQL, each statement is a segment. More segments only ever make a deny
rule match more often and an allow rule less often.
"""

from __future__ import annotations

import posixpath
from typing import Final

from agent_shim.risk.model import MAX_DEPTH
from agent_shim.risk.opts import getopt
from agent_shim.risk.shellparse import ParseError, Script, parse
from agent_shim.risk.sqllex import SqlParseError, dialects_differ, split_statements

_MAX_SEGMENTS: Final = 128
_KEYWORDS: Final = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{",
                              "}", "done", "fi", "esac", "time", "coproc"})
# wrapper → (its options that take a value, how many operands precede the command)
_WRAPPERS: Final[dict[str, tuple[str, int]]] = {
    "sudo": ("ugpCDrtTUhR", 0), "doas": ("uC", 0), "nice": ("n", 0), "nohup": ("", 0),
    "time": ("fo", 0), "timeout": ("sk", 1), "gtimeout": ("sk", 1), "command": ("", 0),
    "exec": ("a", 0), "builtin": ("", 0), "xargs": ("aEILnPsd", 0), "stdbuf": ("ioe", 0),
    "ionice": ("cnp", 0), "setsid": ("", 0), "chrt": ("", 1), "taskset": ("", 1),
    "unbuffer": ("", 0), "nsenter": ("tSGwr", 0), "chroot": ("", 1), "flock": ("wE", 1),
    "strace": ("eopsuESP", 0), "firejail": ("", 0), "systemd-run": ("upEM", 0),
}  # fmt: skip
_SHELLS: Final = frozenset({"bash", "sh", "zsh", "dash", "ksh", "ash", "mksh", "fish", "su"})


def shell_segments(script: Script, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every simple command in a parsed shell line, as written and with wrappers removed."""
    out: list[str] = list(extra)
    _script(script, out, 0)
    return tuple(dict.fromkeys(out))[:_MAX_SEGMENTS]


def sql_segments(text: str) -> tuple[str, ...]:
    """Each statement, re-spelled from its tokens (comments dropped), in both dialects."""
    out: list[str] = []
    for mysql in (False, True) if dialects_differ(text) else (False,):
        try:
            stmts = split_statements(text, mysql)
        except SqlParseError:
            continue
        for toks in stmts:
            out.append(" ".join(f"'{t.text}'" if t.kind == "s" else t.text for t in toks))
    return tuple(dict.fromkeys(out))[:_MAX_SEGMENTS]


def _text(text: str, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH or len(out) >= _MAX_SEGMENTS:
        return
    try:
        script = parse(text, depth)
    except ParseError:
        return
    _script(script, out, depth)


def _script(script: Script, out: list[str], depth: int) -> None:
    for pipeline in script.pipelines:
        for cmd in pipeline:
            if cmd.group is not None:
                _script(cmd.group, out, depth + 1)
            if cmd.words:
                _words(list(cmd.words), out, depth)
    for sub in script.subs:
        _script(sub, out, depth + 1)


def _words(words: list[str], out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH or len(out) >= _MAX_SEGMENTS:
        return
    while words and (words[0] in _KEYWORDS or _is_assignment(words[0])):
        words.pop(0)
    if not words:
        return
    out.append(" ".join(words))
    name = posixpath.basename(words[0])
    rest = words[1:]
    if name == "env":
        while rest and (rest[0].startswith("-") or _is_assignment(rest[0])):
            rest.pop(0)
        _words(rest, out, depth + 1)
    elif name in _WRAPPERS:
        values, operands = _WRAPPERS[name]
        o = getopt(rest, values, stop_at_positional=True)
        inner = [*o.pos, *o.rest][operands:] if not (o.dashdash and not o.pos) else list(o.rest)
        _words(inner, out, depth + 1)
    elif name in _SHELLS or name in ("eval", "watch"):
        for code in _shell_strings(name, rest):
            _text(code, out, depth + 1)
    elif name == "ssh":
        o = getopt(rest, "BbcDEeFIiJLlmOoPpQRSWw", stop_at_positional=True)
        if o.rest:
            _text(" ".join(o.rest), out, depth + 1)


def _shell_strings(name: str, rest: list[str]) -> list[str]:
    if name in ("eval", "watch"):
        return [" ".join(a for a in rest if not a.startswith("-"))] if rest else []
    for k, a in enumerate(rest):
        if a.startswith("-") and "c" in a[1:] and not a.startswith("--") and k + 1 < len(rest):
            return [rest[k + 1]]
    return []


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.replace("_", "a").isalnum() and not name[:1].isdigit()
