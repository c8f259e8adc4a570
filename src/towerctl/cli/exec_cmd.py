"""``towerctl exec``: run one command under supervision.

Imports only agent_shim (websockets + pydantic): this sits in front of every
gated command, so its start-up time is the agent's latency.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from typing import IO, Final

import click

EXIT_DENIED: Final = 126
_SHELL_CHARS: Final = frozenset(" \t\n|&;<>()$`\\\"'*?[]#~=%{}")


def _as_action_command(argv: tuple[str, ...]) -> tuple[str, list[str]]:
    """The command text that is judged, and the argv that will run exactly it.

    One argument containing shell syntax is a shell command line (run with
    ``sh -c``); otherwise the argv runs directly and its text is ``shlex.join``.
    Either way, what is judged is precisely what runs.
    """
    if len(argv) == 1 and any(c in _SHELL_CHARS for c in argv[0]):
        return argv[0], ["/bin/sh", "-c", argv[0]]
    return shlex.join(argv), list(argv)


async def _run(
    argv: tuple[str, ...],
    url: str,
    token: str,
    agent: str,
    env: str,
    reason: str,
    target: str,
    rollback: str,
    dry_run: str,
    hub_key: str = "",
) -> int:
    from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id
    from towerctl.integrations import runtime
    from towerctl.localshim.shimclient.settings import connect_timeout

    wait_s = connect_timeout()  # TOWER_CONNECT_TIMEOUT, as the daemon's client reads it
    runtime.quiet_shim_log()  # the refusal below says what went wrong, once

    command, run_argv = _as_action_command(argv)
    child: list[asyncio.subprocess.Process] = []

    def on_kill(exc: SessionKilled) -> None:
        for proc in child:
            if proc.returncode is None:
                proc.terminate()

    try:
        shim = Shim(
            url, token, agent=agent, env=env, connect_timeout=wait_s, on_kill=on_kill, hub_key=hub_key or None
        )
    except ValueError as exc:
        click.echo(f"towerctl: denied: bad hub key: {exc}", err=True)
        return EXIT_DENIED
    flushed = False
    try:
        # A one-shot process that never reached the tower would run an allowed
        # command unrecorded (its queued proposal dies with it): fail closed, as
        # the daemon, the gates and the hooks do.
        try:
            await runtime.connect(shim, wait_s)
        except runtime.Unreachable as exc:
            click.echo(f"towerctl: denied: tower unreachable at {url} ({exc}); failing closed", err=True)
            return EXIT_DENIED
        action = Action(
            action_id=new_action_id(),
            kind="shell",
            command=command,
            target=target,
            cwd=os.getcwd(),
            reason=reason,
            rollback=rollback,
            dry_run=dry_run,
        )
        try:
            approved = await shim.admit(action)
        except (ActionDenied, SessionKilled) as exc:
            who = f" by {exc.by}" if exc.by else ""
            click.echo(f"towerctl: denied{who}: {exc.reason}", err=True)
            return EXIT_DENIED
        approved.verify()
        # Re-derive the argv from the approved text: the approved action, not our variable, runs.
        final_command, final_argv = _as_action_command(
            (approved.action.command,)
            if run_argv[:2] == ["/bin/sh", "-c"]
            else tuple(shlex.split(approved.action.command))
        )
        if final_command != command or final_argv != run_argv:
            shim.report(approved, error="refused: approved command differs from the requested one")
            click.echo("towerctl: refused: approved command differs from the requested one", err=True)
            return EXIT_DENIED
        try:
            proc = await asyncio.create_subprocess_exec(*final_argv, cwd=approved.action.cwd or None)
        except OSError as exc:
            approved.set_result(127)
            shim.report(approved, error=f"cannot run: {exc}")
            click.echo(f"towerctl: cannot run {final_argv[0]}: {exc.strerror}", err=True)
            return 127
        child.append(proc)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, proc.send_signal, sig)
        code = await proc.wait()
        approved.set_result(code)
        shim.report(approved)
        flushed = True  # flush closes the shim
        if not await runtime.flush(shim):
            click.echo("towerctl: warning: the outcome could not be reported to the tower", err=True)
        return code if code >= 0 else 128 - code
    finally:
        if not flushed:
            await shim.close()


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--env", "env", envvar="TOWER_ENV", help="Environment (env TOWER_ENV; default dev).")
@click.option("--agent", envvar="TOWER_AGENT", help="Agent name shown to operators (env TOWER_AGENT).")
@click.option("--url", envvar="TOWER_URL", help="Hub address (env TOWER_URL).")
@click.option("--token", envvar="TOWER_TOKEN", help="Agent token (env TOWER_TOKEN).")
@click.option("--reason", default="", help="Why the agent wants to run this (shown to the approver).")
@click.option("--target", default="", help="What it touches: kube context, account, host, path.")
@click.option("--rollback", default="", help="How to undo it.")
@click.option(
    "--dry-run-file", type=click.File("r"), default=None, help="Dry-run output to show the approver."
)
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(
    env: str | None,
    agent: str | None,
    url: str | None,
    token: str | None,
    reason: str,
    target: str,
    rollback: str,
    dry_run_file: IO[str] | None,
    argv: tuple[str, ...],
) -> None:
    """Run ARGV under supervision: exits with its code, or 126 when denied.

    \b
    towerctl exec --env prod -- kubectl delete pod web-1
    towerctl exec --env prod -- 'pg_dump app | gzip > /backups/app.gz'
    """
    from towerctl.config import resolve

    settings = resolve(url=url, token=token, agent=agent, env=env, role="agent")
    if not settings.token:
        click.echo("towerctl: denied: no agent token (set TOWER_TOKEN or pass --token)", err=True)
        sys.exit(EXIT_DENIED)
    dry_run = dry_run_file.read()[:65536] if dry_run_file is not None else ""
    code = asyncio.run(
        _run(
            argv,
            settings.url,
            settings.token,
            settings.agent,
            settings.env,
            reason,
            target,
            rollback,
            dry_run,
            settings.hub_key,
        )
    )
    sys.exit(code)
