"""``GET /metrics``, JSON logs and the approval-wait webhook, against a real hub.

Real shims propose real actions; the exposition is fetched over HTTP from the
hub's own port and parsed with prometheus_client's parser. The webhook posts
to a tiny HTTP server on 127.0.0.1:0; the test waits on an Event, not a sleep.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_shim import Action, ActionDenied, Shim, new_action_id
from agent_shim.protocol import ActionEvent
from towerctl.hub.server import Hub, HubConfig
from towerctl.logjson import JsonFormatter, configure
from towerctl.operator import OperatorClient
from towerctl.tokens import create_token

from .conftest import Tower, next_event, wait_for


def shell(command: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command)


def http_get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float | None:
        for fam in self.families.values():
            for s in fam.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None


async def scrape(hub: Hub) -> Scrape:
    status, ctype, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{hub.port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    return Scrape(text)


async def test_metrics_after_real_actions(tower: Tower, tmp_path: Path) -> None:
    victim = tmp_path / "data"
    victim.mkdir()
    before = await scrape(tower.hub)
    assert before.value("towerctl_pending_oldest_age_seconds") == 0.0
    assert "towerctl_decision_latency_seconds" in before.families

    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="dev-bot", env="dev") as dev,
        Shim(tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod") as prod,
    ):
        assert (await dev.run_shell("ls")).exit_code == 0
        with pytest.raises(ActionDenied):
            await prod.run_shell("terraform destroy -auto-approve")
        task = asyncio.create_task(prod.run_shell(f"rm -rf {victim}"))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        aid = ev.action.action.action_id

        waiting = await scrape(tower.hub)
        assert waiting.value("towerctl_actions_total", env="dev", verdict="allow", risk="read") == 1
        assert waiting.value("towerctl_actions_total", env="prod", verdict="ask", risk="destructive") == 1
        assert waiting.value("towerctl_actions_total", env="prod", verdict="deny", risk="destructive") == 1
        assert waiting.value("towerctl_pending_approvals", env="prod") == 1
        assert (waiting.value("towerctl_pending_oldest_age_seconds") or 0) > 0
        assert waiting.value("towerctl_sessions", env="prod", status="active") == 1
        assert waiting.value("towerctl_sessions", env="dev", status="active") == 1
        assert waiting.value("towerctl_operators_connected") == 1
        assert (waiting.value("towerctl_store_write_operations_total") or 0) > 0
        assert (waiting.value("towerctl_store_write_batches_total") or 0) > 0
        checkpoints = waiting.value("towerctl_store_wal_checkpoints_total")  # a counter: only grows
        assert checkpoints is not None and checkpoints <= tower.hub.store.write_stats.idle_checkpoints

        await op.decide(aid, approve=True, reason="ok")
        approved = await asyncio.wait_for(task, 5)
        assert approved.decision is not None and not victim.exists()

    after = await scrape(tower.hub)
    assert after.value("towerctl_decisions_total", env="prod", verdict="approved") == 1
    assert after.value("towerctl_decision_latency_seconds_count", env="prod", verdict="approved") == 1
    assert (
        after.value("towerctl_decision_latency_seconds_bucket", env="prod", verdict="approved", le="+Inf")
        == 1
    )
    assert (after.value("towerctl_decision_latency_seconds_sum", env="prod", verdict="approved") or -1) >= 0
    assert after.value("towerctl_pending_approvals", env="prod") is None
    assert after.value("towerctl_pending_oldest_age_seconds") == 0.0


async def test_each_hub_has_its_own_registry(tower: Tower, tmp_path: Path) -> None:
    other = Hub(HubConfig(port=0, db_path=tmp_path / "other.db", key_path=tmp_path / "other.key"))
    await other.start()
    try:
        tower.hub.metrics.actions.labels("dev", "allow", "read").inc()
        assert (await scrape(other)).value("towerctl_actions_total", env="dev", verdict="allow") is None
        assert (await scrape(tower.hub)).value("towerctl_actions_total", env="dev", verdict="allow") == 1
    finally:
        await other.stop()


class Hook:
    """A chat webhook on 127.0.0.1:0 that records what it is sent."""

    def __init__(self) -> None:
        self.posts: list[dict[str, object]] = []
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append({"ctype": self.headers["Content-Type"], **json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                hook.got.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


async def hub_with_webhook(tmp_path: Path, url: str) -> tuple[Hub, dict[str, str]]:
    hub = Hub(
        HubConfig(
            port=0,
            db_path=tmp_path / "w.db",
            key_path=tmp_path / "w.key",
            webhook_url=url,
            webhook_after_s=1.0,
        )
    )
    await hub.start()
    assert hub.store is not None
    tokens = {
        role: await create_token(hub.store, role=role, name=name, envs=(), actor="test")
        for role, name in (("agent", "agent"), ("approver", "alice"))
    }
    return hub, tokens


async def test_webhook_fires_once_for_an_approval_nobody_decides(hook: Hook, tmp_path: Path) -> None:
    hub, tokens = await hub_with_webhook(tmp_path, hook.url)
    try:
        async with (
            OperatorClient(hub.url, tokens["approver"], client="test") as op,
            Shim(hub.url, tokens["agent"], agent="deploy-bot", env="prod") as shim,
        ):
            # Decided at once: no alert.
            quick = asyncio.create_task(shim.run_shell("rm -rf /tmp/towerctl-test-nothing-here-1"))
            ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
            await op.decide(ev.action.action.action_id, approve=False, reason="no")
            with pytest.raises(ActionDenied):
                await asyncio.wait_for(quick, 5)
            # Left waiting: alerted after ~1 s, once.
            slow = asyncio.create_task(shim.run_shell("rm -rf /tmp/towerctl-test-<!channel>"))
            ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
            aid = ev.action.action.action_id
            assert await asyncio.to_thread(hook.got.wait, 10)
            notifier = hub.notifier
            assert notifier is not None
            seen = notifier.scans
            await wait_for(lambda: notifier.scans >= seen + 3, 10)
            assert len(hook.posts) == 1
            post = hook.posts[0]
            assert post["ctype"] == "application/json"
            text = str(post["text"])
            assert aid in text and "deploy-bot@prod" in text and "destructive" in text
            assert "waited" in text and "nobody deciding" in text
            assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # no mention injection
            await op.decide(aid, approve=False, reason="no")
            with pytest.raises(ActionDenied):
                await asyncio.wait_for(slow, 5)
    finally:
        await hub.stop()


async def test_a_failing_webhook_is_logged_and_the_hub_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    hub, tokens = await hub_with_webhook(tmp_path, dead)
    try:
        with caplog.at_level(logging.WARNING, logger="towerctl.notify"):
            async with (
                OperatorClient(hub.url, tokens["approver"], client="test") as op,
                Shim(hub.url, tokens["agent"], agent="deploy-bot", env="prod") as shim,
            ):
                task = asyncio.create_task(shim.run_shell("rm -rf /tmp/towerctl-test-nothing-here-2"))
                ev = await next_event(
                    op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending"
                )
                notifier = hub.notifier
                assert notifier is not None
                await wait_for(lambda: notifier.failed == 1, 10)
                await op.decide(ev.action.action.action_id, approve=False, reason="no")
                with pytest.raises(ActionDenied):
                    await asyncio.wait_for(task, 5)
        assert any("webhook for action" in r.getMessage() for r in caplog.records)
    finally:
        await hub.stop()


def test_json_log_lines() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        handler = configure(logging.INFO, stream)
        assert isinstance(handler.formatter, JsonFormatter)
        log = logging.getLogger("towerctl.test")
        log.info("hello %s", "world", extra={"action_id": "a-1", "obj": object()})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
        log.debug("not shown")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "hello world" and first["level"] == "info"
    assert first["logger"] == "towerctl.test" and first["action_id"] == "a-1"
    assert first["ts"].endswith("Z") and isinstance(first["pid"], int)
    assert first["obj"].startswith("<object")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]
