"""The shape of a demo script: steps, episodes and personas, and how their templates are filled.

Kept apart from the scripts themselves (:mod:`towerctl.demo_script`) so that
the scripts read as the story and nothing else. Commands, reasons and outputs
are templates: ``{pod}``, ``{order_id}``... are filled per episode from the
agent's random generator (see :func:`fill`), so the feed does not repeat
itself word for word, yet a fixed seed replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent_shim.types import Kind, Risk


@dataclass(frozen=True, slots=True)
class Step:
    """One action an agent proposes, with the fake outcome it pretends to get."""

    kind: Kind
    command: str
    reason: str
    output: str = ""
    target: str = ""  # empty: the persona's default target
    rollback: str = ""
    dry_run: str = ""
    declared: Risk | None = None
    #: Chance that the simulated run "fails" (exit 1 with ``fail_output``): the feed
    #: should show failures too, not only green.
    fail_rate: float = 0.0
    fail_output: str = "error: simulated failure"


@dataclass(frozen=True, slots=True)
class Episode:
    """A short task: steps run in order; a denial abandons the rest and runs ``replan``."""

    name: str
    weight: int
    steps: tuple[Step, ...]
    replan: tuple[Step, ...] = ()
    #: Repeat the first step back to back past the environment's rate limit: the
    #: runaway loop that ``max_actions_per_minute`` exists to stop.
    burst: bool = False


@dataclass(frozen=True, slots=True)
class Persona:
    agent: str
    env: str
    host: str
    target: str
    episodes: tuple[Episode, ...]


def episode_values(rng: random.Random) -> dict[str, str]:
    """Fresh values for one episode's placeholders (the same within an episode)."""
    rev = rng.randint(38, 60)
    minor = rng.randint(3, 9)
    return {
        "pod": "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)),
        "order_id": str(rng.randint(900_000, 999_999)),
        "ticket": str(rng.randint(1000, 4999)),
        "incident": str(rng.randint(2100, 2199)),
        "rev": str(rev),
        "prev_rev": str(rev - 1),
        "next_rev": str(rev + 1),
        "minor": str(minor),
        "prev": str(minor - 1),
        "sha": f"{rng.getrandbits(28):07x}",
        "replicas": str(rng.choice((6, 8, 10))),
        "tests": str(rng.randint(180, 240)),
        "changes": str(rng.randint(1, 3)),
        "instances": str(rng.randint(4, 12)),
        "cpu": str(rng.randint(35, 92)),
        "orders": f"{rng.randint(1_200_000, 1_900_000):,}",
        "stale": f"{rng.randint(150_000, 200_000):,}",
        "tb": str(rng.randint(2, 9)),
    }


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with its ``{placeholders}`` replaced; ``{{``/``}}`` stand for literal braces."""
    return text.format_map(values)
