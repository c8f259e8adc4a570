"""Action.digest() takes a fast path (no walk for floats); it must equal the
canonical definition every other party uses, for any text an agent can send."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_shim.agent_messages import body_digest, body_text_and_digest
from agent_shim.canonical import ACTION_DIGEST_TAG, tagged_digest
from agent_shim.protocol import Action
from towerctl.store.ops import to_json

_TEXT = st.text(st.characters(codec="utf-8"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    action_id=st.from_regex(r"[A-Za-z0-9_.:-]{1,80}", fullmatch=True),
    kind=st.sampled_from(["shell", "sql", "k8s", "cloud", "file", "http", "tool"]),
    command=st.text(st.characters(codec="utf-8"), min_size=1, max_size=300),
    target=_TEXT,
    cwd=_TEXT,
    reason=_TEXT,
    dry_run=_TEXT,
    declared=st.sampled_from([None, "read", "write", "destructive"]),
)
def test_fast_digest_equals_the_canonical_one(
    action_id: str,
    kind: str,
    command: str,
    target: str,
    cwd: str,
    reason: str,
    dry_run: str,
    declared: str | None,
) -> None:
    a = Action(
        action_id=action_id,
        kind=kind,  # type: ignore[arg-type]
        command=command,
        target=target,
        cwd=cwd,
        reason=reason,
        dry_run=dry_run,
        declared_risk=declared,  # type: ignore[arg-type]
    )
    assert a.digest() == tagged_digest(ACTION_DIGEST_TAG, a.model_dump(mode="json"))
    assert body_digest(a.model_dump(mode="json")) == a.digest()
    # The hub stores the very text it digested: what the writer would have encoded,
    # made from the instance's values without a dump.
    assert body_text_and_digest(a.model_dump(mode="json")) == (to_json(a.model_dump(mode="json")), a.digest())
    assert a.text_and_digest() == (to_json(a.model_dump(mode="json")), a.digest())
    assert a.model_copy(update={"reason": reason + ":"}).text_and_digest()[0] == to_json(
        {**a.model_dump(mode="json"), "reason": reason + ":"}
    )
    # Any change to any field changes the digest.
    assert a.model_copy(update={"command": command + " "}).digest() != a.digest()
