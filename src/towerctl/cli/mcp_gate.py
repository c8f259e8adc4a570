"""``towerctl mcp-gate``: a stdio MCP server that gates another one's tool calls.

The ``mcp`` SDK is imported only when this command runs (it takes ~1 s and
is an optional extra: ``pip install 'towerctl[mcp]'``).
"""

from __future__ import annotations

import asyncio
import os
import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--env", "env", envvar="TOWER_ENV", help="Environment (env TOWER_ENV; default dev).")
@click.option("--agent", envvar="TOWER_AGENT", help="Agent name (env TOWER_AGENT; default mcp-NAME).")
@click.option("--url", envvar="TOWER_URL", help="Hub address (env TOWER_URL).")
@click.option("--token", envvar="TOWER_TOKEN", help="Agent token (env TOWER_TOKEN).")
@click.option("--hub-key", envvar="TOWER_HUB_KEY", help="Hub public key to pin (env TOWER_HUB_KEY).")
@click.option(
    "--name",
    default=None,
    help="Upstream server name in commands and targets (default: the name the upstream reports).",
)
@click.option("--reason", default="", help="Reason attached to every call (shown to the approver).")
@click.option(
    "--connect-timeout",
    type=click.FloatRange(0.1, 60.0),
    default=5.0,
    show_default=True,
    help="Seconds a call waits for the tower connection before it is refused.",
)
@click.argument("upstream", nargs=-1, required=True, type=click.UNPROCESSED)
def mcp_gate(
    env: str | None,
    agent: str | None,
    url: str | None,
    token: str | None,
    hub_key: str | None,
    name: str | None,
    reason: str,
    connect_timeout: float,
    upstream: tuple[str, ...],
) -> None:
    """Serve UPSTREAM's MCP tools on stdio; every tools/call goes through the tower first.

    A refused call comes back to the model as an error result with the reason;
    the upstream never sees it.

    \b
    towerctl mcp-gate --env prod -- npx -y @modelcontextprotocol/server-postgres postgresql://db/app
    """
    try:
        import mcp  # noqa: F401
    except ImportError:
        click.echo("towerctl mcp-gate: the mcp SDK is missing; pip install 'towerctl[mcp]'", err=True)
        sys.exit(2)
    from towerctl.config import load_file, resolve
    from towerctl.integrations.mcp_gate import GateSettings, serve_stdio

    settings = resolve(url=url, token=token, agent=agent, env=env, role="agent", hub_key=hub_key)
    chosen_agent = agent or os.environ.get("TOWER_AGENT") or load_file().get("agent") or None
    cfg = GateSettings(
        url=settings.url,
        token=settings.token,
        env=settings.env,
        agent=chosen_agent and settings.agent,
        name=name,
        hub_key=settings.hub_key,
        connect_timeout=connect_timeout,
        reason=reason,
    )
    sys.exit(asyncio.run(serve_stdio(cfg, upstream)))
