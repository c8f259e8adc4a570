"""Shell command dispatch: from parsed pipelines to one verdict.

This is where the evasion tricks are undone before a tool handler ever sees the
command: keywords and assignments are stripped, ``/bin/rm`` becomes ``rm`` (but
``/tmp/x/rm`` stays suspicious), a command name that comes from an expansion is
refused outright, data piped into a shell is judged by what feeds it, and every
substitution the shell would run is classified as a command of its own.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Final

from agent_shim.risk import (
    readers,
    tools_cloud,
    tools_db,
    tools_dev,
    tools_docker,
    tools_files,
    tools_git,
    tools_iac,
    tools_k8s,
    tools_net,
    tools_pkg,
    tools_run,
    tools_session,
    tools_sys,
    tools_text,
    tools_wrap,
)
from agent_shim.risk.model import (
    MAX_DEPTH,
    NO_STDIN,
    Assessment,
    Call,
    Handler,
    Stdin,
    at_least,
    clip,
    combine,
    destructive,
    is_dynamic,
    is_splittable,
    read,
    write,
)
from agent_shim.risk.opts import wants_help
from agent_shim.risk.paths import write_to
from agent_shim.risk.shellparse import Command, ParseError, Redirect, Script, parse
from agent_shim.risk.verbs import DESTRUCTIVE_VERBS, verb_risk
from agent_shim.risk.written import Written

_MODULES: Final = (
    readers, tools_text, tools_files, tools_sys, tools_net, tools_git, tools_docker,
    tools_k8s, tools_cloud, tools_iac, tools_db, tools_pkg, tools_dev, tools_run, tools_wrap,
    tools_session,
)  # fmt: skip
REGISTRY: Final[dict[str, Handler]] = {}
OWN_HELP: Final[set[str]] = set()
for _mod in _MODULES:
    REGISTRY.update(_mod.HANDLERS)
    OWN_HELP.update(getattr(_mod, "OWN_HELP", ()))
KNOWN_COMMANDS: Final = frozenset(REGISTRY)

_STANDARD_BIN: Final = frozenset(
    {"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
     "/opt/homebrew/bin", "/snap/bin", "/usr/lib/postgresql/bin"}
)  # fmt: skip
_PREFIX_KEYWORDS: Final = frozenset(
    {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "}", "done", "fi", "esac",
     "time", "coproc"}
)  # fmt: skip
_HEADER_KEYWORDS: Final = frozenset({"for", "select", "case", "((", "[[", "[", "test"})
_ASSIGN: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?\+?=")
# Only these are commonly installed under versioned names (python3.11, pg_dump15); any
# other "ls1" is an unknown program, not ls.
_VERSIONED_TOOLS: Final = frozenset({"python", "pip", "php", "ruby", "perl", "node", "psql",
                                     "pg_dump", "pg_restore", "pg_dumpall", "pg_ctl", "mysql",
                                     "lua", "java", "helm", "kubectl", "terraform", "go", "pypy"})
_VERSIONED: Final = re.compile(r"^([a-z][a-z_-]*?)-?\d+(?:\.\d+)*$")


# Shell syntax (``do``, ``fi``, ``for x in …``, ``[[ … ]]``, ``x=1``) runs nothing by itself;
# it carries no reason so that it does not clutter the explanation of what does run.
_SYNTAX: Final = Assessment("read", ())


class _Runner:
    def shell(self, text: str, depth: int, stdin: Stdin) -> Assessment:
        return classify_shell(text, depth, stdin)

    def argv(self, words: Sequence[str], depth: int, stdin: Stdin) -> Assessment:
        return classify_argv(words, depth, stdin)


RUNNER: Final = _Runner()


def classify_shell(text: str, depth: int = 0, stdin: Stdin = NO_STDIN) -> Assessment:
    """Classify a shell command line (or a script body handed to a shell)."""
    return classify_shell_parsed(text, depth, stdin)[0]


def classify_shell_parsed(
    text: str, depth: int = 0, stdin: Stdin = NO_STDIN
) -> tuple[Assessment, Script | None]:
    """:func:`classify_shell`, also returning the parse so callers need not parse twice."""
    if depth > MAX_DEPTH:
        return destructive("commands nested too deeply to follow; assumed destructive"), None
    try:
        script = parse(text, depth)
    except ParseError as exc:
        return destructive(f"cannot parse shell command ({exc}); what runs is not visible"), None
    if not script.pipelines and not script.subs:
        if depth == 0:
            return write("empty command: nothing to classify"), script
        return read("empty command does nothing"), script
    result = classify_script(script, depth, stdin)
    return (result if result.reasons else read("only shell syntax; nothing runs")), script


def classify_script(script: Script, depth: int, stdin: Stdin) -> Assessment:
    parts: list[Assessment] = []
    written = Written()
    for pipeline in script.pipelines:
        feed = stdin
        for cmd in pipeline:
            parts.append(_command(cmd, depth, feed))
            ran = written.check(cmd, lambda text: classify_shell(text, depth + 1))
            if ran is not None:
                parts.append(ran)
            out = _output_of(cmd)
            written.record(cmd, feed, out)
            feed = out
    for sub in script.subs:
        parts.append(classify_script(sub, depth + 1, NO_STDIN))
    return combine(parts)


def _output_of(cmd: Command) -> Stdin:
    """What a pipeline stage hands to the next one, when the text shows it."""
    words = cmd.words
    name = words[0] if words else "subshell"
    if cmd.group is None and words:
        if name == "cat" and len(words) == 1:
            for r in cmd.redirects:
                if r.body is not None:
                    return Stdin("pipe", r.body, r.dynamic_body, "heredoc")
        if name == "echo":
            args = list(words[1:])
            while args and args[0] in ("-n", "-E"):
                args.pop(0)
            # dash's echo decodes backslash escapes: text with one is not what arrives
            if not (args and args[0].startswith("-e")) and not any("\\" in a for a in args):
                return Stdin("pipe", " ".join(args) + "\n", any(map(is_dynamic, args)), "echo")
        if name == "printf" and len(words) == 2 and not set(words[1]) & {"%", "\\"}:
            return Stdin("pipe", words[1], is_dynamic(words[1]), "printf")
    return Stdin("pipe", None, False, str(name))


def _command(cmd: Command, depth: int, stdin: Stdin) -> Assessment:
    parts: list[Assessment] = []
    for r in cmd.redirects:
        a = _redirect(r)
        if a is not None:
            parts.append(a)
        if r.body is not None:
            origin = "here-string" if r.op == "<<<" else "heredoc"
            stdin = Stdin("text", r.body, r.dynamic_body, origin)
        elif r.op == "<" and is_dynamic(r.target):  # `bash < <(curl …)`: not a file on disk
            stdin = Stdin("pipe", None, True, str(r.target))
        elif r.op == "<":
            stdin = Stdin("file", None, False, str(r.target))
    if cmd.group is not None:
        parts.append(classify_script(cmd.group, depth + 1, stdin))
    if cmd.words:
        parts.append(classify_argv(cmd.words, depth, stdin))
    return combine(parts) if parts else _SYNTAX


def _redirect(r: Redirect) -> Assessment | None:
    if r.op in ("<", "<<", "<<-", "<<<", "<&"):
        return None
    target = r.target
    if r.op in (">&", "<&") and (target.isdigit() or target in ("-", "")):
        return None
    verb = ">>" if r.op in (">>", "&>>") else ">"
    if is_dynamic(target):
        return write(f"{verb} {target}: output goes to a path only known at run time")
    return write_to(f"redirect {verb}", target)


def _canonical(name: str) -> str | None:
    if name in REGISTRY:
        return name
    if name.lower() in REGISTRY:  # `RM -rf /` runs rm on a case-insensitive filesystem (macOS)
        return name.lower()
    m = _VERSIONED.match(name)
    if m and m.group(1) in _VERSIONED_TOOLS:
        return m.group(1)
    head = name.split(".", 1)[0]
    if head in ("mkfs", "fsck", "mkswap", "python", "pip") and head in REGISTRY:
        return head
    return None


def classify_argv(words: Sequence[str], depth: int, stdin: Stdin) -> Assessment:
    """Classify one simple command given as words (after the shell did its parsing)."""
    if depth > MAX_DEPTH:
        return destructive("commands nested too deeply to follow; assumed destructive")
    w = list(words)
    parts: list[Assessment] = []
    while w and w[0] in _PREFIX_KEYWORDS and not is_dynamic(w[0]):
        w.pop(0)
        if w and w[0] == "-p":
            w.pop(0)
    if w and w[0] == "function":
        w = w[2:]
        while w and w[0] in _PREFIX_KEYWORDS:
            w.pop(0)
    if not w:
        return _SYNTAX
    if w[0] in _HEADER_KEYWORDS and not is_dynamic(w[0]):
        return _SYNTAX
    while w and _ASSIGN.match(w[0]):
        a = tools_wrap.assignment(w.pop(0))
        if a is not None:
            parts.append(a)
    if not w:
        return combine(parts) if parts else _SYNTAX
    parts.append(_dispatch(w, depth, stdin))
    return combine(parts)


def _dispatch(w: list[str], depth: int, stdin: Stdin) -> Assessment:
    raw = w[0]
    if is_dynamic(raw):
        return destructive(
            f"command name comes from an expansion ({clip(raw)}); what runs is not visible"
        )
    name = raw
    alt: Assessment | None = None
    if "/" in raw:
        folder, base = posixpath.split(raw)
        name = base
        if posixpath.normpath(folder) not in _STANDARD_BIN:
            alt = write(f"runs {raw}, a program or script whose content is not visible")
            if verb_risk(base.rsplit(".", 1)[0]) == "destructive":
                alt = destructive(f"runs {raw}, whose name says it destroys or deletes")
    key = _canonical(name)
    if key is not None and key != name and name.lower() == key and alt is None:
        alt = write(f"{raw} is not a known command ({key} only on a case-insensitive filesystem)")
    if key is None:
        guess = _unknown(name, w[1:])
        return combine([alt, guess]) if alt and guess.risk == "destructive" else alt or guess
    call = Call(key, tuple(w[1:]), stdin, depth, RUNNER)
    if key not in OWN_HELP and (
        wants_help(call.args) or (len(call.args) == 1 and call.args[0] == "--version")
    ):
        result = read(f"{key} --help only prints usage")
    else:
        result = REGISTRY[key](call)
    if result.risk == "read" and key not in readers.PURE and any(map(is_splittable, call.args)):
        result = at_least(
            result, "write", f"{key}: an unquoted expansion may add options that write"
        )
    return combine([alt, result]) if alt else result


def _unknown(name: str, args: Sequence[str]) -> Assessment:
    for a in args:
        if a.lower() in DESTRUCTIVE_VERBS:
            return destructive(f"unknown command {name} asked to {a}; assumed destructive")
        if a.startswith(("--force", "--accept-data-loss", "--skip-safety")):
            return destructive(f"unknown command {name} with {a.split('=', 1)[0]}, which skips "
                               "its safety checks; assumed destructive")
    if verb_risk(name) == "destructive":
        return destructive(f"unknown command {name} names a destructive action")
    return write(f"unknown command {name}; assumed to write")
