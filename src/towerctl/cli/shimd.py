"""``towerctl shimd``: run, query or stop the local shim daemon.

The gate wrappers, ``towerctl exec`` and the hooks start the daemon by
themselves when they need it; this command is for running it in the
foreground (under systemd, or to watch its log), and for ``--status`` and
``--stop``.
"""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.option(
    "--socket", "socket_path", default=None, help="Unix socket (default: in the private runtime dir)."
)
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="Exit after this many seconds without a request (env TOWER_SHIMD_IDLE; default 600).",
)
@click.option("--status", is_flag=True, help="Print the running daemon's sessions as JSON.")
@click.option("--stop", is_flag=True, help="Stop the running daemon (its tower sessions end).")
def shimd(socket_path: str | None, idle_timeout: float | None, status: bool, stop: bool) -> None:
    """The per-user local shim daemon behind the shell gates, exec and hooks.

    \b
    Holds one tower session per (hub, token, env, agent) for the gate
    wrappers and `towerctl exec`, and one per Claude Code / Codex session
    for the hooks; they ask it over a unix socket in a private 0700 directory.
    """
    from towerctl.localshim import daemon

    path = socket_path or daemon.default_socket()
    if status or stop:
        reply = daemon.request(path, "stop" if stop else "status")
        if reply is None:
            click.echo("towerctl shimd: no daemon is running", err=True)
            sys.exit(1)
        click.echo(json.dumps(reply, indent=2, sort_keys=True))
        return
    sys.exit(daemon.run(path, idle_timeout if idle_timeout is not None else daemon.idle_default()))
