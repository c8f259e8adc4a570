"""Per-environment policy: the models, the TOML file format and the built-ins.

The shim enforces policy and the hub checks it again, and policies travel
over the wire, so the models are strict, frozen pydantic models that refuse
anything they do not know: a typo in a deny rule must be an error, never a rule
that silently matches nothing. Everything here is pure (no I/O, no clock).
This module holds the built-in policies; the models live in
:mod:`agent_shim.policy_models`, the file format in :mod:`agent_shim.policy_toml`,
evaluation in :mod:`agent_shim.policy_eval` and the rate window in
:mod:`agent_shim.ratelimit`, all re-exported so that callers import one module.

A configured environment replaces the built-in one entirely; keys it leaves out
take the model defaults (in :mod:`agent_shim.policy_models`), not the built-in's
values, so that what a file says is all there is to know about that environment.
"""

from __future__ import annotations

from typing import Final

from agent_shim.policy_eval import Evaluation, evaluate
from agent_shim.policy_models import ENV_NAME_RE as ENV_NAME_RE
from agent_shim.policy_models import MAX_APPROVAL_TIMEOUT_S as MAX_APPROVAL_TIMEOUT_S
from agent_shim.policy_models import MAX_ENVIRONMENTS as MAX_ENVIRONMENTS
from agent_shim.policy_models import MAX_RULES as MAX_RULES
from agent_shim.policy_models import MAX_TEXT as MAX_TEXT
from agent_shim.policy_models import EnvPolicy, PolicyDoc, PolicyError, Rule
from agent_shim.policy_toml import dump_policy_toml, format_duration, parse_duration, parse_policy_toml
from agent_shim.ratelimit import RateWindow

__all__ = [
    "STRICTEST",
    "EnvPolicy",
    "Evaluation",
    "PolicyDoc",
    "PolicyError",
    "RateWindow",
    "Rule",
    "default_policies",
    "dump_policy_toml",
    "evaluate",
    "format_duration",
    "parse_duration",
    "parse_policy_toml",
    "policy_for",
]
# ------------------------------------------------------------------ built-ins


def _nocase(text: str) -> str:
    """A case-insensitive fnmatch pattern for ``text`` (agents write SQL in either case)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


_NO_DESTROY = "prod infrastructure is never destroyed by an agent"
_NO_NS_DELETE = "deleting a prod namespace deletes everything in it; never by an agent"
_NO_DROP_DB = "prod databases are never dropped by an agent"

# Programs' own names anchor the terraform and kubectl patterns, so they apply
# to every kind (an agent may file the same command as shell, cloud, k8s or
# tool) without catching unrelated text; the variants cover global flags
# before the subcommand and the other spellings of the same operation.
_PROD_RULES: Final[tuple[Rule, ...]] = (
    Rule(match="terraform destroy*", verdict="deny", reason=_NO_DESTROY),
    Rule(match="terraform -* destroy*", verdict="deny", reason=_NO_DESTROY),
    Rule(match="terraform *apply*-destroy*", verdict="deny", reason=_NO_DESTROY),
    Rule(match="kubectl *delete namespace*", verdict="deny", reason=_NO_NS_DELETE),
    Rule(match="kubectl *delete ns *", verdict="deny", reason=_NO_NS_DELETE),
    Rule(match="kubectl *delete ns/*", verdict="deny", reason=_NO_NS_DELETE),
    # Unanchored, so limited to SQL: "drop database" in a commit message is not one.
    Rule(kind="sql", match=f"*{_nocase('DROP DATABASE')}*", verdict="deny", reason=_NO_DROP_DB),
    # MySQL's synonym for DROP DATABASE; in PostgreSQL it drops every table in the schema.
    Rule(kind="sql", match=f"*{_nocase('DROP SCHEMA')}*", verdict="deny", reason=_NO_DROP_DB),
)

_BUILTIN: Final[dict[str, EnvPolicy]] = {
    # dev: agents should iterate without friction; only deletions wait for a human,
    # and no rate limit, because a fast agent on a laptop is the point.
    "dev": EnvPolicy(read="allow", write="allow", destructive="ask", approval_timeout_s=600, rules=()),
    # staging: as dev, since it exists to be changed, but a runaway loop there still
    # costs shared infrastructure, so 120/min (2/s) pauses it.
    "staging": EnvPolicy(
        read="allow",
        write="allow",
        destructive="ask",
        approval_timeout_s=600,
        max_actions_per_minute=120,
        rules=(),
    ),
    # prod: every change is seen by a human, with a short timeout so nobody approves
    # a stale request; 30/min is far above a careful agent and far below a loop; the
    # rules refuse the operations that caused the outages this tool exists for.
    "prod": EnvPolicy(
        read="allow",
        write="ask",
        destructive="ask",
        approval_timeout_s=300,
        max_actions_per_minute=30,
        rules=_PROD_RULES,
    ),
}

#: For environments nobody configured. An unnamed environment is an operator
#: mistake (a typo in TOWER_ENV, a new cluster), and it may well be production:
#: fail closed. Even reads ask, because "read" is the classifier's judgement and
#: an unknown environment gets no benefit of the doubt; deletions are refused.
STRICTEST: Final[EnvPolicy] = EnvPolicy(
    read="ask",
    write="ask",
    destructive="deny",
    approval_timeout_s=120,
    max_actions_per_minute=10,
    rules=(),
)


def default_policies() -> PolicyDoc:
    """The built-in dev, staging and prod policies (a fresh doc each call)."""
    return PolicyDoc(environments=dict(_BUILTIN))


def policy_for(doc: PolicyDoc | None, env: str) -> EnvPolicy:
    """The policy ``env`` runs under: configured, else built-in, else :data:`STRICTEST`."""
    if doc is not None and env in doc.environments:
        return doc.environments[env]
    return _BUILTIN.get(env, STRICTEST)
