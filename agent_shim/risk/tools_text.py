"""Text tools that look like readers but can write files or run programs.

``sed``'s ``e`` command and ``s///e`` flag, ``awk``'s ``system()`` and pipes,
``find -exec``/``-delete`` and ``tee`` are the classic ways to turn a harmless
looking filter into a shell; each is read closely enough to find those, and
nothing more.
"""

from __future__ import annotations

import re
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    Word,
    clip,
    combine,
    destructive,
    is_dynamic,
    read,
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.paths import write_to

_SED_SIMPLE: Final = frozenset("pdDnNgGhHxlPqQz=F{}!")


def _sed_delimited(script: str, i: int, count: int) -> int:
    """Skip ``count`` delimited parts starting at the delimiter at ``i``."""
    delim = script[i]
    i += 1
    for _ in range(count):
        while i < len(script) and script[i] != delim:
            i += 2 if script[i] == "\\" else 1
        if i >= len(script):
            raise ValueError("unterminated")
        i += 1
    return i


def sed_script_effect(script: str) -> str:
    """'exec', 'write' or 'read' for a sed program (GNU syntax)."""
    effect = "read"
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in " \t\n;":
            i += 1
            continue
        if c.isdigit() or c in "$,~+!":
            i += 1
            continue
        if c == "/" or (c == "\\" and i + 1 < n):
            i = _sed_delimited(script, i if c == "/" else i + 1, 1)
            while i < n and script[i] in "IM":
                i += 1
            continue
        if c == "#":
            j = script.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "sy":
            i = _sed_delimited(script, i + 1, 2)
            j = i
            while j < n and script[j] not in ";\n}":
                if script[j] == "e" and c == "s":
                    return "exec"
                if script[j] == "w" and c == "s":
                    effect = "write"
                    nl = script.find("\n", j)
                    j = n if nl < 0 else nl
                    break
                j += 1
            i = j
            continue
        if c == "e":
            return "exec"
        if c in "wW":
            target = script[i + 1 :].split("\n", 1)[0].strip()
            effect = "write" if target not in ("/dev/stdout", "/dev/stderr") else effect
            i = n if "\n" not in script[i:] else script.index("\n", i)
            continue
        if c in "aicrRbtT:v":
            j = script.find("\n", i)
            stop = script.find(";", i) if c in "bTt:v" else -1
            ends = [x for x in (j, stop) if x >= 0]
            i = min(ends) if ends else n
            continue
        if c in _SED_SIMPLE:
            i += 1
            continue
        raise ValueError(f"unknown sed command {c!r}")
    return effect


def sed(call: Call) -> Assessment:
    o = getopt(call.args, "efl", {"expression", "file", "line-length"}, optional_short="i")
    pos = list(o.pos)
    if o.has("i") and pos and pos[0] == "" and o.values.get("i") == [""]:
        pos.pop(0)  # BSD: sed -i '' 's/…/'
    scripts = o.all("e", "expression")
    if not scripts and not o.has("f", "file") and pos:
        scripts = [pos.pop(0)]
    files = pos + o.rest
    parts: list[Assessment] = []
    if o.has("f", "file"):
        parts.append(write("sed -f runs a sed script file whose content is not visible"))
    sandbox = o.has("sandbox")
    for sc in scripts:
        if is_dynamic(sc):
            parts.append(destructive(f"sed program built from an expansion ({clip(sc)}) may "
                                     "run commands (e)"))
            continue
        try:
            effect = sed_script_effect(sc)
        except ValueError:
            parts.append(write(f"sed program not understood ({clip(sc)}); assumed write"))
            continue
        if effect == "exec" and not sandbox:
            parts.append(destructive("sed e command / s///e flag runs shell commands"))
        elif effect == "write" and not sandbox:
            parts.append(write("sed w command writes a file"))
    if o.has("i", "in-place") or o.prefix("in-place"):
        hits = [a for a in (write_to("sed -i", f) for f in files) if a is not None]
        parts.append(write("sed -i edits files in place"))
        parts.extend(h for h in hits if h.risk == "destructive")
    return combine(parts) if parts else read("sed only prints transformed text")


_AWK_STRINGS: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_AWK_EXEC: Final = re.compile(
    r"\bsystem\s*\(|\|\s*getline|\|&|\bprintf?\b[^;{}\n]*[^|]\|[^|]"
)
_AWK_WRITE: Final = re.compile(r"\bprintf?\b[^;{}\n]*>")


def awk(call: Call) -> Assessment:
    o = getopt(call.args, "FvfiEeWl", {"field-separator", "assign", "file", "include", "exec",
                                      "source", "load"})
    parts: list[Assessment] = []
    programs = o.all("e", "source")
    if o.has("f", "file", "E", "exec"):
        parts.append(write("awk -f runs an awk program file whose content is not visible"))
    elif not programs and o.pos:
        programs = [o.pos[0]]
    if "inplace" in o.all("i", "include"):
        parts.append(write("awk -i inplace edits files in place"))
    if o.has("l", "load"):
        parts.append(destructive("awk -l loads a native extension"))
    for prog in programs:
        if is_dynamic(prog):
            parts.append(destructive(f"awk program built from an expansion ({clip(prog)}) may "
                                     "run commands"))
            continue
        text = _AWK_STRINGS.sub('""', prog)
        if _AWK_EXEC.search(text):
            parts.append(destructive("awk system() / command pipes run shell commands"))
        elif _AWK_WRITE.search(text):
            parts.append(write("awk print > file writes files"))
    return combine(parts) if parts else read(f"{call.name} only prints")


_FIND_EXEC: Final = ("-exec", "-execdir", "-ok", "-okdir")
_FIND_WRITE: Final = ("-fprint", "-fprint0", "-fprintf", "-fls")


def find(call: Call) -> Assessment:
    args = list(call.args)
    parts: list[Assessment] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-delete":
            parts.append(destructive("find -delete deletes every match"))
        elif a in _FIND_EXEC:
            j = i + 1
            while j < len(args) and args[j] not in (";", "+"):
                j += 1
            inner = [x if x != "{}" else Word("{}") for x in args[i + 1 : j]]
            parts.append(call.argv(inner) if inner else write(f"find {a} without a command"))
            i = j
        elif a in _FIND_WRITE and i + 1 < len(args):
            hit = write_to(f"find {a}", args[i + 1])
            if hit:
                parts.append(hit)
            i += 1
        i += 1
    return combine(parts) if parts else read("find only lists files")


def tee(call: Call) -> Assessment:
    o = getopt(call.args, "", {"output-error"})
    verb = "tee -a" if o.has("a", "append") else "tee"
    hits = [a for a in (write_to(verb, f) for f in o.args) if a is not None]
    return combine(hits) if hits else read("tee only copies input to output")


_EDITOR_EXEC: Final = re.compile(r"!|\bsystem\s*\(|\bcall\s+system|:!|\bterminal\b|\bsh\b")


def editor(call: Call) -> Assessment:
    cmds = [a[1:] for a in call.args if a.startswith("+")]
    args = list(call.args)
    for flag in ("-c", "--cmd", "-S", "--eval", "-l", "--load", "-x", "--execute"):
        cmds += [args[k + 1] for k, a in enumerate(args[:-1]) if a == flag]
    if any(_EDITOR_EXEC.search(c) or is_dynamic(c) for c in cmds):
        return destructive(f"{call.name} commands run shell commands")
    if call.name == "ed" and call.stdin.source != "none":
        text = call.stdin.text
        if not call.stdin.visible or (text and "!" in text):
            return destructive("ed script from stdin may run shell commands (!)")
    return write(f"{call.name} edits files")


def m4(call: Call) -> Assessment:
    text = " ".join(call.args)
    if "syscmd" in text or "esyscmd" in text or not call.args:
        return destructive("m4 syscmd/esyscmd runs shell commands")
    return read("m4 only expands macros")


def patch(call: Call) -> Assessment:
    o = getopt(call.args, "pidDoBFgrVYzi", {"strip", "input", "directory", "output"})
    if o.has("dry-run", "C", "check"):
        return read("patch --dry-run only checks")
    return write("patch edits files")


def _writer(what: str) -> Handler:
    def handler(call: Call) -> Assessment:
        return write(f"{call.name} {what}")

    return handler


def iconv(call: Call) -> Assessment:
    o = getopt(call.args, "ftod", {"from-code", "to-code", "output"})
    hits = [a for a in (write_to("iconv -o", f) for f in o.all("o", "output")) if a]
    return combine(hits) if hits else read("iconv only converts to stdout")


HANDLERS: Final[dict[str, Handler]] = {
    "sed": sed, "gsed": sed, "awk": awk, "gawk": awk, "mawk": awk, "nawk": awk,
    "find": find, "gfind": find, "tee": tee, "vim": editor, "vi": editor, "nvim": editor,
    "nano": editor, "emacs": editor, "ed": editor, "ex": editor, "pico": editor,
    "m4": m4, "patch": patch, "iconv": iconv,
    "split": _writer("writes pieces of a file"), "csplit": _writer("writes pieces of a file"),
    "dos2unix": _writer("rewrites files in place"), "unix2dos": _writer("rewrites files"),
}  # fmt: skip
