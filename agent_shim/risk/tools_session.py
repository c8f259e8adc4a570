"""Sessions and schedulers: tmux, screen, script, at/batch.

They run commands later or somewhere the operator does not watch: ``tmux send-keys``
types into a live shell, ``screen -X stuff`` does the same, ``at`` runs what it reads
on stdin at another time. The text they will run is classified like any shell text
(at least a write, because it runs out of sight); attaching to a session or starting
an interactive one is destructive, because nothing shows what will be typed there.
"""

from __future__ import annotations

from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    Word,
    at_least,
    combine,
    destructive,
    read,
    write,
)
from agent_shim.risk.opts import getopt


def script_cmd(call: Call) -> Assessment:
    o = getopt(call.args, "cEIOBTt", {"command", "echo", "log-in", "log-out", "log-io",
                                      "logging-format", "timing"})
    cmds = o.all("c", "command")
    if not cmds:
        return destructive("script starts an interactive shell; not visible")
    return combine([write("script records a session to a file"),
                    *(call.shell(c) for c in cmds)])


def tmux(call: Call) -> Assessment:
    g = getopt(call.args, "LSfT", stop_at_positional=True)
    verb = g.pos[0] if g.pos else "new-session"
    o = getopt(list(g.rest), "tcsnFxyeLSfNbTEp")
    pos = o.pos
    if verb in ("ls", "list-sessions", "list-windows", "list-panes", "has-session", "has",
                "capture-pane", "capturep", "show-options", "show", "display-message",
                "display", "list-keys", "info", "list-clients"):
        return read(f"tmux {verb} only reads")
    if verb in ("kill-server", "kill-session", "kill-window", "kill-pane"):
        return destructive(f"tmux {verb} kills the processes in it")
    if verb in ("send-keys", "send"):
        keys = [p for p in pos if p not in ("Enter", "C-m", "C-c", "Escape", "KPEnter")]
        return at_least(call.shell(" ".join(keys)) if keys else read("no keys"), "write",
                        "tmux send-keys types into a running shell")
    if verb in ("attach", "attach-session", "a", "at"):
        return destructive("tmux attach opens an interactive session; not visible")
    if verb in ("new-session", "new", "new-window", "neww", "split-window", "splitw"):
        if not pos:
            return destructive(f"tmux {verb} starts a shell; what runs is not visible")
        return at_least(call.shell(" ".join(pos)), "write", f"tmux {verb} runs a command")
    return write(f"tmux {verb} changes sessions")


def screen(call: Call) -> Assessment:
    o = getopt(call.args, "SXpcehLTtsl", {"logfile"}, stop_at_positional=True)
    flags = o.flags
    if flags & {"ls", "list", "q", "v", "version"} or any(a in ("-ls", "-list") for a in call.args):
        return read("screen -ls only lists sessions")
    for cmd in o.all("X"):
        verb = cmd.split(None, 1)[0] if cmd.split() else ""
        if verb in ("quit", "kill"):
            return destructive(f"screen -X {verb} kills the session's processes")
        if verb == "stuff":
            typed = " ".join(o.pos) or cmd.partition(" ")[2]
            return at_least(call.shell(typed.replace("\\n", "\n").replace("^M", "\n")), "write",
                            "screen -X stuff types into a running shell")
    if flags & {"r", "x", "R", "D"}:
        return destructive("screen -r/-x attaches to a session; what is typed is not visible")
    words = [*o.pos, *o.rest]
    if not words:
        return destructive("screen starts an interactive shell; what runs is not visible")
    return at_least(call.argv(words), "write", "screen runs a command in a detached session")


def at(call: Call) -> Assessment:
    o = getopt(call.args, "fqtmMuvd")
    if o.has("l") or call.name == "atq":
        return read("at -l only lists jobs")
    if o.has("r", "d") or call.name == "atrm":
        return write("at -r removes queued jobs")
    if o.has("f"):
        return write(f"{call.name} -f schedules a script whose content is not visible")
    s = call.stdin
    if s.text is not None:
        text: str = Word(s.text) if s.dynamic else s.text
        return at_least(call.shell(text), "write", f"{call.name} schedules commands to run later")
    if s.source == "none":
        return destructive(f"{call.name} reads the commands to schedule from the terminal; "
                           "not visible")
    return destructive(f"{call.name} schedules commands from {s.origin or 'stdin'}; not visible")


HANDLERS: Final[dict[str, Handler]] = {
    "tmux": tmux, "screen": screen, "script": script_cmd, "at": at, "batch": at,
}  # fmt: skip
OWN_HELP: Final = frozenset(HANDLERS)
