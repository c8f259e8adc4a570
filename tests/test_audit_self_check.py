"""The hub checks its own audit log (``towerctl.hub.self_check``): a table or a
record edited while the hub was down, or under it, reaches /healthz, /metrics
and the operators without anyone running ``audit verify``.

The check is the real ``towerctl audit verify --json`` in a child process.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from agent_shim.protocol import Alert
from towerctl.hub.self_check import AuditStatus, status_of
from towerctl.hub.server import Hub, HubConfig

from .conftest import make_tower, next_event, wait_for
from .test_audit_tables import tamper

EVIL_TOKEN = (
    "INSERT INTO tokens (token_id, name, role, envs, hash, created_at) VALUES"
    " ('tk-evil', 'mallory', 'admin', '[]', 'feed', 1)"
)


@pytest.mark.parametrize(
    ("code", "out", "err", "want"),
    [
        (
            0,
            {"ok": True, "records": 7, "first_bad_seq": None, "problem": None, "tables": []},
            "",
            ("intact", ""),
        ),
        (
            1,
            {"ok": False, "records": 9, "first_bad_seq": 4, "problem": "hash mismatch", "tables": []},
            "",
            ("broken", "record 4: hash mismatch"),
        ),
        (
            1,
            {
                "ok": False,
                "records": 9,
                "first_bad_seq": None,
                "problem": "tokens: x",
                "tables": ["tokens: x"],
            },
            "",
            ("broken", "the tables disagree with the log: tokens: x"),
        ),
        (
            2,
            None,
            "towerctl: no database at /x/tower.db\n",
            ("error", "towerctl: no database at /x/tower.db"),
        ),
        (1, "not json", "", ("error", "exit status 1")),
        (0, {"ok": "yes"}, "", ("error", "exit status 0")),
    ],
)
def test_what_one_run_of_verify_means(code: int, out: object, err: str, want: tuple[str, str]) -> None:
    stdout = (out if isinstance(out, str) else json.dumps(out)).encode()
    status = status_of(code, stdout, err.encode(), 123.0)
    assert (status.state, status.detail) == want
    assert status.checked_at == 123.0


def test_health_says_what_broke() -> None:
    assert AuditStatus().health() == "unchecked"
    assert AuditStatus("broken", "record 4: x").health() == "broken: record 4: x"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


async def http(hub: Hub, path: str) -> str:
    return await asyncio.to_thread(get, hub.url.replace("ws://", "http://") + path)


async def test_a_table_edited_while_the_hub_was_down_is_reported_when_it_starts(tmp_path: Path) -> None:
    tower = await make_tower(tmp_path)
    await tower.hub.stop()
    tamper(tower.db, EVIL_TOKEN)
    hub = Hub(HubConfig(port=0, db_path=tower.db, key_path=tower.key, audit_check_interval_s=3600))
    await hub.start()
    try:
        check = hub.self_check
        assert check is not None
        await wait_for(lambda: check.status.state != "unchecked", 60)
        assert check.status.state == "broken", check.status
        assert "tk-evil (mallory, admin) has no token.created record" in check.status.detail
        health = json.loads(await http(hub, "/healthz"))
        assert health["status"] == "ok"  # still serving, and saying so
        assert health["audit"].startswith("broken: the tables disagree with the log: tokens: tk-evil")
        metrics = await http(hub, "/metrics")
        assert "towerctl_audit_intact 0.0" in metrics
        assert "towerctl_audit_checked_timestamp_seconds " in metrics
        # Nobody was connected when it was found: an operator who connects now is told.
        tower.hub = hub
        async with tower.operator() as op:
            alert = await next_event(op, lambda m: isinstance(m, Alert), timeout=10)
        assert alert.level == "critical" and "tk-evil" in alert.message
    finally:
        await hub.stop()


async def test_an_edit_under_a_running_hub_alerts_its_operators(tmp_path: Path) -> None:
    tower = await make_tower(tmp_path)
    await tower.hub.stop()
    hub = Hub(HubConfig(port=0, db_path=tower.db, key_path=tower.key, audit_check_interval_s=3600))
    await hub.start()
    tower.hub = hub
    try:
        check = hub.self_check
        assert check is not None
        await wait_for(lambda: check.status.state != "unchecked", 60)
        assert check.status.state == "intact", check.status
        assert "towerctl_audit_intact 1.0" in await http(hub, "/metrics")
        async with tower.operator() as op:
            tamper(tower.db, "UPDATE tokens SET role = 'admin' WHERE name = 'viewer'")
            check.check_soon()
            alert = await next_event(op, lambda m: isinstance(m, Alert), timeout=60)
        assert alert.level == "critical"
        assert (
            "audit log check FAILED" in alert.message and "role 'admin', recorded 'viewer'" in alert.message
        )
        assert json.loads(await http(hub, "/healthz"))["audit"].startswith("broken")
    finally:
        await hub.stop()


async def test_a_hub_not_asked_to_check_says_so(tmp_path: Path) -> None:
    tower = await make_tower(tmp_path)
    try:
        assert tower.hub.self_check is None
        assert json.loads(await http(tower.hub, "/healthz"))["audit"] == "not checked by this hub"
        assert "towerctl_audit_intact" not in await http(tower.hub, "/metrics")
    finally:
        await tower.hub.stop()
