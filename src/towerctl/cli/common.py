"""Small pieces every subcommand shares: output, async running, errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
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


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"towerctl: {message}", err=True)
    sys.exit(code)
