"""``towerctl up``: the embedded default, hub + SQLite + TUI in one process.

One command for someone who has never run towerctl: the hub binds 127.0.0.1
only (never another address: this mode has no TLS and needs none), keeps its
database in the user data directory, creates its own tokens, writes the URL
file so that ``towerctl pending`` in another shell finds it, and opens the
console in the same event loop (Textual's ``App.run_async``). When the console
exits the hub stops cleanly, which signs the final audit checkpoint.

``--demo`` adds simulated agents (:mod:`towerctl.demo`) and uses a separate
database, ``demo.db`` beside the real one, so that made-up sessions never mix
with real audit records. Both databases accept the same local token files:
a token file written for one is registered (audited) in the other on first
use, instead of being replaced, so switching between ``up`` and ``up --demo``
never breaks the CLI's credentials.

The non-interactive half is :func:`start_embedded`, so that tests can start
and inspect it without a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from agent_shim.policy import PolicyDoc
from towerctl.cli.common import audit_check_option, db_option, fail, loop_factory, loop_name, loop_option
from towerctl.config import (
    DEFAULT_PORT,
    data_dir,
    default_db,
    default_key,
    url_file,
    write_private,
)
from towerctl.hub.open_files import raise_open_file_limit
from towerctl.hub.server import Hub, HubConfig, tune_gc_for_serving
from towerctl.tokens import ensure_local_tokens

if TYPE_CHECKING:
    from towerctl.demo import AgentRecord

HOST: Final = "127.0.0.1"
DEMO_DB_NAME: Final = "demo.db"


def demo_db() -> Path:
    """Where ``up --demo`` keeps its records: beside the real database, never in it."""
    return data_dir() / DEMO_DB_NAME


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether ``host:port`` can be bound now (with SO_REUSEADDR, as the hub binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(slots=True)
class Embedded:
    """A running embedded hub and what the console and the demo need from it."""

    hub: Hub
    #: Kept, not read from the hub: ``Hub.url`` fails once its socket is closed.
    url: str
    db: Path
    key: Path
    tokens: dict[str, str]
    #: Things the user should know, in order: fallback port, new token files, demo db.
    notes: list[str] = field(default_factory=list)
    #: The port asked for, when it was taken and another one was used instead.
    port_taken: int | None = None
    created: list[Path] = field(default_factory=list)
    _stopped: bool = False

    @property
    def admin_token(self) -> str:
        return self.tokens["admin"]

    @property
    def agent_token(self) -> str:
        return self.tokens["agent"]

    async def stop(self) -> None:
        """Stop the hub (the store signs its final checkpoint) and retract the URL file."""
        if self._stopped:
            return
        self._stopped = True
        try:
            await self.hub.stop()
        finally:
            # Only if it still names this hub: another `serve`/`up` may have replaced it.
            with contextlib.suppress(OSError):
                path = url_file()
                if path.read_text(encoding="utf-8").strip() == self.url:
                    path.unlink()


async def start_embedded(
    *,
    port: int = DEFAULT_PORT,
    db: Path | None = None,
    demo: bool = False,
    policy: PolicyDoc | None = None,
    synchronous: str | None = None,
    audit_check_every: float = 0.0,
) -> Embedded:
    """Start the hub on 127.0.0.1 with local tokens and the URL file; the caller must ``stop()`` it.

    ``port`` taken: a free one is used and ``port_taken``/``notes`` say so. The
    database defaults to the user data directory (``demo.db`` there for a demo).
    Demo data is worth less than a real audit trail, so a demo commits with
    ``NORMAL`` durability and the real thing with ``FULL``, as ``serve`` does.
    """
    db_path = db if db is not None else (demo_db() if demo else default_db())
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = default_key(db_path)
    sync = synchronous or ("NORMAL" if demo else "FULL")
    notes: list[str] = []
    created: list[Path] = []
    port_taken: int | None = None
    if port != 0 and not port_is_free(port):
        port_taken, port = port, 0
    config = HubConfig(
        host=HOST,
        port=port,
        db_path=db_path,
        key_path=key_path,
        synchronous=sync,
        writer_process=True,
        audit_check_interval_s=audit_check_every,
    )
    hub = Hub(config)
    try:
        await hub.start(policy)
    except OSError as exc:
        await hub.stop()
        if port == 0 or exc.errno != errno.EADDRINUSE:
            raise
        # Taken between the probe and the bind: fall back all the same.
        port_taken = port
        hub = Hub(dataclasses.replace(config, port=0))
        await hub.start(policy)
    try:
        assert hub.store is not None
        tokens, written = await ensure_local_tokens(hub.store, actor="up")
        created += written
        previous_url = url_file().read_text(encoding="utf-8").strip() if url_file().exists() else ""
        write_private(url_file(), hub.url + "\n")
    except BaseException:
        await hub.stop()
        raise
    if port_taken is not None:
        notes.append(f"port {port_taken} on {HOST} is taken; using port {hub.port} instead")
    for path in created:
        notes.append(f"created {path.stem} token: {path} (mode 0600)")
    if previous_url and previous_url != hub.url:
        notes.append(f"{url_file()} pointed at {previous_url}; it now names this hub")
    return Embedded(
        hub=hub,
        url=hub.url,
        db=db_path,
        key=key_path,
        tokens=tokens,
        notes=notes,
        port_taken=port_taken,
        created=created,
    )


@contextlib.contextmanager
def _exit_on_signals(loop: asyncio.AbstractEventLoop, exit_app: Callable[[], object]) -> Iterator[None]:
    """SIGTERM, SIGHUP (the SSH session dropped) and SIGINT end the console like ``q`` does.

    The terminal is in raw mode while the console runs, so ctrl+c arrives as
    a key, not a signal; these are for ``kill`` and lost terminals, which must
    still stop the hub cleanly and sign the audit log.
    """
    sigs = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, exit_app)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def run_up(
    *,
    port: int,
    db: Path | None,
    theme: str | None,
    demo: bool,
    agents: int,
    seed: int | None = None,
    audit_check_every: float = 0.0,
) -> int:
    """Start everything, run the console until it exits, stop everything; the exit status."""
    from towerctl.demo import demo_policy, run_demo_agents
    from towerctl.tui.app import TowerApp
    from towerctl.tui.themes import ThemeError

    emb = await start_embedded(
        port=port,
        db=db,
        demo=demo,
        policy=demo_policy() if demo else None,
        audit_check_every=audit_check_every,
    )
    stop = asyncio.Event()
    demo_task: asyncio.Task[list[AgentRecord]] | None = None
    records: list[AgentRecord] = []
    try:
        for note in emb.notes:
            click.echo(f"towerctl up: {note}", err=True)
        what = f"demo database {emb.db} (separate from your real one)" if demo else f"database {emb.db}"
        loop = loop_name(asyncio.get_running_loop())
        click.echo(f"towerctl up: hub listening on {emb.url}, {what}, {loop} event loop", err=True)
        try:
            app = TowerApp(emb.url, emb.admin_token, theme=theme, db_path=emb.db, key_path=emb.key)
        except ThemeError as exc:
            click.echo(f"towerctl: {exc}", err=True)
            return 2
        if emb.port_taken is not None:
            # The terminal line scrolls away under the console; say it where it is seen.
            app.notify(emb.notes[0], title="towerctl up", severity="warning", timeout=15, markup=False)
        if demo:
            click.echo(f"towerctl up: starting {agents} simulated agents (they run nothing)", err=True)
            demo_task = asyncio.create_task(
                run_demo_agents(emb.url, emb.agent_token, count=agents, stop=stop, seed=seed)
            )
        with _exit_on_signals(asyncio.get_running_loop(), app.exit):
            result = await app.run_async()
    finally:
        stop.set()
        if demo_task is not None:
            with contextlib.suppress(Exception):
                records = await demo_task
        await emb.stop()
    if records:
        proposed = sum(r.proposed for r in records)
        ran = sum(r.ran for r in records)
        denied = sum(len(r.denied) for r in records)
        click.echo(
            f"towerctl up: demo agents proposed {proposed} actions: {ran} ran (simulated), {denied} denied",
            err=True,
        )
    click.echo(f"towerctl up: hub stopped; audit log signed ({emb.db})", err=True)
    return 0 if result is None else int(result)


@click.command()
@click.option("--demo", is_flag=True, help="Also start simulated agents (separate demo database).")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1; if taken, a free one is used (0 always picks one).",
)
@db_option
@click.option("--theme", default=None, help="tower-dark (default), tower-light, tower-contrast, or your own.")
@click.option(
    "--agents",
    default=6,
    show_default=True,
    type=click.IntRange(1, 200),
    help="How many simulated agents --demo starts.",
)
@loop_option
@audit_check_option
@click.option("--seed", type=int, default=None, hidden=True, help="Replay the demo agents' choices.")
def up(
    demo: bool,
    port: int,
    db: str | None,
    theme: str | None,
    agents: int,
    loop_kind: str,
    audit_check_every: float,
    seed: int | None,
) -> None:
    """Hub on 127.0.0.1 + SQLite + the console, in one command.

    Creates its own tokens on first start (files mode 0600) and writes the hub's
    URL, so `towerctl pending`, `approve` and `exec` in another shell find it.
    With --demo, simulated agents in dev, staging and prod propose reads, writes
    and deletions through the real shim; nothing is executed. q quits and stops
    the hub (the audit log is signed on the way out).
    """
    from towerctl.config import ConfigError, load_file

    try:
        chosen_theme = theme or load_file().get("theme")
    except ConfigError as exc:
        fail(str(exc))
        return
    db_path = Path(db) if db else None
    # Logs go to a file: on the terminal they would scribble over the console.
    log_path = (db_path.parent if db_path else data_dir()) / ("demo.log" if demo else "up.log")
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.basicConfig(
        filename=log_path, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("towerctl").setLevel(logging.INFO)
    limit = raise_open_file_limit()  # the console's terminal is no place for it: the log
    if limit is not None:
        low = limit.warning()
        hub_log = logging.getLogger("towerctl.hub")
        hub_log.log(logging.WARNING if low else logging.INFO, low or limit.describe())
    tune_gc_for_serving()
    try:
        # The hub and the console share this loop, so it is serve's: uvloop where installed.
        with asyncio.Runner(loop_factory=loop_factory(loop_kind)) as runner:
            code = runner.run(
                run_up(
                    port=port,
                    db=db_path,
                    theme=chosen_theme,
                    demo=demo,
                    agents=agents,
                    seed=seed,
                    audit_check_every=audit_check_every,
                )
            )
    except OSError as exc:
        fail(f"cannot start the hub on {HOST}: {exc.strerror or exc}", 2)
        return
    raise SystemExit(code)
