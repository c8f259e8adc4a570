"""What a throughput target leaves for the hub to spend, from the run's own figures.

A ratio to echo is a statement about CPU on a shared machine: the load that
drives the hub runs beside it. At the target rate R* (target x echo's rate) the
two cores give ``cores / R*`` of CPU per action to share between the load and
the hub, so the hub may spend at most ``cores / R* - load`` per action, where
``load`` is what the load client measurably spends per action (the cheaper of
its cost against towerctl and against the do-nothing hub, to be generous).
The load is one process, so it also cannot exceed one core: if ``load x R*``
is over 1.0, no hub at all reaches R* with this client. Comparing the budget
with what the do-nothing hub spends (the protocol alone) says whether a target
is reachable on this machine by any hub speaking this protocol; comparing it
with towerctl's serve + writer CPU says how far towerctl is from it.

The budget is necessary, not sufficient: the serve process is one thread, so
at R* it alone needs ``serve x R*`` of one core, and it gets less than a whole
core while the writer and the load share the machine with it (runs where the
budget fitted and the target was still missed had it at ~0.85).

Pure: a function of fleet.json's dictionaries, tested table-driven.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TARGETS: dict[str, float] = {"100": 0.8, "1000": 0.6}


@dataclass(frozen=True)
class Budget:
    agents: str
    target: float
    rate: float  # actions/s the target asks for
    load_us: float  # load client CPU per action
    load_cores: float  # the load alone at that rate (one process: at most 1.0)
    budget_us: float  # CPU per action left for the hub at that rate
    hub_us: float  # towerctl's serve + writer CPU per action, measured
    null_us: float  # the do-nothing hub's CPU per action, measured
    echo_us: float  # the echo server's CPU per round trip, measured
    serve_us: float | None = None  # the serve process alone (runs before 2026-11-29 11:40: unknown)

    @property
    def serve_cores(self) -> float | None:
        """The serve process alone at the target rate, of its one core."""
        return None if self.serve_us is None else self.serve_us * self.rate / 1e6

    @property
    def reachable_by_any_hub(self) -> bool:
        """Even a hub that does nothing but speak the protocol must fit."""
        return self.load_cores <= 1.0 and self.null_us <= self.budget_us


def _per_action_us(cpu_cores: float, rate: float) -> float:
    return cpu_cores / rate * 1e6 if rate else float("inf")


def budgets(out: dict[str, Any]) -> list[Budget]:
    """One Budget per agent count that has a target and all its figures."""
    cores = float(out["machine"]["nproc"])
    result: list[Budget] = []
    for n, target in TARGETS.items():
        echo = out.get("echo", {}).get(n)
        ceiling = out.get("ceiling", {}).get(n)
        thr = out.get("throughput", {}).get("full", {}).get(n)
        if not (echo and ceiling and thr):
            continue
        rate = target * echo["rate"]["median"]
        t_rate, c_rate = thr["rate"]["median"], ceiling["rate"]["median"]
        load_us = min(
            _per_action_us(thr["client_cpu"], t_rate), _per_action_us(ceiling["client_cpu"], c_rate)
        )
        result.append(
            Budget(
                agents=n,
                target=target,
                rate=rate,
                load_us=load_us,
                load_cores=load_us * rate / 1e6,
                budget_us=cores / rate * 1e6 - load_us,
                hub_us=_per_action_us(thr["hub_cpu"], t_rate),
                null_us=_per_action_us(ceiling["server_cpu"], c_rate),
                echo_us=_per_action_us(echo["server_cpu"], echo["rate"]["median"]),
                serve_us=_per_action_us(thr["serve_cpu"], t_rate) if "serve_cpu" in thr else None,
            )
        )
    return result


def budget_rows(out: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows in fleet_bench's five columns."""
    rows: list[tuple[str, str, str, str, str]] = []
    for b in budgets(out):
        verdict = "reachable by a hub" if b.reachable_by_any_hub else "no hub can: see docs"
        used = f"{b.hub_us:.0f} µs used (serve + writer)"
        if b.serve_us is not None and b.serve_cores is not None:
            used = (
                f"{b.hub_us:.0f} µs used (serve {b.serve_us:.0f} + writer {b.hub_us - b.serve_us:.0f}); "
                f"serve alone {b.serve_cores:.2f} of its core"
            )
        rows.append(
            (
                f"hub CPU budget per action at {b.target}x echo ({b.rate:.0f}/s), {b.agents} agents",
                used,
                f"{b.budget_us:.0f} µs left by the load ({b.load_us:.0f} µs, {b.load_cores:.2f} cores); "
                f"null hub {b.null_us:.0f}, echo server {b.echo_us:.0f}",
                f"{b.hub_us / b.budget_us:.2f}x" if b.budget_us > 0 else "—",
                f"≤ 1x ({verdict})",
            )
        )
    return rows
