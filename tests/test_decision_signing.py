"""Signed, single-use decisions pinned by the shim.

The pure-Python verifier is checked against RFC 8032's vectors and against
``cryptography``; the shim's refusals are checked one by one, and end to end
against a real hub (the refusal lands in the audit log).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from ssl import SSLContext

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_shim import Action, ActionDenied, Shim, ed25519, new_action_id
from agent_shim.protocol import ActionEvent, Decision, DecisionRefused, HubToAgentAdapter, decode
from towerctl.audit.verify import verify_database
from towerctl.config import resolve
from towerctl.hub.server import Hub, HubConfig
from towerctl.tokens import create_token

from .conftest import next_event, wait_for
from .test_control_path import shell

# RFC 8032 §7.1: (secret key, public key, message, signature)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
        "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290"
        "ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ------------------------------------------------------------ the verifier


@pytest.mark.parametrize(("sk", "pk", "msg", "sig"), RFC8032)
def test_rfc8032_vectors(sk: str, pk: str, msg: str, sig: str) -> None:
    # The vector itself is what cryptography computes (guards against a typo here)...
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sk))
    assert raw_public(key).hex() == pk
    assert key.sign(bytes.fromhex(msg)).hex() == sig
    # ...and the pure verifier accepts it, and nothing near it.
    assert ed25519.verify(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig))
    assert not ed25519.verify(bytes.fromhex(pk), bytes.fromhex(msg) + b"x", bytes.fromhex(sig))
    bad = bytearray(bytes.fromhex(sig))
    bad[5] ^= 1
    assert not ed25519.verify(bytes.fromhex(pk), bytes.fromhex(msg), bytes(bad))


def test_verifier_agrees_with_cryptography() -> None:
    for i in range(20):
        key = Ed25519PrivateKey.generate()
        other = Ed25519PrivateKey.generate()
        msg = os.urandom(i * 7)
        sig = key.sign(msg)
        assert ed25519.verify(raw_public(key), msg, sig)
        assert not ed25519.verify(raw_public(other), msg, sig)
        flipped = bytearray(sig)
        flipped[i % 64] ^= 0x80
        assert not ed25519.verify(raw_public(key), msg, bytes(flipped))


def test_verifier_rejects_malformed_input() -> None:
    key = Ed25519PrivateKey.generate()
    pk, msg = raw_public(key), b"hello"
    sig = key.sign(msg)
    assert not ed25519.verify(pk[:31], msg, sig)
    assert not ed25519.verify(pk, msg, sig[:63])
    assert not ed25519.verify(b"\xff" * 32, msg, sig)  # y >= p: not canonical
    # S + L is the same scalar mod L but must be rejected (malleability).
    s = int.from_bytes(sig[32:], "little") + ed25519.L
    if s < 2**256:
        assert not ed25519.verify(pk, msg, sig[:32] + s.to_bytes(32, "little"))


def test_parse_public_key_hex_and_base64() -> None:
    raw = raw_public(Ed25519PrivateKey.generate())
    assert ed25519.parse_public_key(raw.hex()) == raw
    assert ed25519.parse_public_key(base64.b64encode(raw).decode()) == raw
    assert ed25519.parse_public_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ("", "zz" * 32, base64.b64encode(raw[:16]).decode(), "not a key"):
        with pytest.raises(ValueError):
            ed25519.parse_public_key(bad)


# ------------------------------------------------------- shim refusals (unit)

HUB = Ed25519PrivateKey.generate()


def signed(
    action: Action,
    session_id: str,
    *,
    key: Ed25519PrivateKey = HUB,
    expires_in_ms: int = 60_000,
    decision_id: str = "d-1",
    **changes: object,
) -> Decision:
    import time

    fields: dict[str, object] = {
        "decision_id": decision_id,
        "action_id": action.action_id,
        "digest": action.digest(),
        "verdict": "approved",
        "operator": "alice",
        "session_id": session_id,
        "expires_at": time.time_ns() // 1_000_000 + expires_in_ms,
        "key_id": ed25519.key_id(raw_public(key)),
    }
    fields.update(changes)
    d = Decision.model_validate_json(json.dumps(fields))
    return d.model_copy(update={"signature": key.sign(d.signing_bytes()).hex()})


def refusals(shim: Shim) -> list[DecisionRefused]:
    out = []
    for raw in shim._outbox:
        obj = json.loads(raw)
        if obj["type"] == "decision_refused":
            out.append(DecisionRefused.model_validate_json(raw))
    return out


def offline_shim(**kw: object) -> Shim:
    return Shim("ws://127.0.0.1:9", "t", agent="a", env="prod", hub_key=raw_public(HUB).hex(), **kw)  # type: ignore[arg-type]


def test_shim_accepts_a_good_signed_approval_once() -> None:
    shim = offline_shim()
    action = shell("kubectl delete pod web-1")
    approved = shim._start(action, action.digest(), signed(action, shim.session_id))
    assert approved.approved_by == "alice"
    with pytest.raises(ActionDenied, match="already used"):
        shim._start(action, action.digest(), signed(action, shim.session_id))
    assert [r.code for r in refusals(shim)] == ["replayed"]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("forged key", "bad_signature"),
        ("edited after signing", "bad_signature"),
        ("unsigned", "unsigned"),
        ("other session", "wrong_session"),
        ("other digest", "wrong_digest"),
        ("expired", "expired"),
        ("action mutated", "wrong_digest"),
    ],
)
def test_shim_refuses_and_reports(case: str, code: str) -> None:
    shim = offline_shim()
    action = shell("kubectl delete pod web-1")
    digest = action.digest()
    if case == "forged key":
        d = signed(action, shim.session_id, key=Ed25519PrivateKey.generate())
    elif case == "edited after signing":
        d = signed(action, shim.session_id).model_copy(update={"operator": "mallory"})
    elif case == "unsigned":
        d = signed(action, shim.session_id).model_copy(update={"signature": ""})
    elif case == "other session":
        d = signed(action, "s-someone-else")
    elif case == "other digest":
        d = signed(action, shim.session_id, digest="ab" * 32)
    elif case == "expired":
        d = signed(action, shim.session_id, expires_in_ms=-1)
    else:
        d = signed(action, shim.session_id)
        action = action.model_copy(update={"command": "kubectl delete ns prod"})
    with pytest.raises(ActionDenied) as err:
        shim._start(action, digest, d)
    assert err.value.by == "shim"
    assert [r.code for r in refusals(shim)] == [code]
    assert not any(json.loads(m)["type"] == "started" for m in shim._outbox)


def test_a_refused_decision_is_not_marked_used() -> None:
    """A forged copy must not burn the real decision's id."""
    shim = offline_shim()
    action = shell("kubectl delete pod web-1")
    forged = signed(action, shim.session_id, key=Ed25519PrivateKey.generate())
    with pytest.raises(ActionDenied):
        shim._start(action, action.digest(), forged)
    shim._start(action, action.digest(), signed(action, shim.session_id))


def test_hub_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_HUB_KEY", base64.b64encode(raw_public(HUB)).decode())
    shim = Shim("ws://127.0.0.1:9", "t", agent="a", env="prod")
    assert shim.hub_key == raw_public(HUB)
    monkeypatch.setenv("TOWER_HUB_KEY", "garbage")
    with pytest.raises(ValueError):
        Shim("ws://127.0.0.1:9", "t", agent="a", env="prod")


def test_pinned_key_wins_over_the_welcome() -> None:
    from agent_shim.policy import EnvPolicy
    from agent_shim.protocol import Welcome

    shim = offline_shim()
    evil = raw_public(Ed25519PrivateKey.generate())
    shim._on_welcome(
        Welcome(
            protocol=1, session_id=shim.session_id, policy=EnvPolicy(), policy_version=0, hub_key=evil.hex()
        )
    )
    assert shim.hub_key == raw_public(HUB)
    assert "pinned" in shim.last_error


def test_tofu_keeps_the_first_key() -> None:
    from agent_shim.policy import EnvPolicy
    from agent_shim.protocol import Welcome

    shim = Shim("ws://127.0.0.1:9", "t", agent="a", env="prod")
    first, second = raw_public(HUB), raw_public(Ed25519PrivateKey.generate())
    for key in (first, second):
        shim._on_welcome(
            Welcome(
                protocol=1,
                session_id=shim.session_id,
                policy=EnvPolicy(),
                policy_version=0,
                hub_key=key.hex(),
            )
        )
    assert shim.hub_key == first
    assert "changed" in shim.last_error


# ---------------------------------------------------------- against a hub


async def start_hub(tmp_path: Path, **cfg: object) -> tuple[Hub, dict[str, str]]:
    hub = Hub(
        HubConfig(host="127.0.0.1", port=0, db_path=tmp_path / "tower.db", key_path=tmp_path / "k.key", **cfg)  # type: ignore[arg-type]
    )
    await hub.start()
    assert hub.store is not None
    tokens = {
        "agent": await create_token(hub.store, role="agent", name="agent", envs=(), actor="test"),
        "admin": await create_token(hub.store, role="admin", name="alice", envs=(), actor="test"),
    }
    return hub, tokens


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, dict[str, str]]]:
    h, tokens = await start_hub(tmp_path)
    try:
        yield h, tokens
    finally:
        await h.stop()


async def refused_records(hub: Hub, count: int = 1, timeout: float = 10.0) -> list[dict[str, object]]:
    """The hub's decision.refused_by_shim records, once ``count`` exist (the
    shim's report travels asynchronously; this waits on the condition)."""
    assert hub.store is not None
    store = hub.store

    async def poll() -> list[dict[str, object]]:
        while True:
            rows = [r for r in await store.audit_rows(limit=100_000) if r.event == "decision.refused_by_shim"]
            if len(rows) >= count:
                return [json.loads(r.body) for r in rows]
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


def audit_events(db: Path, event: str) -> list[dict[str, object]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT body FROM audit WHERE event = ? ORDER BY seq", (event,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


async def approve_next(
    hub: Hub, token: str, shim_task: asyncio.Task[object], ssl: SSLContext | None = None
) -> None:
    from towerctl.operator import OperatorClient

    async with OperatorClient(hub.url, token, client="t", ssl=ssl) as op:
        if op.pending:  # already in the snapshot
            action_id = next(iter(op.pending))
        else:
            ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
            action_id = ev.action.action.action_id
        await op.decide(action_id, approve=True)
        await asyncio.wait({shim_task}, timeout=10)


async def test_hub_publishes_its_key_and_signs_decisions(
    hub: tuple[Hub, dict[str, str]], tmp_path: Path
) -> None:
    h, tokens = hub
    published = (tmp_path / "k.key.pub").read_text().strip()
    assert published == h.public_key_hex
    assert (tmp_path / "k.key.pub").stat().st_mode & 0o777 == 0o644
    async with Shim(h.url, tokens["agent"], agent="a", env="prod", hub_key=published) as shim:
        task = asyncio.create_task(shim.admit(shell("kubectl delete pod web-1")))
        await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
        approved = task.result()
        d = approved.decision
        assert d is not None and d.signature and d.session_id == shim.session_id
        assert ed25519.verify(bytes.fromhex(published), d.signing_bytes(), bytes.fromhex(d.signature))
        assert d.key_id == ed25519.key_id(bytes.fromhex(published))
        shim.report(approved)


async def test_hub_with_another_key_is_refused_and_audited(
    hub: tuple[Hub, dict[str, str]], tmp_path: Path
) -> None:
    h, tokens = hub
    wrong = raw_public(Ed25519PrivateKey.generate())
    async with Shim(h.url, tokens["agent"], agent="a", env="prod", hub_key=wrong) as shim:
        task = asyncio.create_task(shim.admit(shell("kubectl delete pod web-1")))
        await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
        with pytest.raises(ActionDenied, match="signature"):
            task.result()
        rows = await refused_records(h)
    assert len(rows) == 1 and rows[0]["data"]["code"] == "bad_signature"  # type: ignore[index]


async def test_expired_approval_is_refused_and_audited(tmp_path: Path) -> None:
    h, tokens = await start_hub(tmp_path, decision_ttl_s=0.0)
    try:
        async with Shim(h.url, tokens["agent"], agent="a", env="prod", hub_key=h.public_key_hex) as shim:
            task = asyncio.create_task(shim.admit(shell("kubectl delete pod web-1")))
            await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
            with pytest.raises(ActionDenied, match="expired"):
                task.result()
            await refused_records(h)
    finally:
        await h.stop()
    refused = audit_events(tmp_path / "tower.db", "decision.refused_by_shim")
    assert [r["data"]["code"] for r in refused] == ["expired"]  # type: ignore[index]
    assert verify_database(tmp_path / "tower.db", tmp_path / "k.key").ok


async def audit_records(hub: Hub, event: str, action_id: str) -> list[dict[str, object]]:
    """``event`` records of one action, once there is one (the write is asynchronous)."""
    assert hub.store is not None
    store = hub.store

    async def poll() -> list[dict[str, object]]:
        while True:
            rows = [r for r in await store.audit_rows(limit=100_000) if r.event == event]
            found = [json.loads(r.body) for r in rows if r.action_id == action_id]
            if found:
                return found
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), 10)


async def ran(hub: Hub, action_id: str) -> str:
    """The action's state once its report is recorded."""
    assert hub.store is not None
    store = hub.store

    async def poll() -> str:
        while True:
            row = await store.action(action_id)
            if row is not None and row.state in ("succeeded", "failed"):
                return row.state
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), 10)


async def test_a_used_approval_is_not_sent_again(hub: tuple[Hub, dict[str, str]]) -> None:
    """The same approved action proposed again after it ran: the hub does not
    send its decision a second time (the shim would refuse it, but a shim that
    lost its memory would not); it denies, records and alarms."""
    h, tokens = hub
    async with Shim(h.url, tokens["agent"], agent="a", env="prod", hub_key=h.public_key_hex) as shim:
        action = shell("kubectl delete pod web-1")
        task = asyncio.create_task(shim.admit(action))
        await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
        first = task.result()
        shim.report(first)
        assert await ran(h, action.action_id) == "succeeded"
        with pytest.raises(ActionDenied, match="already used") as denied:
            await asyncio.wait_for(shim.admit(action), 10)
        assert denied.value.by == "hub"
        rows = await audit_records(h, "decision.reuse_refused", action.action_id)
        # It also counts as a strike against the connection (max_strikes closes it).
        await wait_for(lambda: "approval_used" in (shim.last_error or ""), 10)
    assert first.decision is not None
    assert [r["data"] for r in rows] == [
        {
            "decision_id": first.decision.decision_id,
            "state": "succeeded",
            "code": "approval_used",
            "message": "proposed again when it was already succeeded",
        }
    ]
    assert audit_events(h.config.db_path, "decision.refused_by_shim") == []  # it never reached the shim


async def test_a_restarted_shim_reusing_its_ids_cannot_run_an_approval_twice(
    hub: tuple[Hub, dict[str, str]],
) -> None:
    """The replay docs/security.md used to leave open: a new shim process (its
    record of used decisions gone) resumes the session and proposes the same
    action id. Before, the hub answered with the stored, validly signed
    approval, and the new shim would have run the action again."""
    h, tokens = hub
    url, token, key = h.url, tokens["agent"], h.public_key_hex
    action = shell("kubectl delete pod web-1")
    async with Shim(url, token, agent="a", env="prod", hub_key=key, end_session_on_close=False) as first:
        task = asyncio.create_task(first.admit(action))
        await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
        first.report(task.result())
        assert await ran(h, action.action_id) == "succeeded"
    async with Shim(url, token, agent="a", env="prod", hub_key=key, session_id=first.session_id) as again:
        with pytest.raises(ActionDenied, match="already used"):
            await asyncio.wait_for(again.admit(action), 10)
        rows = await audit_records(h, "decision.reuse_refused", action.action_id)
        # A new action with the same command is judged afresh and waits for a human.
        fresh = asyncio.create_task(again.admit(shell("kubectl delete pod web-1")))
        await approve_next(h, tokens["admin"], fresh)  # type: ignore[arg-type]
        again.report(fresh.result())
    assert len(rows) == 1 and rows[0]["actor"] == "hub"
    assert verify_database(h.config.db_path, h.config.key_path).ok


async def test_prod_decision_writes_a_checkpoint(hub: tuple[Hub, dict[str, str]]) -> None:
    h, tokens = hub
    assert h.store is not None
    async with Shim(h.url, tokens["agent"], agent="a", env="prod", hub_key=h.public_key_hex) as shim:
        task = asyncio.create_task(shim.admit(shell("kubectl delete pod web-1")))
        before = len(await h.store.checkpoints())
        await approve_next(h, tokens["admin"], task)  # type: ignore[arg-type]
        shim.report(task.result())  # type: ignore[arg-type]
    cps = await h.store.checkpoints()
    assert len(cps) > before
    decided = [r for r in await h.store.audit_rows(limit=10_000) if r.event == "action.approved"]
    assert decided and cps[-1].seq >= decided[-1].seq


def test_resolve_finds_the_published_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    monkeypatch.delenv("TOWER_HUB_KEY", raising=False)
    monkeypatch.delenv("TOWER_CONFIG", raising=False)
    assert resolve(role="agent").hub_key == ""
    (tmp_path / "hub-key.pub").write_text("ab" * 32 + "\n")
    assert resolve(role="agent").hub_key == "ab" * 32
    monkeypatch.setenv("TOWER_HUB_KEY", "cd" * 32)
    assert resolve(role="agent").hub_key == "cd" * 32


def test_decision_wire_form_roundtrips() -> None:
    action = shell("ls")
    d = signed(action, "s-1", decision_id=f"d-{new_action_id()}")
    again = decode(HubToAgentAdapter, d.model_dump_json())
    assert again == d


async def test_exec_with_a_wrong_pinned_key_is_denied(tmp_path: Path) -> None:
    """`towerctl exec` pins TOWER_HUB_KEY over the published key file: an
    approval from a hub holding another key is refused (exit 126) and audited."""
    from .test_cli_e2e import TOWERCTL, cli_env

    home = tmp_path / "home"
    hub_proc = await asyncio.create_subprocess_exec(
        *TOWERCTL, "serve", "--port", "0",
        env=cli_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert hub_proc.stderr is not None
    url = ""
    while not url:
        line = (await asyncio.wait_for(hub_proc.stderr.readline(), 30)).decode()
        assert line, "serve exited early"
        if "listening on" in line:
            url = line.split("listening on ", 1)[1].split()[0]
    victim = tmp_path / "keep"
    victim.mkdir()
    env = {**cli_env(home), "TOWER_HUB_KEY": raw_public(Ed25519PrivateKey.generate()).hex()}
    try:
        agent = await asyncio.create_subprocess_exec(
            *TOWERCTL, "exec", "--env", "prod", "--", "rm", "-rf", str(victim),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        from towerctl.operator import OperatorClient

        admin = (home / "tokens" / "admin.token").read_text().strip()
        async with OperatorClient(url, admin) as op:
            if op.pending:
                action_id = next(iter(op.pending))
            else:
                ev = await next_event(
                    op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30
                )
                action_id = ev.action.action.action_id
            await op.decide(action_id, approve=True)
        _, err = await asyncio.wait_for(agent.communicate(), 60)
        assert agent.returncode == 126
        assert "signature" in err.decode()
        assert victim.exists()
    finally:
        hub_proc.terminate()
        await asyncio.wait_for(hub_proc.wait(), 30)
    refused = audit_events(home / "tower.db", "decision.refused_by_shim")
    assert [r["data"]["code"] for r in refused] == ["bad_signature"]  # type: ignore[index]


def test_resolve_prefers_the_key_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --db X` once, then `up` (default db): exec must pin up's key."""
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    monkeypatch.delenv("TOWER_HUB_KEY", raising=False)
    monkeypatch.delenv("TOWER_CONFIG", raising=False)
    stale, fresh = tmp_path / "hub-key.pub", tmp_path / "tower.db.signing-key.pub"
    stale.write_text("ab" * 32)
    fresh.write_text("cd" * 32)
    os.utime(stale, (1_000_000, 1_000_000))
    assert resolve(role="agent").hub_key == "cd" * 32
    os.utime(fresh, (500_000, 500_000))
    assert resolve(role="agent").hub_key == "ab" * 32
