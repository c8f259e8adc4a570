"""Shells and language interpreters: the commands that run other code.

``bash -c '…'`` is classified recursively. A script file or ``-m module`` is a
write: its content is not visible, and calling every test run destructive would
make the classifier useless for coding agents (policy can still ask for writes in
production). Code fed through an unseen pipe or a process substitution
(``curl … | sh``, ``bash <(curl …)``), an interactive shell, and inline code that
calls the process/file-deletion APIs are destructive. Other inline code is a write:
it is arbitrary code, so it is never provably read-only.
"""

from __future__ import annotations

import re
from typing import Final

from agent_shim.risk.model import (
    NO_STDIN,
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

_DANGEROUS_CODE: Final = re.compile(
    r"\b(os\.(system|popen|remove|unlink|rmdir|removedirs|kill|killpg|exec\w*|spawn\w*|truncate"
    r"|rename|replace|chmod|chown)|shutil\.(rmtree|move|chown)|subprocess|pty\.spawn|ctypes"
    r"|__import__|rmtree|unlink|rmdir|child_process|execSync|execFileSync|spawnSync|spawn"
    r"|process\.kill|rmSync|rm\s*\(|writeFileSync|truncateSync|FileUtils|File\.delete"
    r"|Process\.kill|shell_exec|passthru|proc_open|popen|system|exec|eval|qx|Runtime\.getRuntime"
    r"|drop\s+(table|database|schema)|truncate\s+table|delete\s+from|dropDatabase|flushall"
    r"|Remove-\w+|Stop-\w+|Restart-Computer|Format-Volume|Clear-Disk|Invoke-Expression|iex)\b",
    re.I,
)
_WRITING_CODE: Final = re.compile(
    r"open\([^)]*['\"][wax+]|write_text|write_bytes|writeFile|\.write\(|requests\.(post|put"
    r"|patch|delete)|urlopen|fetch\(|http\.request|socket|sqlite3|psycopg|boto3|mkdir|touch",
    re.I,
)


def inline_code(lang: str, code: str) -> Assessment:
    """Judge ``-c``/``-e`` code by the APIs it names; never read (it is arbitrary code)."""
    if is_dynamic(code):
        return destructive(f"{lang} code built from a shell expansion ({clip(code, 40)}); "
                           "what runs is not visible")
    if _DANGEROUS_CODE.search(code) or (lang in ("perl", "ruby", "php") and "`" in code):
        return destructive(f"{lang} inline code runs commands or deletes/kills "
                           f"({clip(code, 50)})")
    if _WRITING_CODE.search(code):
        return write(f"{lang} inline code writes files or calls out ({clip(code, 50)})")
    return write(f"{lang} runs inline code ({clip(code, 50)}); not provably read-only")


def _stdin_code(call: Call, lang: str, as_shell: bool) -> Assessment:
    s = call.stdin
    if s.text is not None:
        text: str = Word(s.text) if s.dynamic else s.text
        return call.shell(text, NO_STDIN) if as_shell else inline_code(lang, text)
    if s.source == "pipe":
        return destructive(f"pipes the output of {s.origin} into {lang}; what runs is not "
                           "visible")
    if s.source == "file":
        return write(f"{lang} runs script {s.origin}; its content is not visible")
    return destructive(f"{lang} without a script opens an interactive session; what runs is "
                       "not visible")


def _script(lang: str, script: str) -> Assessment:
    if is_dynamic(script):
        how = "a process substitution" if script.startswith(("<(", ">(")) else "an expansion"
        return destructive(f"{lang} runs a script from {how} ({clip(script, 40)}); its "
                           "content is not visible")
    if script in ("/dev/stdin", "-", "/proc/self/fd/0"):
        return destructive(f"{lang} runs a script from stdin; its content is not visible")
    return write(f"{lang} runs {script}; its content is not visible (assumed write)")


def shell(call: Call) -> Assessment:
    name = call.name
    args = list(call.args)
    if name == "busybox" and args and args[0] not in ("sh", "ash", "hush"):
        return call.argv(args)
    if name == "busybox":
        args = args[1:]
    i, cmd_mode, from_stdin, noexec = 0, False, False, False
    parts: list[Assessment] = []
    while i < len(args):
        a = args[i]
        if a == "--" or a == "-":
            i += 1
            break
        if a in ("--rcfile", "--init-file") and i + 1 < len(args):
            parts.append(_script(name, args[i + 1]))
            i += 2
            continue
        if a.startswith("--"):
            if a in ("--version", "--help"):
                return read(f"{name} {a} only prints")
            i += 1
            continue
        if a[:1] in "-+" and len(a) > 1:
            letters = a[1:]
            cmd_mode |= "c" in letters
            from_stdin |= "s" in letters
            noexec |= "n" in letters and a[0] == "-"
            i += 2 if ("o" in letters or "O" in letters) else 1
            continue
        break
    rest = args[i:]
    if noexec:
        return read(f"{name} -n only checks syntax")
    if cmd_mode:
        if not rest:
            return read(f"{name} -c without a command does nothing")
        return combine([*parts, call.shell(rest[0])])
    if rest and not from_stdin:
        return combine([*parts, _script(name, rest[0])])
    return combine([*parts, _stdin_code(call, name, as_shell=True)])


_PY_MODULE_READ: Final = frozenset({"json.tool", "pydoc", "site", "platform", "sysconfig",
                                    "this", "tabnanny", "pip list", "mypy", "pyflakes",
                                    "flake8", "pylint", "pycodestyle", "pydocstyle"})
_PY_DELEGATE: Final = frozenset({"pip", "pytest", "black", "ruff", "isort", "mypy", "flake8",
                                 "pylint", "uv", "poetry", "tox", "nox", "coverage", "django",
                                 "unittest", "pyright", "pre_commit", "twine", "build"})


def python(call: Call) -> Assessment:
    args = list(call.args)
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-V", "--version", "-VV", "-h", "--help", "-?"):
            return read(f"{call.name} {a} only prints")
        if a == "-" or not a.startswith("-"):
            break
        if a.startswith("--"):
            i += 1
            continue
        j = 1
        while j < len(a):
            ch = a[j]
            value = a[j + 1 :] or (args[i + 1] if i + 1 < len(args) else "")
            consumed = 0 if a[j + 1 :] else 1
            if ch == "c":
                return inline_code("python", value)
            if ch == "m":
                return _py_module(call, value, args[i + 1 + consumed :])
            if ch in "WXQ":
                i += consumed
                break
            j += 1
        i += 1
    rest = args[i:]
    if rest and rest[0].rsplit("/", 1)[-1] == "manage.py":
        return call.argv(["manage.py", *rest[1:]])
    if rest and rest[0] != "-":
        return _script(call.name, rest[0])
    return _stdin_code(call, "python", as_shell=False)


def _py_module(call: Call, module: str, rest: list[str]) -> Assessment:
    if module in _PY_MODULE_READ:
        return read(f"python -m {module} only reads")
    base = module.replace("_", "-")
    if module in _PY_DELEGATE:
        return call.argv([{"pre_commit": "pre-commit", "django": "django-admin",
                           "unittest": "pytest"}.get(module, base), *rest])
    return write(f"python -m {module} runs a module (assumed write)")


_EVAL_FLAGS: Final = {
    "node": ("-e", "--eval", "-p", "--print"), "nodejs": ("-e", "--eval", "-p", "--print"),
    "bun": ("-e", "--eval", "-p", "--print"), "deno": ("eval",),
    "perl": ("-e", "-E"), "ruby": ("-e",), "php": ("-r",), "lua": ("-e",),
    "Rscript": ("-e",), "julia": ("-e", "--eval"), "ts-node": ("-e", "--eval", "-p"),
    "tsx": ("-e", "--eval", "-p"), "osascript": ("-e",), "groovy": ("-e",),
    "pwsh": ("-c", "-Command", "-command"), "powershell": ("-c", "-Command", "-command"),
}  # fmt: skip


def interpreter(call: Call) -> Assessment:
    name = call.name
    args = list(call.args)
    if any(a in ("-v", "--version", "-V", "--help", "-h") for a in args[:1]):
        return read(f"{name} {args[0]} only prints")
    flags = _EVAL_FLAGS.get(name, ())
    codes: list[str] = []
    for k, a in enumerate(args):
        if a == "--":
            break
        if a in flags and k + 1 < len(args):
            codes.append(args[k + 1])
        elif name == "perl" and re.fullmatch(r"-[a-zA-DF-Z]*e", a) and k + 1 < len(args):
            codes.append(args[k + 1])  # perl -ne / -lne / -pie …
    parts = [inline_code(name, c) for c in codes]
    if name == "perl" and any(re.fullmatch(r"-\w*i\w*", a) for a in args):
        parts.append(write("perl -i edits files in place"))
    if codes:
        return combine(parts)
    if name in ("deno", "bun") and args[:1] and args[0] in ("lint", "check", "info", "doc",
                                                             "outdated", "pm"):
        return read(f"{name} {args[0]} only reads")
    script = next((a for a in args if not a.startswith("-")), None)
    if name == "php" and script is not None and script.rsplit("/", 1)[-1] == "artisan":
        return call.argv(["artisan", *args[args.index(script) + 1 :]])
    if script is not None:
        if name in ("deno", "bun") and script in ("test", "install", "add", "remove",
                                                  "update", "compile", "fmt", "task"):
            return write(f"{name} {script} changes the project or runs its code")
        return _script(name, script)
    return _stdin_code(call, name, as_shell=False)


HANDLERS: Final[dict[str, Handler]] = {
    **{n: shell for n in ("bash", "sh", "zsh", "dash", "ksh", "mksh", "ash", "fish", "yash",
                          "busybox", "rbash", "tcsh", "csh")},
    **{n: python for n in ("python", "python3", "python2", "pypy", "pypy3", "py")},
    **{n: interpreter for n in _EVAL_FLAGS},
    "java": lambda c: read("java -version only prints") if c.args[:1] == ("-version",)
    else write("java runs a program (content not visible)"),
    "dotnet-script": lambda c: write("dotnet-script runs a script (content not visible)"),
}  # fmt: skip
OWN_HELP: Final = frozenset(HANDLERS)
