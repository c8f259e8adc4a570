"""What the hub's own tables must say, given its audit log.

The log is chained and its checkpoints are signed; the tables the hub acts on
are not. Whoever can write the SQLite file could add an admin token, soften a
policy, forge an approval, thaw a frozen environment or revive a killed
session in the tables without touching a single record, and the hub would
act on it: it loads tokens, policies, freezes and session status from them,
and signs a stored decision when a shim asks for it again. So ``audit
verify`` folds the log's records of those kinds (:class:`LogFacts`) and
compares the tables with them (:func:`disagreements`).

Pure: records in, rows in, findings out. Only what the log fully determines is
compared, and what it holds stays small (tokens, policies, freezes, decisions
and the state of the actions they decided, killed sessions), so a log of
millions of actions costs a set lookup per record. Other actions' states are
not compared: one fact per action would cost memory in proportion to the whole
log, and only a decided action's state changes what the hub will sign.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from towerctl.audit.chain import AuditRow

#: The events whose records say what a table must hold.
_DECISIONS: Final = frozenset({"action.approved", "action.denied", "action.expired"})
_FACT_EVENTS: Final = frozenset(
    {"token.created", "token.revoked", "policy.applied", "env.frozen", "env.unfrozen", "session.killed"}
    | _DECISIONS
)
#: What a decided action may become afterwards; followed only for decided actions.
_AFTER_DECISION: Final = frozenset(
    {"action.running", "action.succeeded", "action.failed", "action.cancelled"}
)
#: Findings listed at most; a table rewritten wholesale is one finding many times over.
MAX_FINDINGS: Final = 20


@dataclass(frozen=True, slots=True)
class TokenFact:
    name: str
    role: str
    envs: tuple[str, ...]
    hash: str
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class DecisionFact:
    action_id: str
    verdict: str
    operator: str
    digest: str


@dataclass(slots=True)
class LogFacts:
    """What the records say the tables hold, folded in log order."""

    tokens: dict[str, TokenFact] = field(default_factory=dict)
    policies: dict[tuple[str, int], object] = field(default_factory=dict)
    frozen: dict[str, bool] = field(default_factory=dict)
    decisions: dict[str, DecisionFact] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    #: The state of each action that has a decision: a decided action whose row
    #: said "approved" again after it ran would have its approval signed again.
    decided: dict[str, str] = field(default_factory=dict)
    #: Records of these kinds whose data could not be read (the chain
    #: reports a tampered record; this is for one that verified but is odd).
    unreadable: list[int] = field(default_factory=list)

    def add(self, row: AuditRow) -> None:
        event = row.event
        if event not in _FACT_EVENTS:
            if event in _AFTER_DECISION and row.action_id in self.decided:
                self.decided[str(row.action_id)] = event.removeprefix("action.")
            return
        if event == "session.killed":
            if isinstance(row.session_id, str):
                self.killed.add(row.session_id)
            return
        try:
            data = json.loads(row.body)["data"]
            self._add(event, row.action_id, data)
        except (ValueError, TypeError, KeyError):
            self.unreadable.append(row.seq)

    def _add(self, event: str, action_id: str | None, data: dict[str, object]) -> None:
        if event == "token.created":
            envs = data["envs"]
            if not isinstance(envs, list):
                raise TypeError("envs")
            self.tokens[str(data["token_id"])] = TokenFact(
                str(data["name"]), str(data["role"]), tuple(str(e) for e in envs), str(data["hash"])
            )
        elif event == "token.revoked":
            token_id = str(data["token_id"])
            known = self.tokens.get(token_id)
            if known is None:
                raise KeyError(token_id)
            self.tokens[token_id] = dataclasses.replace(known, revoked=True)
        elif event == "policy.applied":
            version = data["version"]
            if type(version) is not int:
                raise TypeError("version")
            self.policies[(str(data["env"]), version)] = data["doc"]
        elif event in ("env.frozen", "env.unfrozen"):
            self.frozen[str(data["env"])] = event == "env.frozen"
        else:  # a decision
            verdict = event.removeprefix("action.")
            self.decisions[str(data["decision_id"])] = DecisionFact(
                str(action_id), verdict, str(data["operator"]), str(data["digest"])
            )
            self.decided[str(action_id)] = verdict


@dataclass(frozen=True, slots=True)
class TableRows:
    """The rows compared, as read from the database (any types: it may be tampered with)."""

    tokens: list[tuple[object, ...]]  # token_id, name, role, envs (JSON), hash, revoked_at
    policies: list[tuple[object, ...]]  # env, version, doc (JSON)
    env_state: list[tuple[object, ...]]  # env, frozen
    decisions: list[tuple[object, ...]]  # decision_id, action_id, verdict, operator, digest
    live_sessions: list[tuple[object, ...]]  # session_id, status: of the sessions the log says were killed
    decided_actions: list[tuple[object, ...]]  # action_id, state: of the actions the log has decisions for


def disagreements(facts: LogFacts, rows: TableRows) -> list[str]:
    """Every way the tables differ from the log, most dangerous kinds first."""
    found: list[str] = [f"record {seq}: its data cannot be read" for seq in facts.unreadable]
    found += _tokens(facts, rows.tokens)
    found += _decisions(facts, rows.decisions)
    found += _policies(facts, rows.policies)
    found += _frozen(facts, rows.env_state)
    found += _decided(facts, rows.decided_actions)
    found += [
        f"sessions: {sid} is {status} in the table, but the log says it was killed"
        for sid, status in rows.live_sessions
        if sid in facts.killed and status != "killed"
    ]
    return found[:MAX_FINDINGS]


def _json(text: object) -> object:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _tokens(facts: LogFacts, rows: Iterable[tuple[object, ...]]) -> list[str]:
    out: list[str] = []
    seen: set[object] = set()
    for token_id, name, role, envs, hash_, revoked_at in rows:
        seen.add(token_id)
        want = facts.tokens.get(str(token_id))
        if want is None:
            out.append(f"tokens: {token_id} ({name}, {role}) has no token.created record")
            continue
        env_list = _json(envs)
        got = TokenFact(
            str(name),
            str(role),
            tuple(str(e) for e in env_list) if isinstance(env_list, list) else ("?",),
            str(hash_),
            revoked_at is not None,
        )
        if got != want:
            out.append(f"tokens: {token_id} differs from its records ({_diff(want, got)})")
    out += [
        f"tokens: {tid} has records but no row"
        for tid, fact in facts.tokens.items()
        if tid not in seen and not fact.revoked
    ]
    return out


def _decisions(facts: LogFacts, rows: Iterable[tuple[object, ...]]) -> list[str]:
    out: list[str] = []
    seen: set[object] = set()
    for decision_id, action_id, verdict, operator, digest in rows:
        seen.add(decision_id)
        want = facts.decisions.get(str(decision_id))
        got = DecisionFact(str(action_id), str(verdict), str(operator), str(digest))
        if want is None:
            out.append(f"decisions: {decision_id} ({verdict} of {action_id}) has no record")
        elif got != want:
            out.append(f"decisions: {decision_id} differs from its record ({_diff(want, got)})")
    out += [f"decisions: {did} has a record but no row" for did in facts.decisions if did not in seen]
    return out


def _policies(facts: LogFacts, rows: Iterable[tuple[object, ...]]) -> list[str]:
    out: list[str] = []
    seen: set[tuple[object, object]] = set()
    for env, version, doc in rows:
        seen.add((env, version))
        if not isinstance(version, int):
            out.append(f"policies: {env} has a version that is not a number")
            continue
        key = (str(env), version)
        if key not in facts.policies:
            out.append(f"policies: {env} v{version} has no policy.applied record")
        elif _json(doc) != facts.policies[key]:
            out.append(f"policies: {env} v{version} differs from its policy.applied record")
    out += [
        f"policies: {env} v{ver} has a record but no row"
        for env, ver in facts.policies
        if (env, ver) not in seen
    ]
    return out


def _frozen(facts: LogFacts, rows: Iterable[tuple[object, ...]]) -> list[str]:
    out: list[str] = []
    seen: set[object] = set()
    for env, frozen in rows:
        seen.add(env)
        want = facts.frozen.get(str(env))
        got = frozen == 1
        if want is None and got:
            out.append(f"env_state: {env} is frozen with no env.frozen record")
        elif want is not None and want != got:
            out.append(f"env_state: {env} is {'frozen' if got else 'not frozen'}, the log says the opposite")
    out += [
        f"env_state: {env} is frozen in the log but has no row"
        for env, frozen in facts.frozen.items()
        if frozen and env not in seen
    ]
    return out


def _decided(facts: LogFacts, rows: Iterable[tuple[object, ...]]) -> list[str]:
    out: list[str] = []
    seen: set[object] = set()
    for action_id, state in rows:
        seen.add(action_id)
        want = facts.decided.get(str(action_id))
        if want is not None and state != want:
            out.append(f"actions: {action_id} is {state} in the table, the log says {want}")
    out += [f"actions: {aid} has a decision record but no row" for aid in facts.decided if aid not in seen]
    return out


def _diff(want: TokenFact | DecisionFact, got: TokenFact | DecisionFact) -> str:
    names = [f.name for f in dataclasses.fields(want)]
    parts = [
        f"{name} {getattr(got, name)!r}, recorded {getattr(want, name)!r}"
        for name in names
        if getattr(want, name) != getattr(got, name)
    ]
    return "; ".join(parts)
