"""The hub's processes collect young objects less often than CPython's default.

``serve`` and ``up`` call ``tune_gc_for_serving`` before the hub starts, so the
store's writer process, forked during the start, inherits it. What it buys is
measured by the benchmarks (docs/performance.md), not here.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from towerctl.cli import cli
from towerctl.hub.server import YOUNG_GC_THRESHOLD, freeze_startup_objects, tune_gc_for_serving


@pytest.fixture
def default_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_only_the_young_generation_is_collected_less_often(default_gc: None) -> None:
    tune_gc_for_serving()
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10)
    assert YOUNG_GC_THRESHOLD > 700
    assert gc.isenabled()


@pytest.mark.parametrize(("command", "target"), [("serve", "serve_forever"), ("up", "run_up")])
def test_serve_and_up_tune_it_before_the_hub_starts(
    default_gc: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, target: str
) -> None:
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    seen: list[tuple[int, int, int]] = []

    async def hub_starts(*args: object, **kwargs: object) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(f"towerctl.cli.{command}.{target}", hub_starts)
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        result = CliRunner().invoke(cli, [command, "--db", str(tmp_path / "t.db"), "--port", "0"])
    finally:
        for handler in root.handlers[len(handlers) :]:  # `up` logs to a file: close it
            root.removeHandler(handler)
            handler.close()
    assert result.exit_code == 0, result.output
    assert seen == [(YOUNG_GC_THRESHOLD, 10, 10)]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    try:
        yield
    finally:
        gc.unfreeze()


def test_what_startup_made_leaves_the_collectors_sight(unfrozen: None) -> None:
    gc.unfreeze()
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0


async def test_serve_freezes_once_the_hub_has_started_and_stops_it_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from towerctl.cli.serve import serve_forever
    from towerctl.hub import server

    steps: list[str] = []

    class Stopped(Exception):
        pass

    async def start(self: server.Hub, policy: object = None) -> None:
        steps.append("start")

    async def stop(self: server.Hub) -> None:
        steps.append("stop")

    def freeze() -> None:
        steps.append("freeze")
        raise Stopped

    monkeypatch.setattr(server.Hub, "start", start)
    monkeypatch.setattr(server.Hub, "stop", stop)
    monkeypatch.setattr(server, "freeze_startup_objects", freeze)
    with pytest.raises(Stopped):
        await serve_forever(
            "127.0.0.1", 0, tmp_path / "t.db", tmp_path / "k", None, None, "FULL", announce=False
        )
    assert steps == ["start", "freeze", "stop"]
