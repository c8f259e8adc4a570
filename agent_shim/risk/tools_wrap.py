"""Wrappers that run another command: sudo, env, nice, timeout, xargs, watch, eval…

The classifier sees through each of them to the command they wrap and judges
that (``sudo rm`` is ``rm``), so a prefix can never launder a command. Wrappers
that take a shell string (``watch``, ``eval``, ``su -c``, ``flock -c``) hand it to the
shell classifier; ones that add arguments the text does not show (``xargs``,
``parallel``) pass a marker word that handlers treat as "could be any option".
Environment assignments that make programs run others (``LD_PRELOAD``,
``GIT_SSH_COMMAND``, ``PAGER``…) are destructive unless the value is harmless.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Final

from agent_shim.risk.model import (
    NO_STDIN,
    Assessment,
    Call,
    Handler,
    Word,
    at_least,
    clip,
    combine,
    destructive,
    is_dynamic,
    read,
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.tools_net import safe_ssh_command
from agent_shim.risk.verbs import scan

_PROGRAM_VARS: Final = frozenset({
    "LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "BASH_ENV", "ENV",
    "PROMPT_COMMAND", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_EXTERNAL_DIFF", "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR", "GIT_PAGER", "PAGER", "EDITOR", "VISUAL", "MANPAGER", "SYSTEMD_PAGER",
    "PERL5OPT", "PERL5LIB", "PYTHONSTARTUP", "PYTHONPATH", "NODE_OPTIONS", "RUBYOPT",
    "GIT_ASKPASS", "SSH_ASKPASS", "SUDO_ASKPASS", "GIT_PROXY_COMMAND", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR", "IFS",
    "SHELLOPTS", "BASHOPTS", "PS4", "LESSOPEN", "LESSCLOSE", "KUBECTL_EXTERNAL_DIFF",
    "TF_CLI_ARGS", "TF_CLI_ARGS_apply", "TF_CLI_ARGS_destroy", "PSQLRC", "MYSQL_HISTFILE",
    "PGSERVICEFILE", "NPM_CONFIG_SCRIPT_SHELL", "npm_config_script_shell",
})  # fmt: skip
_HARMLESS_VALUES: Final = frozenset({"", "cat", "less", "more", "less -r", "less -fr",
                                     "less -frx", "less -frsx", "head", "tail", "true", "vi",
                                     "vim", "nano", "emacs", "code --wait", "delta"})
_CONFIG_COUNT: Final = re.compile(r"^GIT_CONFIG_(KEY|VALUE)_\d+$")


def assignment(word: str) -> Assessment | None:
    """``NAME=value``: None when harmless, else why it can make a command run something else."""
    name, _, value = word.partition("=")
    name = name.rstrip("+").split("[", 1)[0]
    if name == "PATH":
        return write(f"PATH={clip(value, 40)} may make later commands run other programs")
    if name.startswith("TF_CLI_ARGS"):
        return destructive(f"{name} adds hidden options ({clip(value, 40)}) to terraform")
    if name not in _PROGRAM_VARS and not _CONFIG_COUNT.match(name):
        return None
    if not is_dynamic(word):
        v = value.strip().strip("'\"")
        if v.lower() in _HARMLESS_VALUES:
            return None
        if name in ("GIT_SSH_COMMAND", "GIT_SSH") and safe_ssh_command(v):
            return None
        if name in ("PYTHONPATH", "LD_LIBRARY_PATH") and not v.startswith(("/tmp", "/dev/shm")):
            return write(f"{name}={clip(value, 40)} changes which code is loaded")
    return destructive(f"{name}={clip(value, 40)} makes commands run another program")


def _wrapped(call: Call, what: str, words: Sequence[str], floor: str | None = None,
             extra: Sequence[Assessment] = ()) -> Assessment:
    if not words:
        return combine([*extra, read(f"{what} without a command")]) if extra else read(
            f"{what} without a command does nothing")
    inner = call.argv(words)
    if floor:
        inner = at_least(inner, "write", floor)
    return combine([*extra, inner])


def sudo(call: Call) -> Assessment:
    o = getopt(call.args, "ugpCDrtTUhR", {"user", "group", "prompt", "chdir", "role", "type",
                                          "other-user", "close-from", "host",
                                          "command-timeout"}, stop_at_positional=True)
    words = [*o.pos, *o.rest]
    if o.has("l", "list", "v", "validate", "k", "K", "reset-timestamp", "remove-timestamp",
             "V", "version") and not words:
        return read("sudo -l/-v/-k only checks or resets credentials")
    if o.has("e", "edit") or call.name == "sudoedit":
        return write("sudoedit edits files as root")
    if o.has("i", "login", "s", "shell"):
        if not words:
            return destructive("sudo -i/-s opens a root shell; what runs is not visible")
        text = " ".join(words)
        return call.shell(Word(text) if any(map(is_dynamic, words)) else text)
    return _wrapped(call, "sudo", words)


def su(call: Call) -> Assessment:
    o = getopt(call.args, "cgGsw", {"command", "group", "supp-group", "shell",
                                   "whitelist-environment", "session-command"})
    cmds = o.all("c", "command", "session-command")
    if not cmds:
        return destructive(f"{call.name} opens a shell as another user; not visible")
    return combine(call.shell(c) for c in cmds)


def runuser(call: Call) -> Assessment:
    o = getopt(call.args, "ugGcs", {"user", "group", "command", "shell"}, stop_at_positional=True)
    if o.all("c", "command"):
        return combine(call.shell(c) for c in o.all("c", "command"))
    return _wrapped(call, "runuser", [*o.pos[1:], *o.rest] if not o.has("u", "user") else
                    [*o.pos, *o.rest])


def env(call: Call) -> Assessment:
    args = list(call.args)
    extra: list[Assessment] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-u", "--unset", "-C", "--chdir") and i + 1 < len(args):
            i += 2
            continue
        if a in ("-S", "--split-string") and i + 1 < len(args):
            return combine([*extra, call.shell(args[i + 1] + " " + " ".join(args[i + 2 :]))])
        if a.startswith(("-S", "--split-string=")):
            s = a.split("=", 1)[1] if a.startswith("--") else a[2:]
            return combine([*extra, call.shell(s + " " + " ".join(args[i + 1 :]))])
        if a == "--":
            i += 1
            break
        if a.startswith("-") and len(a) > 1:
            i += 1
            continue
        if "=" in a and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", a):
            hit = assignment(a)
            if hit:
                extra.append(hit)
            i += 1
            continue
        break
    if i >= len(args):
        return combine([*extra, read("env only prints the environment")])
    return _wrapped(call, "env", args[i:], extra=extra)


def _skip(call: Call, short: str = "", longs: Sequence[str] = (), positional: int = 0,
          what: str = "") -> Assessment:
    """Drop the wrapper's options and ``positional`` leading operands, classify the rest."""
    o = getopt(call.args, short, set(longs), stop_at_positional=True)
    words = [*o.pos, *o.rest]
    if o.dashdash and not o.pos:
        words = list(o.rest)
    return _wrapped(call, what or call.name, words[positional:])


def nice(call: Call) -> Assessment:
    args = list(call.args)
    if args and re.fullmatch(r"-\d+", args[0]):
        args = args[1:]
    return _skip(call.with_args(call.name, args), "n", ("adjustment",))


def timeout(call: Call) -> Assessment:
    return _skip(call, "sk", ("signal", "kill-after"), positional=1)


def xargs(call: Call) -> Assessment:
    o = getopt(call.args, "aEILnPsd", {"arg-file", "eof", "replace", "max-lines",
                                       "max-args", "max-procs", "max-chars", "delimiter",
                                       "process-slot-var"},
               optional_short="iel", stop_at_positional=True)
    words = [*o.pos, *o.rest]
    if not words:
        return read("xargs without a command only echoes its input")
    inner = call.argv([*words, Word("<args from stdin>", splittable=True)], NO_STDIN)
    return inner


def parallel(call: Call) -> Assessment:
    args = list(call.args)
    if ":::" in args:
        args = args[: args.index(":::")]
    o = getopt(args, "jSaIk", {"jobs", "sshlogin", "arg-file", "joblog", "results", "delay",
                               "timeout", "retries", "colsep", "sshloginfile"},
               stop_at_positional=True)
    words = [*o.pos, *o.rest]
    if not words:
        return destructive("parallel runs each input line as a command; not visible")
    text = " ".join(words) + " <args>"
    return call.shell(Word(text) if any(map(is_dynamic, words)) else text)


def watch(call: Call) -> Assessment:
    o = getopt(call.args, "nq", {"interval", "differences"}, stop_at_positional=True)
    words = [*o.pos, *o.rest]
    if o.has("x", "exec"):
        return _wrapped(call, "watch -x", words)
    if not words:
        return read("watch without a command")
    text = " ".join(words)
    return call.shell(Word(text) if any(map(is_dynamic, words)) else text)


def eval_(call: Call) -> Assessment:
    if not call.args:
        return read("eval without arguments does nothing")
    text = " ".join(call.args)
    if any(map(is_dynamic, call.args)):
        return destructive(f"eval of an expansion ({clip(text, 40)}); what runs is not visible")
    return call.shell(text)


def source(call: Call) -> Assessment:
    if not call.args:
        return read(f"{call.name} without a file")
    f = call.args[0]
    if is_dynamic(f) or f in ("/dev/stdin", "-", "/proc/self/fd/0"):
        return destructive(f"{call.name} {clip(f, 40)} runs shell code that is not visible")
    return write(f"{call.name} {f} runs a script in the current shell; content not visible")


def trap(call: Call) -> Assessment:
    if not call.args or call.args[0] in ("-l", "-p", "-", "--"):
        return read("trap only lists or resets handlers")
    return call.shell(call.args[0])


def alias(call: Call) -> Assessment:
    bodies = [a.partition("=")[2] for a in call.args if "=" in a]
    return combine(call.shell(b) for b in bodies) if bodies else read("alias only lists")


def exec_(call: Call) -> Assessment:
    return _skip(call, "a", ())


def command(call: Call) -> Assessment:
    if any(a in ("-v", "-V") for a in call.args):
        return read("command -v only looks a command up")
    return _skip(call)


def flock(call: Call) -> Assessment:
    o = getopt(call.args, "wEc", {"timeout", "conflict-exit-code", "command"},
               stop_at_positional=True)
    if o.all("c", "command"):
        return combine(call.shell(c) for c in o.all("c", "command"))
    return _wrapped(call, "flock", [*o.pos[1:], *o.rest])


_PREFIX_SKIP: Final = {"aws-vault": 2, "direnv": 2, "chamber": 2, "doppler": 1, "op": 1,
                       "infisical": 1, "dotenv": 1, "bundle": 1, "poetry": 1, "pipenv": 1,
                       "pdm": 1, "hatch": 1, "rye": 1, "with-contenv": 0}


def runner_prefix(call: Call) -> Assessment:
    """aws-vault exec / doppler run / poetry run / bundle exec: set up, then run a command."""
    args = list(call.args)
    pos = [a for a in args if not a.startswith("-")]
    skip = _PREFIX_SKIP.get(call.name, 0)
    if skip and (not pos or pos[0] not in ("run", "exec")):
        return scan(call.name, pos, "the environment or project")
    if "--" in args:
        return _wrapped(call, call.name, args[args.index("--") + 1 :])
    if len(pos) <= skip:
        return read(f"{call.name} without a command")
    return _wrapped(call, call.name, args[args.index(pos[skip]) :])


def _simple_wrap(short: str = "", longs: Sequence[str] = (), positional: int = 0) -> Handler:
    def handler(call: Call) -> Assessment:
        return _skip(call, short, longs, positional)

    return handler


def _basename(call: Call) -> Assessment:
    return call.argv([posixpath.basename(call.args[0]), *call.args[1:]]) if call.args else read(
        "builtin without a command")


HANDLERS: Final[dict[str, Handler]] = {
    "sudo": sudo, "sudoedit": sudo, "doas": _simple_wrap("uC"), "su": su, "runuser": runuser,
    "env": env, "nice": nice, "ionice": _simple_wrap("cnpPu", ("class", "classdata")),
    "nohup": _simple_wrap(), "timeout": timeout, "gtimeout": timeout, "time": _simple_wrap(
        "fo", ("format", "output")), "stdbuf": _simple_wrap("ioe", ("input", "output", "error")),
    "chrt": _simple_wrap("T", ("sched-runtime",), positional=1),
    "taskset": _simple_wrap("", (), positional=1), "setsid": _simple_wrap(),
    "unbuffer": _simple_wrap(), "exec": exec_, "command": command, "builtin": _basename,
    "xargs": xargs, "parallel": parallel, "watch": watch, "eval": eval_, "source": source,
    ".": source, "trap": trap, "alias": alias, "flock": flock,
    "strace": _simple_wrap("eopsuESP"), "ltrace": _simple_wrap("eopsuESn"),
    "chroot": _simple_wrap("", ("userspec", "groups"), positional=1),
    "nsenter": _simple_wrap("tSGwr", ("target", "setuid", "setgid", "wd", "root")),
    "unshare": _simple_wrap("", ("map-user", "map-group", "propagation", "setgroups")),
    "systemd-run": _simple_wrap("upEM", ("unit", "property", "description", "slice", "setenv",
                                         "uid", "gid", "working-directory", "on-calendar")),
    "firejail": _simple_wrap(), "proxychains": _simple_wrap("f"),
    "proxychains4": _simple_wrap("f"), "torsocks": _simple_wrap(), "caffeinate": _simple_wrap(
        "t"), "numactl": _simple_wrap("NmCcip", ("cpunodebind", "membind", "physcpubind",
                                                 "interleave", "preferred")),
    "cgexec": _simple_wrap("g"), "catchsegv": _simple_wrap(), "valgrind": _simple_wrap(),
    "aws-vault": runner_prefix, "doppler": runner_prefix, "op": runner_prefix,
    "infisical": runner_prefix, "direnv": runner_prefix, "dotenv": runner_prefix,
    "chamber": runner_prefix, "with-contenv": runner_prefix, "bundle": runner_prefix,
    "pipenv": runner_prefix, "hatch": runner_prefix, "rye": runner_prefix,
    "poetry": runner_prefix, "pdm": runner_prefix,
}  # fmt: skip
OWN_HELP: Final = frozenset(HANDLERS)
