"""``towerctl_gc_pause_seconds``: every collection of the hub's process, timed.

The collector is driven directly (``gc.collect(generation)``), so each case
knows exactly which observations to expect; the hub's end is checked over
HTTP, as a scraper sees it.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from towerctl.hub.gc_pauses import GcPauses

from .conftest import Tower, make_tower
from .test_metrics import scrape


def _count(registry: CollectorRegistry, generation: int) -> float:
    value = registry.get_sample_value("towerctl_gc_pause_seconds_count", {"generation": str(generation)})
    return value or 0.0


@pytest.mark.parametrize("generation", [0, 1, 2])
def test_each_collection_is_one_observation_under_its_generation(generation: int) -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    try:
        before = [_count(registry, g) for g in range(3)]
        gc.collect(generation)
        after = [_count(registry, g) for g in range(3)]
    finally:
        pauses.remove()
    # Allocation may trigger a young collection of its own in between; never fewer.
    assert after[generation] >= before[generation] + 1
    assert all(a >= b for a, b in zip(after, before, strict=True))
    total = registry.get_sample_value("towerctl_gc_pause_seconds_sum", {"generation": str(generation)})
    assert total is not None and total > 0


def test_installed_once_and_removed_cleanly() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    pauses.install()
    try:
        assert gc.callbacks.count(pauses._on_collection) == 1
        gc.collect(2)
    finally:
        pauses.remove()
    assert not pauses.installed
    seen = _count(registry, 2)
    assert seen >= 1  # (a collection the interpreter started itself may add one)
    gc.collect(2)
    assert _count(registry, 2) == seen  # removed: no longer observed


async def test_a_running_hub_exports_its_process_collections(tower: Tower) -> None:
    assert tower.hub.metrics.gc_pauses.installed
    before = (await scrape(tower.hub)).value("towerctl_gc_pause_seconds_count", generation="2") or 0
    gc.collect()
    after = await scrape(tower.hub)
    assert (after.value("towerctl_gc_pause_seconds_count", generation="2") or 0) >= before + 1
    assert (after.value("towerctl_gc_pause_seconds_bucket", generation="2", le="+Inf") or 0) >= before + 1


async def test_a_stopped_hub_leaves_no_hook_behind(tmp_path: Path) -> None:
    t = await make_tower(tmp_path)
    hook = t.hub.metrics.gc_pauses
    assert hook.installed
    await t.hub.stop()
    assert not hook.installed
    assert hook._on_collection not in gc.callbacks
