"""``towerctl gate``: install shell gates and run one gated invocation.

The wrappers call :mod:`towerctl.integrations.gate_wrapper` directly rather
than this click command: it sits in front of every ``kubectl get``, and
skipping click and the command registry is measurably cheaper (see
docs/integrations.md). ``gate run`` is the same code for humans and scripts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

_MODE = click.Choice(["exec", "wait"])


@click.group()
def gate() -> None:
    """Shell gates: wrappers that send kubectl, terraform, aws … through the tower.

    \b
    towerctl gate install --dir ~/.towerctl/gates kubectl terraform aws helm
    export PATH=~/.towerctl/gates:$PATH      # in the agent's environment
    """


@gate.command()
@click.option(
    "--dir",
    "gate_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the wrappers; put it first on the agent's PATH.",
)
@click.option(
    "--mode",
    type=_MODE,
    default="exec",
    show_default=True,
    help="exec: become the real tool (exit code not reported); wait: run it and report.",
)
@click.option("--force", is_flag=True, help="Replace files in DIR that are not towerctl wrappers.")
@click.argument("tools", nargs=-1, required=True)
def install(gate_dir: Path, mode: str, force: bool, tools: tuple[str, ...]) -> None:
    """Write one wrapper per TOOL into DIR.

    Each wrapper proposes the invocation to the tower and then runs the real
    TOOL found on PATH after DIR. The wrappers bake in this Python
    interpreter's absolute path.
    """
    from towerctl.integrations.gate_wrapper import GateError, find_real
    from towerctl.integrations.gate_wrapper import install as do_install

    try:
        written = do_install(gate_dir, list(tools), mode="exec" if mode == "exec" else "wait", force=force)
    except GateError as exc:
        click.echo(f"towerctl: {exc}", err=True)
        sys.exit(1)
    where = written[0].parent if written else gate_dir
    for path in written:
        real = find_real(path.name, str(where), os.environ.get("PATH", os.defpath)).real
        note = f"-> {real}" if real else "(no real binary on PATH yet)"
        click.echo(f"{path}  {note}")
    click.echo(f"\nPut the gates first on the agent's PATH:\n  export PATH={where}:$PATH")


@gate.command()
@click.option(
    "--dir",
    "gate_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory the wrappers were installed into.",
)
def uninstall(gate_dir: Path) -> None:
    """Remove the towerctl wrappers from DIR (other files are left alone)."""
    from towerctl.integrations.gate_wrapper import uninstall as do_uninstall

    for path in do_uninstall(gate_dir):
        click.echo(f"removed {path}")


@gate.command(name="list")
@click.option("--dir", "gate_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def list_cmd(gate_dir: Path) -> None:
    """List the tools gated in DIR."""
    from towerctl.integrations.gate_wrapper import installed

    for name in installed(gate_dir):
        click.echo(name)


@gate.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--gate-dir", default="", help="Gate directory to drop from PATH before the lookup.")
@click.option("--mode", type=_MODE, default="exec", show_default=True)
@click.option("--env", "env", envvar="TOWER_ENV", help="Environment (env TOWER_ENV; default dev).")
@click.option("--agent", envvar="TOWER_AGENT", help="Agent name (env TOWER_AGENT; default USER-gate).")
@click.option("--url", envvar="TOWER_URL", help="Hub address (env TOWER_URL).")
@click.option("--token", envvar="TOWER_TOKEN", help="Agent token (env TOWER_TOKEN).")
@click.option(
    "--connect-timeout",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds to reach the tower before refusing.",
)
@click.argument("tool")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    gate_dir: str,
    mode: str,
    env: str | None,
    agent: str | None,
    url: str | None,
    token: str | None,
    connect_timeout: float,
    tool: str,
    args: tuple[str, ...],
) -> None:
    """Gate one invocation: TOOL -- ARGS… (what the wrappers run).

    Exits with the tool's code, 126 with the reason on stderr when denied,
    127 when TOOL is not on PATH.
    """
    from towerctl.integrations.gate_wrapper import GateError
    from towerctl.integrations.gate_wrapper import run as do_run

    try:
        code = do_run(
            tool,
            list(args),
            gate_dir=gate_dir,
            mode="exec" if mode == "exec" else "wait",
            url=url,
            token=token,
            agent=agent,
            env_name=env,
            connect_timeout=connect_timeout,
        )
    except GateError as exc:
        click.echo(f"towerctl gate: {exc}", err=True)
        code = 126
    sys.exit(code)
