"""Applying an environment's policy to one classified action.

Pure and synchronous: the shim calls it before anything runs and the hub calls
it again on every proposal, so both must reach the same verdict from the same
inputs, with no clock, no I/O and no state.

Precedence, in one place:

1. Rules are tried in order; the first rule that matches decides.
2. Otherwise the environment's verdict for the action's risk decides.

A rule matches when its ``kind`` is ``"*"`` or the action's kind, its ``risk``
is unset or the action's risk, and its glob (``fnmatch``, case-sensitive,
``*`` crosses spaces and slashes) matches:

* for a rule that is at least as strict as the risk default (it can only keep
  or tighten the verdict): the whole command **or any** of ``segments``. This
  is what makes ``deny "terraform destroy*"`` catch
  ``cd infra && sudo terraform destroy``.
* for a rule that would loosen the verdict (say ``allow`` for a destructive
  action that defaults to ``ask``): the whole command **and every** segment.
  Otherwise ``allow "git status"`` would allow ``git status; rm -rf /`` by
  matching its first segment, and ``allow "ls*"`` would allow
  ``ls && curl x | sh`` by matching the whole line.

Commands, segments and patterns are compared with whitespace collapsed to
single spaces and stripped, so ``terraform   destroy`` is no way around a rule.
Still, globs are a blunt tool: give loosening rules a ``risk`` filter
(``risk = "read"``) so that the classifier, not the glob, vouches for safety.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final

from agent_shim.types import KINDS, RISKS, Kind, Risk, Verdict, strictest_verdict

if TYPE_CHECKING:
    from agent_shim.policy import EnvPolicy, Rule

_VERDICT_PHRASE: Final[dict[str, str]] = {
    "allow": "are allowed",
    "ask": "need an operator's approval",
    "deny": "are denied",
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one action and everything an operator needs to trust it."""

    verdict: Verdict
    risk: Risk
    reasons: tuple[str, ...]
    rule: Rule | None
    rule_index: int | None
    explanation: str


def normalize_command(command: str) -> str:
    """Collapse whitespace runs to one space and strip, as every match does."""
    return " ".join(command.split())


def risk_default(policy: EnvPolicy, risk: Risk) -> Verdict:
    """The environment's verdict for ``risk`` when no rule matches."""
    if risk == "read":
        return policy.read
    if risk == "write":
        return policy.write
    if risk == "destructive":
        return policy.destructive
    # Reached only through untyped callers; raising beats guessing a verdict.
    raise ValueError(f"unknown risk {risk!r}; expected one of {', '.join(RISKS)}")


def rule_matches(
    rule: Rule,
    kind: Kind,
    risk: Risk,
    command: str,
    segments: Sequence[str],
    default: Verdict,
) -> bool:
    """Whether ``rule`` decides this action (see the module docstring).

    ``command`` and ``segments`` must already be normalised.
    """
    if rule.kind != "*" and rule.kind != kind:
        return False
    if rule.risk is not None and rule.risk != risk:
        return False
    pattern = rule.match  # normalised by the model
    if strictest_verdict(rule.verdict, default) == rule.verdict:
        return fnmatchcase(command, pattern) or any(fnmatchcase(s, pattern) for s in segments)
    return fnmatchcase(command, pattern) and all(fnmatchcase(s, pattern) for s in segments)


def evaluate(
    policy: EnvPolicy,
    env: str,
    kind: Kind,
    command: str,
    risk: Risk,
    reasons: Sequence[str] = (),
    segments: Sequence[str] = (),
) -> Evaluation:
    """Decide ``allow``, ``ask`` or ``deny`` for one action in ``env``.

    ``risk`` is the classifier's (already never below what the agent
    declared); ``segments`` are the simple commands it found inside
    ``command``, wrappers such as ``sudo`` removed. ``rule_index`` is the
    0-based position of the deciding rule in ``policy.rules``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    default = risk_default(policy, risk)
    whole = normalize_command(command)
    parts = tuple(p for p in (normalize_command(s) for s in segments) if p)
    for index, rule in enumerate(policy.rules):
        if rule_matches(rule, kind, risk, whole, parts, default):
            explanation = rule.reason or (
                f"{env}: rule {index + 1} ({rule.kind} {rule.match!r}) says {rule.verdict}"
            )
            return Evaluation(
                verdict=rule.verdict,
                risk=risk,
                reasons=tuple(reasons),
                rule=rule,
                rule_index=index,
                explanation=explanation,
            )
    return Evaluation(
        verdict=default,
        risk=risk,
        reasons=tuple(reasons),
        rule=None,
        rule_index=None,
        explanation=f"{env}: {risk} actions {_VERDICT_PHRASE[default]}",
    )
