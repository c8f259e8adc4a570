"""``towerctl serve``: the hub alone."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
import sys
from pathlib import Path
from typing import IO

import click

from towerctl.cli.common import audit_check_option, db_option, fail, loop_factory, loop_name, loop_option
from towerctl.config import (
    DEFAULT_PORT,
    default_db,
    default_key,
    hub_key_file,
    url_file,
    write_private,
    write_public,
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def bootstrap_tokens(db: Path, key: Path) -> list[Path]:
    """Make the local admin and agent token files valid for this database (files mode 0600).

    Token files another database in the same data directory wrote are
    registered, not replaced, so `serve --db X` never breaks `up`'s tokens.
    """
    from towerctl.store import Store
    from towerctl.tokens import ensure_local_tokens

    store = await Store.open(db, key_path=key)
    try:
        _, written = await ensure_local_tokens(store, actor="serve")
        return written
    finally:
        await store.close()


async def serve_forever(
    host: str,
    port: int,
    db: Path,
    key: Path,
    policy_text: str | None,
    ssl_ctx: ssl.SSLContext | None,
    synchronous: str,
    announce: bool = True,
    webhook: str | None = None,
    webhook_after: float = 60.0,
    writer_process: bool = True,
    audit_check_every: float = 0.0,
) -> None:
    from agent_shim.policy import parse_policy_toml
    from towerctl.hub.server import Hub, HubConfig, freeze_startup_objects

    policy = parse_policy_toml(policy_text) if policy_text is not None else None
    hub = Hub(
        HubConfig(
            host=host,
            port=port,
            db_path=db,
            key_path=key,
            synchronous=synchronous,
            ssl_context=ssl_ctx,
            webhook_url=webhook,
            webhook_after_s=webhook_after,
            writer_process=writer_process,
            audit_check_interval_s=audit_check_every,
        )
    )
    await hub.start(policy)
    # Everything after start() is inside the try: a failure announcing the hub
    # must stop it (its writer would otherwise keep the process alive
    # with SIGTERM handled by a loop that no longer runs).
    try:
        freeze_startup_objects()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if announce:
            write_private(url_file(), hub.url + "\n")
            write_public(hub_key_file(), hub.public_key_hex + "\n")
            where = f"{hub.url} (db {db}, {loop_name(loop)} event loop)"
            click.echo(f"towerctl hub listening on {where}", err=True)
            click.echo(
                f"hub key (pin with TOWER_HUB_KEY): {hub.public_key_hex} in {hub_key_file()}", err=True
            )
        await stop.wait()
    finally:
        await hub.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (0 picks a free one).")
@db_option
@click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False),
    default=None,
    help="Audit signing key file (default: beside the db).",
)
@click.option(
    "--policy", "policy_file", type=click.File("r"), default=None, help="Policy TOML applied at start."
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without TLS.")
@click.option(
    "--sync",
    "synchronous",
    type=click.Choice(["normal", "full"]),
    default="full",
    show_default=True,
    help="SQLite durability: full survives power loss.",
)
@click.option(
    "--writer",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Where SQLite commits run: a forked process beside the event loop, or a thread sharing it.",
)
@loop_option
@click.option("--log-json", is_flag=True, help="Log one JSON object per line on stderr.")
@click.option(
    "--webhook",
    default=None,
    metavar="URL",
    help='POST {"text": …} (Slack-compatible) when an approval waits too long with nobody deciding.',
)
@click.option(
    "--webhook-after",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long an approval may wait before the webhook is called (once per action).",
)
@audit_check_option
def serve(
    host: str,
    port: int,
    db: str | None,
    key: str | None,
    policy_file: IO[str] | None,
    tls_cert: str | None,
    tls_key: str | None,
    insecure: bool,
    synchronous: str,
    writer: str,
    loop_kind: str,
    log_json: bool,
    webhook: str | None,
    webhook_after: float,
    audit_check_every: float,
) -> None:
    """Run the hub: /agent and /operator websockets, GET /healthz and GET /metrics on one port."""
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        fail("--webhook must be an http:// or https:// URL", 2)
    if log_json:
        from towerctl.logjson import configure

        configure()
    if not is_loopback(host) and not tls_cert and not insecure:
        fail(f"refusing to bind {host} without TLS: pass --tls-cert/--tls-key, or --insecure", 2)
    ssl_ctx = None
    if tls_cert:
        if not tls_key:
            fail("--tls-cert needs --tls-key", 2)
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(tls_cert, tls_key)
    db_path = Path(db) if db else default_db()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    key_path = Path(key) if key else default_key(db_path)
    policy_text = policy_file.read() if policy_file is not None else None
    if policy_text is not None:
        from agent_shim.policy import PolicyError, parse_policy_toml

        try:
            parse_policy_toml(policy_text)
        except PolicyError as exc:
            fail(f"policy: {exc}", 2)
    written = asyncio.run(bootstrap_tokens(db_path, key_path))
    for path in written:
        click.echo(f"created {path.stem} token: {path} (mode 0600)", err=True)
    from towerctl.hub.open_files import raise_open_file_limit

    limit = raise_open_file_limit()  # before the hub opens anything
    if limit is not None:
        click.echo(limit.describe(), err=True)
        if (low := limit.warning()) is not None:
            click.echo(low, err=True)
    try:
        from towerctl.hub.server import tune_gc_for_serving

        tune_gc_for_serving()
        with asyncio.Runner(loop_factory=loop_factory(loop_kind)) as runner:
            runner.run(
                serve_forever(
                    host,
                    port,
                    db_path,
                    key_path,
                    policy_text,
                    ssl_ctx,
                    synchronous.upper(),
                    webhook=webhook,
                    webhook_after=webhook_after,
                    writer_process=writer == "process",
                    audit_check_every=audit_check_every,
                )
            )
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2)
    sys.exit(0)
