"""Prometheus metrics for one hub: ``GET /metrics`` on the hub's own port.

Each ``Hub`` owns a ``HubMetrics`` with its own ``CollectorRegistry`` (never
the process-global one, so several hubs in one process, as in tests, do not
mix). Two kinds of metric:

- events, counted as they happen through two hooks the service calls
  (``on_proposed``, ``on_decided``): actions by env, verdict and risk;
  decisions by env and verdict; the decision latency histogram
  (proposed → decided);
- state, read from the hub's registry and store at scrape time: sessions by
  env and status, pending approvals and the oldest one's age, connected
  operators, store write batches; and the process's descriptors, memory and
  CPU (``process_*``, prometheus_client's standard names); how long each
  garbage collection stopped the process (``towerctl_gc_pause_seconds``);
  and whether the hub's own check found its audit log intact
  (``towerctl_audit_intact``, hub/self_check).

Counters start at zero when the hub process starts, as Prometheus expects.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_shim.protocol import ActionInfo
from towerctl.hub.gc_pauses import GcPauses

if TYPE_CHECKING:
    from towerctl.hub.registry import ProposedAction
    from towerctl.hub.self_check import AuditStatus
    from towerctl.hub.service import HubService

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: from a few seconds (an operator at the screen) to prod's timeouts.
LATENCY_BUCKETS: Final = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _StateCollector(Collector):
    """Gauges computed from the hub's working set at scrape time."""

    def __init__(self, service: Callable[[], HubService | None]) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        svc = self._service()
        sessions = GaugeMetricFamily(
            "towerctl_sessions",
            "Agent sessions the hub knows, by environment and status",
            labels=["env", "status"],
        )
        pending = GaugeMetricFamily(
            "towerctl_pending_approvals", "Actions waiting for an operator's decision", labels=["env"]
        )
        oldest = GaugeMetricFamily(
            "towerctl_pending_oldest_age_seconds",
            "How long the oldest pending approval has waited (0 when none waits)",
        )
        operators = GaugeMetricFamily("towerctl_operators_connected", "Operator consoles connected")
        if svc is not None:
            by_status = Tally((s.env, s.status) for s in svc.reg.sessions.values())
            for (env, status), n in sorted(by_status.items()):
                sessions.add_metric([env, status], n)
            waiting = [p.info for p in svc.reg.pending.values()]
            for env, n in sorted(Tally(i.env for i in waiting).items()):
                pending.add_metric([env], n)
            now_ms = time.time_ns() // 1_000_000
            first = min((i.created_at for i in waiting), default=now_ms)
            oldest.add_metric([], max(0.0, (now_ms - first) / 1000))
            operators.add_metric([], len(svc.fanout.operators))
        else:
            oldest.add_metric([], 0.0)
            operators.add_metric([], 0)
        yield sessions
        yield pending
        yield oldest
        yield operators
        if svc is not None:
            yield from _write_stats(svc)
            frames = CounterMetricFamily("towerctl_agent_frames", "Websocket frames received from agents")
            frames.add_metric([], svc.agent_frames)
            messages = CounterMetricFamily(
                "towerctl_agent_messages",
                "Messages received from agents (several a frame: towerctl.lines.v1)",
            )
            messages.add_metric([], svc.agent_messages)
            yield from (frames, messages)


class _AuditCollector(Collector):
    """The hub's own check of its audit log (hub/self_check), for alerting rules."""

    _VALUES: Final = {"intact": 1.0, "broken": 0.0}

    def __init__(self, status: Callable[[], AuditStatus | None]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        if status is None:
            return
        intact = GaugeMetricFamily(
            "towerctl_audit_intact",
            "1: audit log intact and the tables agree with it; 0: broken; -1: unchecked or check failed",
        )
        intact.add_metric([], self._VALUES.get(status.state, -1.0))
        yield intact
        if status.checked_at is not None:
            when = GaugeMetricFamily(
                "towerctl_audit_checked_timestamp_seconds", "When the hub last checked its audit log"
            )
            when.add_metric([], status.checked_at)
            yield when


def _write_stats(svc: HubService) -> Iterable[Metric]:
    stats = getattr(svc.store, "write_stats", None)
    if stats is None:
        return
    batches = CounterMetricFamily("towerctl_store_write_batches", "Store write transactions (batches)")
    batches.add_metric([], stats.batches)
    ops = CounterMetricFamily("towerctl_store_write_operations", "Store write operations, over all batches")
    ops.add_metric([], stats.operations)
    failed = CounterMetricFamily("towerctl_store_write_failed_batches", "Store write batches that failed")
    failed.add_metric([], stats.failed_batches)
    largest = GaugeMetricFamily("towerctl_store_write_largest_batch", "Most operations in one write batch")
    largest.add_metric([], stats.largest_batch)
    checkpoints = CounterMetricFamily(
        "towerctl_store_wal_checkpoints", "WAL copied back into the database while the writer was idle"
    )
    checkpoints.add_metric([], stats.idle_checkpoints)
    yield from (batches, ops, failed, largest, checkpoints)


class HubMetrics:
    """The metrics of one hub; the service calls ``on_proposed`` / ``on_decided``."""

    def __init__(
        self,
        service: Callable[[], HubService | None],
        audit: Callable[[], AuditStatus | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.actions = Counter(
            "towerctl_actions",
            "Actions proposed, by environment, policy verdict (allow, ask, deny) and risk",
            ["env", "verdict", "risk"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "towerctl_decisions",
            "Pending actions decided, by environment and outcome (approved, denied, expired)",
            ["env", "verdict"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "towerctl_decision_latency_seconds",
            "From proposal to decision, for actions that waited for an operator",
            ["env", "verdict"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(service))
        self.registry.register(_AuditCollector(audit))
        # The process's own: open and maximum file descriptors (one per
        # connection: see hub/open_files), resident memory, CPU. Read from
        # /proc at scrape time; exports nothing where there is no /proc.
        ProcessCollector(registry=self.registry)
        #: Installed by the hub while it runs (Hub.start / Hub.stop).
        self.gc_pauses = GcPauses(self.registry)
        self._action_children: dict[tuple[str, str, str], Any] = {}

    def on_proposed(self, info: ActionInfo | ProposedAction) -> None:
        # labels() costs ~10 µs (validation, a lock, a dict): once per action at
        # fleet rates is worth a cache of the children, keyed the same way.
        key = (info.env, info.policy_verdict, info.risk)
        child = self._action_children.get(key)
        if child is None:
            if len(self._action_children) >= 4096:  # envs are operator-chosen: stay bounded
                self._action_children.clear()
            child = self._action_children[key] = self.actions.labels(*key)
        child.inc()

    def on_decided(self, info: ActionInfo, verdict: str, decided_at_ms: int) -> None:
        self.decisions.labels(info.env, verdict).inc()
        self.latency.labels(info.env, verdict).observe(max(0.0, (decided_at_ms - info.created_at) / 1000))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "HubMetrics"]
