"""Vocabulary shared by every part of towerctl.

Plain literals rather than enums so that they serialise as themselves on the wire
and compare cheaply; the ordering helpers live here so that "never lower than"
has exactly one definition.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Kind = Literal["shell", "sql", "k8s", "cloud", "file", "http", "tool"]
Risk = Literal["read", "write", "destructive"]
Verdict = Literal["allow", "ask", "deny"]
#: Where an action is once proposed (the lifecycle adds "proposed" before these;
#: the store, the hub and operators all use this one list).
ActionState = Literal[
    "allowed",
    "denied",
    "pending",
    "approved",
    "expired",
    "running",
    "succeeded",
    "failed",
    "cancelled",
]

KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
RISKS: Final[tuple[Risk, ...]] = get_args(Risk)
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)

_RISK_RANK: Final[dict[str, int]] = {"read": 0, "write": 1, "destructive": 2}
_VERDICT_RANK: Final[dict[str, int]] = {"allow": 0, "ask": 1, "deny": 2}


def risk_rank(risk: Risk) -> int:
    return _RISK_RANK[risk]


def worst_risk(*risks: Risk) -> Risk:
    """The most dangerous of ``risks``; ``read`` when given none."""
    best: Risk = "read"
    for r in risks:
        if _RISK_RANK[r] > _RISK_RANK[best]:
            best = r
    return best


def strictest_verdict(*verdicts: Verdict) -> Verdict:
    """The most restrictive of ``verdicts``; ``allow`` when given none."""
    out: Verdict = "allow"
    for v in verdicts:
        if _VERDICT_RANK[v] > _VERDICT_RANK[out]:
            out = v
    return out
