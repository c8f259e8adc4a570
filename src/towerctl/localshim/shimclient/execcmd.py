"""``towerctl exec`` through the local shim daemon, before click is imported."""

from __future__ import annotations

import os
import sys

from .connect import converse
from .runner import EXIT_DENIED, join, run_and_report
from .settings import connect_timeout, resolve
from .wire import PROTOCOL, Refused, say

#: ``towerctl exec`` options (the click command's), by flag.
EXEC_OPTIONS = {
    "--env": "env",
    "--agent": "agent",
    "--url": "url",
    "--token": "token",
    "--reason": "reason",
    "--target": "target",
    "--rollback": "rollback",
    "--dry-run-file": "dry_run_file",
}
#: Mirror of towerctl.cli.exec_cmd._SHELL_CHARS (a test keeps them equal).
SHELL_CHARS = frozenset(" \t\n|&;<>()$`\\\"'*?[]#~=%{}")


def parse_exec(args: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """``[OPTIONS] [--] ARGV…`` as the click command parses it, or None for
    anything else (``--help``, an unknown option, no ARGV): click then answers."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        flag, eq, value = arg.partition("=")
        if flag in EXEC_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            opts[EXEC_OPTIONS[flag]] = value
            i += 1
            continue
        if arg.startswith("-"):
            return None
        break
    argv = args[i:]
    return (opts, argv) if argv else None


def exec_command(argv: list[str]) -> tuple[str, list[str], str]:
    """The command text judged, the argv run, and the shape linking them
    (mirror of ``towerctl.cli.exec_cmd._as_action_command``)."""
    if len(argv) == 1 and any(c in SHELL_CHARS for c in argv[0]):
        return argv[0], ["/bin/sh", "-c", argv[0]], "sh"
    return join(argv), list(argv), "argv"


def exec_main(args: list[str]) -> int | None:
    """``towerctl exec`` through the daemon; None when click should handle ``args``."""
    parsed = parse_exec(args)
    if parsed is None:
        return None
    opts, argv = parsed
    prefix = "towerctl"
    dry_run = ""
    path = opts.get("dry_run_file")
    if path is not None:
        try:
            if path == "-":
                dry_run = sys.stdin.read(65536)
            else:
                with open(path, encoding="utf-8") as fh:
                    dry_run = fh.read(65536)
        except (OSError, UnicodeDecodeError):
            return None  # click reports the bad file its own way
    try:
        settings = resolve(
            url=opts.get("url"), token=opts.get("token"), agent=opts.get("agent"), env=opts.get("env")
        )
    except Refused as exc:
        say(prefix, str(exc))
        return 2
    if not settings["token"]:
        say(prefix, "denied: no agent token (set TOWER_TOKEN or pass --token)")
        return EXIT_DENIED
    command, run_argv, shape = exec_command(argv)
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    request: dict[str, object] = {
        "v": PROTOCOL,
        "op": "admit",
        "mode": "wait",
        **settings,
        "connect_timeout": connect_timeout(),
        "kind": "shell",
        "command": command,
        "argv": run_argv,
        "shape": shape,
        "target": opts.get("target", ""),
        "cwd": cwd,
        "reason": opts.get("reason", ""),
        "rollback": opts.get("rollback", ""),
        "dry_run": dry_run,
    }
    try:
        conn, verdict = converse(request, prefix)
    except Refused as exc:
        say(prefix, f"denied: {exc}; failing closed")
        return EXIT_DENIED
    except OSError as exc:
        say(prefix, f"denied: the local shim daemon failed ({exc}); failing closed")
        return EXIT_DENIED
    except KeyboardInterrupt:
        say(prefix, "interrupted before it ran")
        return 130
    try:
        if verdict.get("verdict") != "allow":
            say(prefix, str(verdict.get("message") or "denied"))
            return EXIT_DENIED
        return run_and_report(conn, run_argv, os.environ, prefix, forward_sigint=True)
    finally:
        conn.close()
