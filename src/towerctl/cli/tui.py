"""``towerctl tui``: the operator console against a running hub."""

from __future__ import annotations

from pathlib import Path

import click

from towerctl.cli.common import fail, token_option, url_option


def _local_database(url: str) -> Path | None:
    """The hub's database when that hub was started from this data directory.

    ``serve``/``up`` write the URL they listen on next to the database; if the
    console connects to exactly that URL, the audit log is readable here.
    """
    from towerctl.config import default_db, url_file

    try:
        local_url = url_file().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    db = default_db()
    return db if local_url == url and db.is_file() else None


@click.command()
@url_option
@token_option
@click.option(
    "--theme",
    default=None,
    help="Colour theme: tower-dark (default), tower-light, tower-contrast, or one from your themes dir.",
)
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The hub's database, when running on its host: the audit view then reads and verifies the log.",
)
def tui(url: str | None, token: str | None, theme: str | None, db: Path | None) -> None:
    """Open the operator console: watch every agent, approve with a keypress, stop anything.

    Keys: 1 fleet, 2 policy, 3 audit, ? help, ctrl+p command palette, q quit.
    """
    from towerctl.config import ConfigError, default_key, load_file, resolve

    try:
        settings = resolve(url=url, token=token, role="admin")
        chosen = theme or load_file().get("theme")
    except ConfigError as exc:
        fail(str(exc))
        return
    if not settings.token:
        fail("no token: set TOWER_TOKEN, pass --token, or run `towerctl serve` once to create one")
    from towerctl.tui.app import run_tui

    if db is None:
        db = _local_database(settings.url)
    key = default_key(db) if db is not None else None
    raise SystemExit(run_tui(settings.url, settings.token, chosen, db_path=db, key_path=key))
