"""How long the process stops for garbage collection, for ``/metrics``.

Why: a collection stops the event loop, and every agent waiting for an
answer waits with it. The fleet benchmark's worst latencies were the serve
process's collections (18-27 ms, walking the objects of a thousand agent
connections that had just arrived; docs/performance.md), found with a
throwaway hook. This keeps that hook in the hub, so that an SRE looking at a
latency spike can see whether the tower was collecting garbage at the time,
and the benchmark can report it on every run.

The hook times every collection of the process, whichever hub is running:
the collector belongs to the process, not to a hub. A hub installs it when
it starts and removes it when it stops.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram

#: From a young collection of a quiet hub (~0.1 ms) to a full one over a large heap.
BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """``towerctl_gc_pause_seconds{generation}``: one observation per collection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "towerctl_gc_pause_seconds",
            "Garbage collections of the hub's process, by the oldest generation collected"
            " (the event loop is stopped for each)",
            ["generation"],
            buckets=BUCKETS,
            registry=registry,
        )
        # Children made once: labels() costs more than the collection of a quiet hub.
        self._by_generation = [self.histogram.labels(generation=str(g)) for g in range(3)]
        self._started = 0.0

    @property
    def installed(self) -> bool:
        return self._on_collection in gc.callbacks

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._on_collection)

    def remove(self) -> None:
        while self.installed:
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: no allocation worth speaking of, never raises.
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info.get("generation", 2)
        if 0 <= generation <= 2 and self._started:
            self._by_generation[generation].observe(time.perf_counter() - self._started)
