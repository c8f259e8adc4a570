"""``towerctl ssh-serve``: the operator console over SSH."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from towerctl.cli.common import db_option, fail, url_option


def _default_authorized_keys() -> Path:
    from towerctl.config import config_path

    return config_path().parent / "authorized_keys"


def _default_host_key() -> Path:
    from towerctl.config import data_dir

    return data_dir() / "ssh_host_ed25519_key"


async def _run(host: str, port: int, url: str, keys: Path, host_key: Path, db: Path) -> None:
    from towerctl.config import default_key
    from towerctl.sshserve import SSHServe, SSHServeConfig, StoreTokens
    from towerctl.store import Store

    store = await Store.open(db, key_path=default_key(db))
    try:
        tokens = StoreTokens(store)
        await tokens.sweep()
        server = SSHServe(
            SSHServeConfig(hub_url=url, authorized_keys=keys, host_key=host_key, host=host, port=port),
            tokens,
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"towerctl ssh-serve listening on {host}:{server.port} for {url} (keys {keys})", err=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
            tokens.close()
    finally:
        await store.close()


@click.command("ssh-serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=2222, show_default=True, type=int, help="Port (0 picks a free one).")
@url_option
@click.option(
    "--authorized-keys",
    "authorized_keys",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='authorized_keys file; each key needs tower-operator="NAME" and may set '
    'tower-role="viewer|approver|admin" (default viewer). Default: beside config.toml.',
)
@click.option(
    "--host-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SSH host key (generated, mode 0600, if missing). Default: the data directory.",
)
@db_option
def ssh_serve(
    host: str, port: int, url: str | None, authorized_keys: Path | None, host_key: Path | None, db: str | None
) -> None:
    """Serve the operator console to each SSH login, in its own PTY.

    Run it on the hub's host: for each login it mints a token named after the
    operator (from the key's options) in the hub's database, so every decision
    is audited under that name, and revokes it at logout.
    """
    from towerctl.config import ConfigError, default_db, resolve

    try:
        import asyncssh  # noqa: F401
    except ImportError:
        fail("ssh-serve needs asyncssh: pip install 'towerctl[ssh]'", 2)
    try:
        settings = resolve(url=url, role="admin")
    except ConfigError as exc:
        fail(str(exc))
        return
    keys = authorized_keys or _default_authorized_keys()
    if not keys.is_file():
        fail(f"no authorized keys file {keys}: create it (see docs/integrations.md#ssh)", 2)
    db_path = Path(db) if db else default_db()
    if not db_path.is_file():
        fail(f"no hub database at {db_path}: run ssh-serve on the hub's host, or pass --db", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        asyncio.run(_run(host, port, settings.url, keys, host_key or _default_host_key(), db_path))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2)
