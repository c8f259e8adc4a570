"""``towerctl hook``: Claude Code and Codex CLI hooks, and their installation.

Exit codes are the agents' contract, not ours: 0 with a JSON decision on
stdout, or 2 with the reason on stderr, which blocks the tool call. Every
other exit lets the call proceed, so nothing here may fail with 1 on the
PreToolUse path (click's own usage errors also exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from towerctl.integrations.hooks import EXIT_BLOCK, Flavor, HookSettings


def _options(default_agent: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(
            [
                click.option(
                    "--post",
                    is_flag=True,
                    help="PostToolUse: report the outcome (implied by hook_event_name).",
                ),
                click.option(
                    "--timeout",
                    type=float,
                    default=55.0,
                    show_default=True,
                    help="Seconds to decide in; keep it under the agent's hook timeout "
                    "(Claude Code: 60 s), which would let the call proceed.",
                ),
                click.option(
                    "--connect-timeout",
                    type=float,
                    default=5.0,
                    show_default=True,
                    help="Seconds to reach the tower before failing closed.",
                ),
                click.option("--env", "env", envvar="TOWER_ENV", help="Environment (env TOWER_ENV)."),
                click.option("--url", envvar="TOWER_URL", help="Hub address (env TOWER_URL)."),
                click.option("--token", envvar="TOWER_TOKEN", help="Agent token (env TOWER_TOKEN)."),
                click.option(
                    "--agent", default=default_agent, show_default=True, help="Agent name operators see."
                ),
                click.option(
                    "--all-tools",
                    is_flag=True,
                    help="Also send the agent's internal bookkeeping tools (TodoWrite, Task …).",
                ),
            ]
        ):
            fn = opt(fn)
        return fn

    return wrap


def _run(
    flavor: Flavor,
    post: bool,
    timeout: float,
    connect_timeout: float,
    env: str | None,
    url: str | None,
    token: str | None,
    agent: str,
    all_tools: bool,
) -> None:
    from towerctl.integrations import hooks

    try:
        from towerctl.config import resolve

        settings = resolve(url=url, token=token, agent=agent, env=env, role="agent")
    except Exception as exc:
        click.echo(f"towerctl: {flavor.name} hook: bad configuration: {exc}; failing closed", err=True)
        sys.exit(EXIT_BLOCK)
    cfg = HookSettings(
        url=settings.url,
        token=settings.token,
        env=settings.env,
        agent=agent,
        timeout=max(1.0, timeout),
        connect_timeout=max(0.1, connect_timeout),
        all_tools=all_tools,
        hub_key=settings.hub_key,
        ca=os.environ.get("TOWER_CA", ""),
    )
    sys.exit(hooks.run(flavor, cfg, sys.stdin.buffer, sys.stdout, sys.stderr, post=post))


@click.group()
def hook() -> None:
    """Agent hooks: Claude Code and Codex CLI ask the tower before every tool call.

    \b
    towerctl hook install claude-code          # merge into ~/.claude/settings.json
    towerctl hook install codex --print        # show the ~/.codex/hooks.json entries
    """


def _hook_command(name: str, flavor_name: str, doc: str, *, always_post: bool = False) -> None:
    """One ``towerctl hook NAME`` command: the three share their options and _run."""

    @hook.command(name=name, help=doc)
    @_options(flavor_name)
    def command(
        post: bool,
        timeout: float,
        connect_timeout: float,
        env: str | None,
        url: str | None,
        token: str | None,
        agent: str,
        all_tools: bool,
    ) -> None:
        from towerctl.integrations import hooks

        flavor = hooks.claude_code() if flavor_name == "claude-code" else hooks.codex()
        _run(flavor, post or always_post, timeout, connect_timeout, env, url, token, agent, all_tools)


_hook_command(
    "claude-code",
    "claude-code",
    """Claude Code PreToolUse/PostToolUse hook: hook JSON on stdin, decision on stdout.

    Allowed or denied: exit 0 with hookSpecificOutput.permissionDecision.
    Anything that goes wrong (tower down, bad input, deadline): exit 2, which
    blocks the tool call.
    """,
)
_hook_command(
    "claude-code-post",
    "claude-code",
    "Claude Code PostToolUse hook (same as ``claude-code --post``).",
    always_post=True,
)
_hook_command(
    "codex",
    "codex",
    "Codex CLI PreToolUse/PostToolUse hook (Claude Code's format; Bash, apply_patch, MCP).",
)


@hook.command(name="install")
@click.argument("agent", type=click.Choice(["claude-code", "codex"]))
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to merge into (default ~/.claude/settings.json or ~/.codex/hooks.json).",
)
@click.option("--print", "print_only", is_flag=True, help="Print the JSON snippet instead of writing.")
@click.option(
    "--timeout",
    type=int,
    default=55,
    show_default=True,
    help="The hook's decision deadline; the agent's hook timeout is set 5 s above it.",
)
def install_cmd(agent: str, settings_path: Path | None, print_only: bool, timeout: int) -> None:
    """Print or merge the hook settings for AGENT (claude-code or codex).

    Merging keeps every other setting and hook, replaces earlier towerctl
    entries, and copies the old file to FILE.bak-TIMESTAMP first.
    """
    from towerctl.integrations import claude_code, codex
    from towerctl.integrations.hookjson import install_json, towerctl_command

    exe = towerctl_command()
    if agent == "claude-code":
        wanted = claude_code.settings_snippet(exe, timeout)
        default = Path("~/.claude/settings.json")
        is_ours = claude_code.is_ours
    else:
        wanted = codex.hooks_snippet(exe, timeout)
        default = Path("~/.codex/hooks.json")
        is_ours = codex.is_ours
    if print_only:
        click.echo(json.dumps({"hooks": wanted}, indent=2))
        return
    path = (settings_path or default).expanduser()
    try:
        backup = install_json(path, wanted, is_ours)
    except (OSError, ValueError) as exc:
        click.echo(f"towerctl: cannot update {path}: {exc}", err=True)
        sys.exit(1)
    if backup is not None:
        click.echo(f"backed up {path} to {backup}")
    click.echo(f"installed towerctl {agent} hooks in {path}")
