"""Risk classification: what is the worst an action can do?

``classify(kind, command, declared=…)`` returns an :class:`Assessment` (``read``,
``write`` or ``destructive`` plus human-readable reasons), never lower than what the
agent declared. The contract (DESIGN.md, action lifecycle step 2): judge by the
worst thing the command can do; where the classifier cannot see what will run
(a pipe into a shell, ``eval``, a substitution in command position, an option
that runs another program, content that is not shown) it assumes destructive;
read-only means provably read-only.

``Assessment.segments`` (outside equality and repr) carries the simple commands or
SQL statements found inside the action, which ``agent_shim.gate`` hands to the
policy evaluator so that glob rules see ``terraform destroy`` inside
``cd infra && sudo terraform destroy``.

Pure by construction: no I/O, no environment, no filesystem lookups, standard
library only; results are cached in a bounded LRU because agents repeat
themselves.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from agent_shim.risk.kinds import classify_file, classify_http, classify_tool
from agent_shim.risk.model import Assessment, destructive, wordset
from agent_shim.risk.segments import shell_segments, sql_segments
from agent_shim.risk.shell import KNOWN_COMMANDS, classify_shell, classify_shell_parsed
from agent_shim.risk.sql import classify_sql
from agent_shim.types import RISKS, Kind, Risk, risk_rank

__all__ = ["Assessment", "classify"]

_CACHE_LIMIT: Final = 4096  # longer texts are classified but never cached
_KUBECTL_VERBS: Final = wordset("""get describe logs delete apply create exec scale rollout
drain cordon uncordon patch edit label annotate top port-forward run expose set replace taint cp
attach debug explain diff auth config wait events api-resources cluster-info kustomize autoscale
certificate proxy""")
_TERRAFORM_VERBS: Final = wordset("""apply destroy plan init import state taint untaint refresh
output show validate workspace fmt providers force-unlock""")


def classify(kind: Kind, command: str, *, declared: Risk | None = None) -> Assessment:
    """Classify one proposed action; never lower than ``declared``."""
    if not isinstance(command, str):
        return destructive("command is not text; cannot be classified")
    if len(command) <= _CACHE_LIMIT:
        return _cached(kind, command, declared)
    return _classify(kind, command, declared)


@lru_cache(maxsize=2048)
def _cached(kind: str, command: str, declared: str | None) -> Assessment:
    return _classify(kind, command, declared)


def _classify(kind: str, command: str, declared: str | None) -> Assessment:
    result = _by_kind(kind, command)
    if declared is None:
        return result
    if declared not in RISKS:
        reasons = (f"agent declared an unknown risk {declared!r}", *result.reasons)
        return Assessment("destructive", reasons, result.segments)
    floor = next(r for r in RISKS if r == declared)
    if risk_rank(floor) > risk_rank(result.risk):
        return Assessment(floor, (f"agent declared {floor}", *result.reasons), result.segments)
    return result


def _shell(command: str, implied: str = "") -> Assessment:
    """Classify a shell line and attach its segments, parsing it once."""
    result, script = classify_shell_parsed(command)
    extra = (f"{implied} {command}",) if implied else ()
    segs = shell_segments(script, extra) if script is not None else extra
    return Assessment(result.risk, result.reasons, segs)


def _sql_shell(text: str) -> Assessment:
    return classify_shell(text, 1)


def _by_kind(kind: str, command: str) -> Assessment:
    if kind == "shell":
        return _shell(command)
    if kind in ("k8s", "cloud"):
        return _cli_kind(kind, command)
    if kind == "sql":
        found = classify_sql(command, shell=_sql_shell)
        return Assessment(found.risk, found.reasons, sql_segments(command))
    if kind == "file":
        return classify_file(command)
    if kind == "http":
        return classify_http(command)
    if kind == "tool":
        return classify_tool(command, classify_shell, lambda t: classify_sql(t, shell=_sql_shell))
    return destructive(f"unknown action kind {kind!r}; assumed destructive")


def _implied_tool(kind: str, command: str) -> str:
    """``kubectl``/``terraform`` when a k8s/cloud action starts with that tool's subcommand."""
    first = command.split(None, 1)[0] if command.split() else ""
    if kind == "k8s" and first in _KUBECTL_VERBS:
        return "kubectl"
    if kind == "cloud" and first in _TERRAFORM_VERBS:
        return "terraform"
    return ""


def _cli_kind(kind: str, command: str) -> Assessment:
    """k8s/cloud actions are shell lines; a bare ``delete ns prod`` is read as kubectl.

    When the first word is both a shell command and a subcommand of the kind's main
    tool (``exec``, ``cp``, ``diff``), both readings are classified and the worse one
    wins, so leaving out ``kubectl`` cannot help.
    """
    tool = _implied_tool(kind, command)
    result = _shell(command, tool)
    if not tool:
        return result
    first = command.split(None, 1)[0]
    other = classify_shell(f"{tool} {command}")
    if first in KNOWN_COMMANDS and risk_rank(other.risk) < risk_rank(result.risk):
        return result
    return Assessment(other.risk, other.reasons, result.segments)
