"""``@gated``: any Python function as a supervised tool call, against a real hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent_shim import ActionDenied, Shim, SyncShim
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.protocol import ActionEvent, ActionInfo
from agent_shim.tool import _close_defaults, gated, tool_command
from towerctl.operator import OperatorClient

from .conftest import Tower, next_event, wait_for
from .test_shim_imports import ALLOWED_THIRD_PARTY, FORBIDDEN, third_party, top_level_modules

NO_DROPS = Rule(kind="tool", match="drop_*", verdict="deny", reason="bots never drop tables")


@pytest.fixture
async def shim(tower: Tower) -> AsyncIterator[Shim]:
    await tower.set_policy(
        "dev",
        EnvPolicy(read="allow", write="allow", destructive="ask", approval_timeout_s=60, rules=(NO_DROPS,)),
    )
    async with Shim(tower.url, tower.tokens["agent"], agent="py-agent", env="dev") as s:
        assert s.connected
        yield s


def finished(op: OperatorClient, command: str) -> ActionInfo | None:
    for info in op.actions.values():
        if info.action.command == command and info.state in ("succeeded", "failed"):
            return info
    return None


async def test_async_tool_is_proposed_with_its_json_args_and_reported(tower: Tower, shim: Shim) -> None:
    ran: list[str] = []

    @gated(shim)
    async def get_weather(city: str, units: str = "metric") -> dict[str, object]:
        ran.append(city)
        return {"city": city, "temp": 21}

    async with tower.operator("viewer") as op:
        assert await get_weather("Paris") == {"city": "Paris", "temp": 21}
        command = 'get_weather {"city":"Paris","units":"metric"}'  # defaults are part of what runs
        await wait_for(lambda: finished(op, command) is not None, 10)
        info = finished(op, command)
    assert info is not None and info.state == "succeeded" and info.action.kind == "tool"
    assert info.output_tail == json.dumps({"city": "Paris", "temp": 21}, separators=(",", ":"))
    assert ran == ["Paris"]
    assert get_weather.__name__ == "get_weather"  # frameworks read the name, docstring, signature


async def test_denied_tool_raises_and_its_body_never_runs(shim: Shim) -> None:
    ran: list[str] = []

    @gated(shim)
    async def drop_table(table: str) -> None:
        ran.append(table)

    with pytest.raises(ActionDenied, match="bots never drop tables") as info:
        await drop_table("users")
    assert info.value.by == "policy"
    assert ran == []


async def test_runs_with_the_approved_args_not_the_callers_mutated_ones(tower: Tower, shim: Shim) -> None:
    received: list[list[str]] = []

    @gated(shim, name="k8s.delete_pods")
    async def delete_pods(names: list[str]) -> int:
        received.append(names)
        return len(names)

    names = ["web-1", "web-2"]
    async with tower.operator("alice") as op:
        call = asyncio.create_task(delete_pods(names))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 10)
        assert ev.action.action.command == 'k8s.delete_pods {"names":["web-1","web-2"]}'
        names.append("kube-dns")  # the caller changes its list while the operator decides
        await op.decide(ev.action.action.action_id, True)
        assert await asyncio.wait_for(call, 10) == 2
    assert received == [["web-1", "web-2"]]


async def test_exception_is_reported_as_failed_and_reraised(tower: Tower, shim: Shim) -> None:
    @gated(shim)
    async def fetch_invoice(invoice_id: int) -> str:
        raise LookupError(f"no invoice {invoice_id}")

    async with tower.operator("viewer") as op:
        with pytest.raises(LookupError):
            await fetch_invoice(42)
        command = 'fetch_invoice {"invoice_id":42}'
        await wait_for(lambda: finished(op, command) is not None, 10)
        info = finished(op, command)
    assert info is not None and info.state == "failed"


async def test_sync_tool_through_a_sync_shim(tower: Tower, shim: Shim) -> None:
    ran: list[str] = []
    sync = SyncShim(tower.url, tower.tokens["agent"], agent="py-sync", env="dev")
    await asyncio.to_thread(sync.start)
    try:

        @gated(sync)
        def read_config(path: str) -> str:
            ran.append(path)
            return "ok"

        @gated(sync)
        def drop_index(name: str) -> None:
            ran.append(name)

        assert await asyncio.to_thread(read_config, "/etc/app.toml") == "ok"
        with pytest.raises(ActionDenied, match="bots never drop tables"):
            await asyncio.to_thread(drop_index, "idx_users")
        assert ran == ["/etc/app.toml"]

        # An async tool may use the SyncShim too (its admit runs off the event loop).
        @gated(sync)
        async def list_buckets() -> list[str]:
            return ["logs"]

        assert await list_buckets() == ["logs"]
    finally:
        await asyncio.to_thread(sync.close)


async def test_wrong_shim_or_environment_is_refused(shim: Shim) -> None:
    @gated(shim)
    def sync_tool() -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="SyncShim"):
        sync_tool()

    @gated(lambda: shim, env="prod")
    async def rotate_keys() -> None:
        raise AssertionError("must not run")

    with pytest.raises(ActionDenied, match="declared for environment 'prod'"):
        await rotate_keys()


async def test_default_shim_from_environment(tower: Tower, monkeypatch: pytest.MonkeyPatch) -> None:
    @gated()
    def whoami() -> str:
        return "bot"

    monkeypatch.delenv("TOWER_TOKEN", raising=False)
    with pytest.raises(ActionDenied, match="no TOWER_TOKEN"):
        whoami()
    monkeypatch.setenv("TOWER_URL", tower.url)
    monkeypatch.setenv("TOWER_TOKEN", tower.tokens["agent"])
    monkeypatch.setenv("TOWER_ENV", "dev")
    try:
        assert await asyncio.to_thread(whoami) == "bot"
    finally:
        await asyncio.to_thread(_close_defaults)


def test_command_text_is_deterministic_and_bounded() -> None:
    assert (
        tool_command("f", {"b": 1, "a": {"y": 2, "x": [1.5, None]}}) == 'f {"a":{"x":[1.5,null],"y":2},"b":1}'
    )
    assert tool_command("m", {"self": object(), "n": 1}) == 'm {"n":1}'
    with pytest.raises(ActionDenied, match="more than the 16384"):
        tool_command("big", {"blob": "x" * 20000})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ActionDenied, match="cannot be shown"):
        tool_command("cyclic", {"v": loop})


def test_decorator_imports_only_the_shim_side() -> None:
    loaded = top_level_modules("import agent_shim.tool")
    assert not loaded & FORBIDDEN
    extra = third_party(loaded) - ALLOWED_THIRD_PARTY - {"agent_shim"}
    assert not extra, extra
