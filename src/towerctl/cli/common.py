"""Small pieces every subcommand shares: output, async running, errors, the event loop."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

_T = TypeVar("_T")

url_option = click.option("--url", envvar="TOWER_URL", help="Hub address, ws://host:port (env TOWER_URL).")
token_option = click.option("--token", envvar="TOWER_TOKEN", help="Bearer token (env TOWER_TOKEN).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="SQLite database (default: the user data directory).",
)
audit_check_option = click.option(
    "--audit-check-every",
    "audit_check_every",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Verify the audit log and the tables against it at start and this often, "
    "in a child process (alert, /healthz, /metrics); 0: never.",
)
loop_option = click.option(
    "--loop",
    "loop_kind",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="Event loop: auto is uvloop when installed, else asyncio's.",
)


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"towerctl: {message}", err=True)
    sys.exit(code)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a hub runs on (``serve``, and ``up`` with its console):
    uvloop where it is installed (a dependency everywhere but Windows), else
    asyncio's own.

    Why: measured with ``bench/hub_probe.py`` (1,000 agents, back to back), the
    serve process spends 5-8 % less CPU per action on uvloop, closed loop and at
    1,000 actions/s alike: its sockets, timers and callbacks are in C. Nothing
    in the hub or the console depends on the loop's kind; ``--loop asyncio`` is
    the fallback if uvloop ever misbehaves on a platform. uvloop is imported
    here, not at the top, so commands that never serve do not pay for it."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            fail("--loop uvloop: uvloop is not installed", 2)
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for the line that says where a hub listens."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
