"""The ``towerctl`` click group (see :mod:`towerctl.cli` for the entry point).

Subcommands are imported only when invoked: ``towerctl exec`` sits in front
of every gated command an agent runs, so it must not pay for textual,
aiosqlite or cryptography.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

import click

#: name -> (module, attribute, one-line help). The help is duplicated here so
#: that ``towerctl --help`` lists commands without importing any of them.
COMMANDS: Final[dict[str, tuple[str, str, str]]] = {
    "up": ("towerctl.cli.up", "up", "Hub + SQLite + TUI in one command (--demo adds simulated agents)."),
    "serve": ("towerctl.cli.serve", "serve", "Run the hub: websocket endpoints, store, audit log."),
    "exec": ("towerctl.cli.exec_cmd", "exec_cmd", "Run one command under supervision."),
    "sessions": ("towerctl.cli.ops", "sessions", "List agent sessions."),
    "pending": ("towerctl.cli.ops", "pending", "List actions waiting for a decision."),
    "approve": ("towerctl.cli.ops", "approve", "Approve a pending action."),
    "deny": ("towerctl.cli.ops", "deny", "Deny a pending action, with a reason."),
    "pause": ("towerctl.cli.ops", "pause", "Pause a session: its next action blocks."),
    "resume": ("towerctl.cli.ops", "resume", "Resume a paused session."),
    "kill": ("towerctl.cli.ops", "kill", "Kill a session: pending and later actions fail."),
    "freeze": ("towerctl.cli.ops", "freeze", "Freeze an environment: pause every session in it."),
    "unfreeze": ("towerctl.cli.ops", "unfreeze", "Unfreeze an environment."),
    "policy": ("towerctl.cli.policy", "policy", "Show, apply and check policies."),
    "audit": ("towerctl.cli.audit", "audit", "Verify, export and inspect the audit log."),
    "token": ("towerctl.cli.token", "token", "Create, list and revoke tokens."),
    "tui": ("towerctl.cli.tui", "tui", "Open the operator console (the TUI) against a running hub."),
    "gate": ("towerctl.cli.gate", "gate", "Wrappers that send kubectl, terraform … through the tower."),
    "hook": ("towerctl.cli.hook", "hook", "Claude Code / Codex hooks: ask the tower before each tool call."),
    "mcp-gate": ("towerctl.cli.mcp_gate", "mcp_gate", "Gate an MCP server: each tool call asks the tower."),
    "shimd": (
        "towerctl.cli.shimd",
        "shimd",
        "The local shim daemon behind gates, exec, hooks (--status, --stop).",
    ),
    "ssh-serve": ("towerctl.cli.ssh_serve", "ssh_serve", "The operator console over SSH, one PTY per login."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        cmd = getattr(module, entry[1])
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="towerctl")
def cli() -> None:
    """towerctl: a control tower for live AI agents.

    Agents propose actions through the shim; policy allows, denies or asks a
    human; everything lands in a tamper-evident audit log.
    """


def main(argv: list[str] | None = None) -> Any:
    from towerctl.config import ConfigError

    try:
        return cli.main(args=argv, prog_name="towerctl", standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"towerctl: config: {exc}", err=True)
        raise SystemExit(2) from None
