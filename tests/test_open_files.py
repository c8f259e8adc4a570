"""The open-file limit: a hub started with the common soft limit still holds a fleet.

The pure part (what is reported, when to warn) is a table; then ``towerctl
serve`` is started the way many systems start it, with a soft limit far below
its connections, and must still welcome every agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_shim import Shim
from towerctl.hub.open_files import LOW_WATER, RESERVED, UNLIMITED, OpenFiles, raise_open_file_limit

from .test_cli_e2e import start_serve


def room(n: int) -> str:
    return f"room for ~{n - RESERVED} connections"


@pytest.mark.parametrize(
    ("limits", "describe", "warns"),
    [
        ((1024, 1024, 1024), f"limit 1024 (hard 1024): {room(1024)}", True),
        ((1024, 524288, 524288), f"limit 524288 (hard 524288, raised from 1024): {room(524288)}", False),
        ((256, 2**20, UNLIMITED), f"limit {2**20} (hard unlimited, raised from 256): {room(2**20)}", False),
        ((UNLIMITED, UNLIMITED, UNLIMITED), "limit unlimited (hard unlimited)", False),
        ((64, 64, 64), f"limit 64 (hard 64): {room(64)}", True),
        ((10, 10, 10), "limit 10 (hard 10): room for ~0 connections", True),
        ((4096, LOW_WATER + RESERVED, LOW_WATER + RESERVED), None, False),
        ((4096, LOW_WATER + RESERVED - 1, LOW_WATER + RESERVED), None, True),
    ],
)
def test_what_is_reported_and_when_it_warns(
    limits: tuple[int, int, int], describe: str | None, warns: bool
) -> None:
    got = OpenFiles(*limits)
    if describe is not None:
        assert got.describe() == "open-file " + describe
    warning = got.warning()
    assert (warning is not None) == warns
    if warning is not None:
        assert str(got.soft) in warning and "LimitNOFILE" in warning


def _lower_soft_limit(to: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (to, hard))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        _lower_soft_limit(128)
        got = raise_open_file_limit()
        assert got is not None
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got.soft
        assert got.before == 128
        assert got.soft == (hard if hard != resource.RLIM_INFINITY else got.soft) and got.soft > 128
        # Raising again changes nothing and says so.
        again = raise_open_file_limit()
        assert again is not None and again.before == again.soft == got.soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.mark.skipif(sys.platform != "linux", reason="process_max_fds comes from /proc")
async def test_serve_started_with_a_low_soft_limit_welcomes_more_agents_than_it(tmp_path: Path) -> None:
    """Started with a soft limit of 100 descriptors, ``serve`` holds 150 agents
    (without raising its limit it stops accepting near 70), says so on stderr,
    and exports the limit it runs with as ``process_max_fds``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    agents = 150
    if hard != resource.RLIM_INFINITY and hard < agents + 2 * RESERVED + 100:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for this test")
    home = tmp_path / "home"
    proc, url, said = await start_serve(home, preexec_fn=lambda: _lower_soft_limit(100))
    try:
        assert any("raised from 100" in line for line in said), said
        token = (home / "tokens" / "agent.token").read_text().strip()
        async with contextlib.AsyncExitStack() as stack:
            shims = [Shim(url, token, agent=f"bot-{i}", env="dev", connect_timeout=20) for i in range(agents)]
            await asyncio.gather(*(stack.enter_async_context(s) for s in shims))
            assert all(s.connected for s in shims), sum(not s.connected for s in shims)
            http = url.replace("ws://", "http://") + "/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(http, timeout=10).read().decode())
            assert _metric(text, "towerctl_sessions", env="dev", status="active") == agents
            max_fds = _metric(text, "process_max_fds")
            assert max_fds > 100 and (hard == resource.RLIM_INFINITY or max_fds == hard)
            assert _metric(text, "process_open_fds") > agents
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
