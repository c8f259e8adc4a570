"""A closed connection is freed when it closes, not at the hub's next full
garbage collection (``server._release_handshake`` says why): with the
cycle collector off, every hub-side connection object must die by reference
counting alone once its peer has gone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from .conftest import Tower, wait_for
from .test_agent_lines import agent


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _agent_conn(tower: Tower, name: str, *, offer: bool) -> list[weakref.ref[object]]:
    """Say hello as agent ``name``, close, and return weak references to the
    hub's side of that connection and to its websocket protocol (whose frame
    parser is a generator holding it)."""
    ws = await agent(tower, offer=offer, name=name)
    assert tower.hub.service is not None
    (sess,) = [s for s in tower.hub.service.reg.sessions.values() if s.agent == name]
    assert sess.conn is not None
    refs: list[weakref.ref[object]] = [weakref.ref(sess.conn), weakref.ref(sess.conn.protocol)]
    await ws.close()
    return refs


@pytest.mark.parametrize("offer", [True, False], ids=["lines", "plain"])
async def test_a_closed_agent_connection_is_freed_without_the_cycle_collector(
    tower: Tower, no_cycle_collector: None, offer: bool
) -> None:
    refs = [r for i in range(3) for r in await _agent_conn(tower, f"gc-{offer}-{i}", offer=offer)]
    await wait_for(lambda: all(r() is None for r in refs))


async def test_a_closed_operator_connection_is_freed_without_the_cycle_collector(
    tower: Tower, no_cycle_collector: None
) -> None:
    assert tower.hub.service is not None
    service = tower.hub.service
    async with tower.operator():
        await wait_for(lambda: len(service.fanout.operators) == 1)
        (conn,) = [o.conn for o in service.fanout.operators]
        refs = [weakref.ref(conn), weakref.ref(conn.protocol)]
        del conn
    await wait_for(lambda: all(r() is None for r in refs))


async def test_a_connected_agent_keeps_no_handshake_headers(tower: Tower) -> None:
    """The request's and response's headers (a fifth of what the collector
    tracks per connection) go once the handler runs, for agents and operators
    alike; the endpoint was already decided from the request's path."""
    ws = await agent(tower, offer=True, name="gc-handshake")
    assert tower.hub.service is not None
    service = tower.hub.service
    (sess,) = [s for s in service.reg.sessions.values() if s.agent == "gc-handshake"]
    conn = sess.conn
    assert conn is not None and conn.request is not None and conn.response is not None
    assert conn.request.path == "/agent"
    assert (len(conn.request.headers), len(conn.response.headers)) == (0, 0)
    async with tower.operator():
        await wait_for(lambda: len(service.fanout.operators) == 1)
        (op,) = service.fanout.operators
        assert op.conn.request is not None and op.conn.response is not None
        assert (len(op.conn.request.headers), len(op.conn.response.headers)) == (0, 0)
    await ws.close()
