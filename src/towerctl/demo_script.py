"""What the demo agents do: six personas and the episodes they loop over.

Pure data, kept apart from :mod:`towerctl.demo` (which runs it) so that the
scripts can be read, and changed, as the story a newcomer sees: agents that
mostly read, change things now and then with a reason, a rollback plan and a
dry run, and occasionally want to delete something. Every command is chosen so
that the real classifier puts it where the story needs it (a test checks the
mix); commands that the classifier rates lower than an agent would (a bulk
``DELETE ... WHERE``) carry ``declared="destructive"``, as a careful agent would.

Commands are templates: ``{pod}``, ``{order_id}``... are filled per episode
from the agent's random generator (see :func:`fill`), so the feed does not
repeat itself word for word, yet a fixed seed replays exactly.

The story is told in three modules, re-exported here: the shape of a script
(:mod:`towerctl.demo_episodes`), the production agents
(:mod:`towerctl.demo_prod_agents`) and the others
(:mod:`towerctl.demo_nonprod_agents`).
"""

from __future__ import annotations

from typing import Final

from towerctl.demo_episodes import Episode, Persona, Step, episode_values, fill
from towerctl.demo_nonprod_agents import COST_OPTIMIZER, INFRA_AGENT, REFACTOR_AGENT, TF_PLAN
from towerctl.demo_prod_agents import (
    DB_MIGRATOR,
    DEPLOY_BOT,
    HELM_DIFF,
    ONCALL_ASSISTANT,
    PODS_OUT,
    ROLLOUT_OUT,
)

__all__ = [
    "COST_OPTIMIZER",
    "DB_MIGRATOR",
    "DEPLOY_BOT",
    "HELM_DIFF",
    "INFRA_AGENT",
    "ONCALL_ASSISTANT",
    "PERSONAS",
    "PODS_OUT",
    "REFACTOR_AGENT",
    "ROLLOUT_OUT",
    "TF_PLAN",
    "Episode",
    "Persona",
    "Step",
    "episode_values",
    "fill",
    "persona",
]

PERSONAS: Final[tuple[Persona, ...]] = (
    DEPLOY_BOT,
    REFACTOR_AGENT,
    INFRA_AGENT,
    ONCALL_ASSISTANT,
    DB_MIGRATOR,
    COST_OPTIMIZER,
)


def persona(index: int) -> Persona:
    """The ``index``-th agent: the first three cover prod, dev and staging; later ones repeat, renamed."""
    base = PERSONAS[index % len(PERSONAS)]
    lap = index // len(PERSONAS)
    if lap == 0:
        return base
    return Persona(f"{base.agent}-{lap + 1}", base.env, f"{base.host}-{lap + 1}", base.target, base.episodes)
