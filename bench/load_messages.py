"""The load's messages: the commands its agents run, and their real-protocol text.

Kept apart from the load loop (load_raw.py) because this is the part that must
stay byte-for-byte the real protocol: every message is the real ``encode``
output with the action id, digest and time spliced in, and the digest the real
``tagged_digest`` over the canonical body, checked against the slow path at
start and by tests/test_bench_tools.py against the hub's own validation.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Final

from agent_shim.canonical import ACTION_DIGEST_TAG, canonical_json, tagged_digest
from agent_shim.gate import judge
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import Action, Report, Started, encode

READS = ("kubectl get pods -n payments", "git status", "ls -la /srv", "cat /etc/hostname", "df -h")
ASK = "kubectl delete pod web-{n}"


class Templates:
    """Real-protocol messages, judged once per distinct command, stamped per action.

    Stamping splices the action id, digest and times into text encoded once
    per command (checked against the slow path at start): the load shares two
    cores with the hub, so every microsecond it spends here is one the hub
    does not get (json.dumps + the canonical walk were ~15 % of the load)."""

    def __init__(self, policy: EnvPolicy, env: str) -> None:
        self.policy = policy
        self.env = env
        self._cache: dict[str, tuple[list[str], bytes, str]] = {}
        probe = Action(action_id="probe", kind="shell", command=READS[0])
        body = probe.model_dump(mode="json")
        if tagged_digest(ACTION_DIGEST_TAG, body) != probe.digest():
            raise SystemExit("digest self-check failed")
        self._started = _template(
            encode(Started(action_id=_AID, digest=_DIGEST, started_at=_STAMP_N)), "started_at"
        )
        self._report = _template(
            encode(
                Report(action_id=_AID, digest=_DIGEST, status="succeeded", exit_code=0, finished_at=_STAMP_N)
            ),
            "finished_at",
        )
        self._self_check(READS[0])

    def _entry(self, command: str) -> tuple[list[str], bytes, str]:
        entry = self._cache.get(command)
        if entry is None:
            action = Action(action_id=_AID, kind="shell", command=command)
            ruling = judge(self.policy, self.env, action)  # the real judgement
            msg = json.loads(encode(ruling.propose(0)))
            body = msg["action"]
            # Sorted keys put action_id first: the canonical body is this
            # prefix, the id (hex, nothing to escape), then the rest.
            canon = canonical_json(body)
            head = b'{"action_id":"' + _AID.encode() + b'",'
            if not canon.startswith(head):
                raise SystemExit("canonical body does not start with action_id")
            msg["digest"] = _DIGEST
            msg["proposed_at"] = _STAMP
            entry = (_split(json.dumps(msg, separators=(",", ":"))), canon[len(head) :], msg["verdict"])
            self._cache[command] = entry
        return entry

    def propose(self, command: str, action_id: str, now_ms: int) -> tuple[str, str, str]:
        """(propose JSON, digest, verdict) for a new action running ``command``."""
        parts, rest, verdict = self._entry(command)
        h = hashlib.sha256(ACTION_DIGEST_TAG)
        h.update(b'{"action_id":"' + action_id.encode() + b'",')
        h.update(rest)
        digest = h.hexdigest()
        return _join(parts, action_id, digest, now_ms), digest, verdict

    def started_json(self, action_id: str, digest: str, now_ms: int) -> str:
        return _join(self._started, action_id, digest, now_ms)

    def report_json(self, action_id: str, digest: str, now_ms: int) -> str:
        return _join(self._report, action_id, digest, now_ms)

    def _self_check(self, command: str) -> None:
        """The spliced proposal is the one the slow path builds, digest included."""
        aid = uuid.uuid4().hex
        data, digest, _ = self.propose(command, aid, 1234)
        msg = json.loads(data)
        action = Action(**dict(msg["action"], action_id=aid))
        ruling = judge(self.policy, self.env, action)
        want = json.loads(encode(ruling.propose(1234)))
        if msg != want or digest != action.digest():
            raise SystemExit(f"template self-check failed:\n{msg}\n{want}")


_AID: Final = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
_DIGEST: Final = "d1" * 32
_STAMP: Final = "@@stamp@@"
_STAMP_N: Final = 7_777_777_777_777


def _template(encoded: str, stamp_field: str) -> list[str]:
    msg = json.loads(encoded)
    msg[stamp_field] = _STAMP
    return _split(json.dumps(msg, separators=(",", ":")))


def _split(text: str) -> list[str]:
    """``text`` cut at the action id, digest and time stamp, markers kept as
    single items so that _join can put the values in their place."""
    return [p for p in re.split(f'({_AID}|{_DIGEST}|"{_STAMP}")', text) if p]


def _join(parts: list[str], action_id: str, digest: str, now_ms: int) -> str:
    values = {_AID: action_id, _DIGEST: digest, f'"{_STAMP}"': str(now_ms)}
    return "".join(values.get(p, p) for p in parts)
