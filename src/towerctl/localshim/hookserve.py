"""The daemon's side of ``towerctl hook claude-code|codex``.

The hook client (:mod:`towerctl.localshim.shimclient.hook`) sends one request line
``{"v": 1, "op": "hook", "flavor", "post", "timeout", "connect_timeout",
"all_tools", "url", "token", "env", "agent", "hub_key", "ca", "size"}``
followed by exactly ``size`` bytes: the hook JSON Claude Code or Codex wrote
on its stdin, unparsed. The daemon answers with one line ``{"type": "hook",
"code", "stdout", "stderr"}``: what the in-process hook would have printed and
its exit code, computed by the same code
(:func:`towerctl.integrations.hooks.handle`).

What differs is where the shim comes from: instead of connecting a new one
per tool call (and serialising a session's parallel calls with a file lock),
each Claude/Codex session keeps one shim in the daemon's pool, keyed by the
settings *and* its tower session id (``cc-dev-<uuid>``), created with
``end_session_on_close=False``: the daemon closing it (idle, restart) leaves
the tower session to be resumed by the next call. If the client hangs up
before the answer (the agent gave up on the hook), the call is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from towerctl.integrations import hooks
from towerctl.integrations.hookjson import MAX_INPUT_BYTES
from towerctl.localshim.pool import Entry, ShimKey, ShimPool, handed_over
from towerctl.localshim.serverio import BadRequest, line, text_field

if TYPE_CHECKING:
    from agent_shim import Shim

FLAVORS: Final = frozenset({"claude-code", "codex"})
#: Longest wait for the hand-over of what a hook queued (a one-shot hook's close waits as long).
RELEASE_S: Final = 3.0
#: Seconds the payload may take to arrive after the request line.
BODY_TIMEOUT_S: Final = 10.0


def _number(req: dict[str, Any], name: str, low: float, high: float) -> float:
    value = req.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name!r} must be a number")
    if not low <= value <= high:
        raise BadRequest(f"{name!r} must be between {low:g} and {high:g}")
    return float(value)


def _flag(req: dict[str, Any], name: str) -> bool:
    value = req.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false")
    return value


@dataclass(frozen=True, slots=True)
class HookRequest:
    flavor: str
    post: bool
    size: int
    cfg: hooks.HookSettings

    @classmethod
    def parse(cls, req: dict[str, Any]) -> HookRequest:
        flavor = text_field(req, "flavor", limit=32)
        if flavor not in FLAVORS:
            raise BadRequest(f"'flavor' must be one of {sorted(FLAVORS)}")
        size = req.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_INPUT_BYTES + 1:
            raise BadRequest(f"'size' must be an integer between 0 and {MAX_INPUT_BYTES + 1}")
        cfg = hooks.HookSettings(
            url=text_field(req, "url"),
            token=text_field(req, "token"),
            env=text_field(req, "env", limit=128),
            agent=text_field(req, "agent", limit=255),
            timeout=_number(req, "timeout", 1.0, 86400.0),
            connect_timeout=_number(req, "connect_timeout", 0.1, 120.0),
            all_tools=_flag(req, "all_tools"),
            hub_key=text_field(req, "hub_key", default=""),
            ca=text_field(req, "ca", default=""),
        )
        return cls(flavor=flavor, post=_flag(req, "post"), size=size, cfg=cfg)


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


class Pooled:
    """A :class:`~towerctl.integrations.hooksession.Connector` over the daemon's pool:
    one shim per tower session."""

    def __init__(self, pool: ShimPool) -> None:
        self.pool = pool
        self._leased: dict[int, Entry] = {}

    def lock(self, name: str, deadline: float) -> AbstractAsyncContextManager[None]:
        # One shim per session carries parallel calls itself: nothing to serialise.
        return _no_lock()

    async def open(self, cfg: hooks.HookSettings, env: str, session_id: str | None, timeout: float) -> Shim:
        key: ShimKey = (cfg.url, cfg.token, env, cfg.agent, cfg.hub_key, cfg.ca, session_id or "")
        entry = await self.pool.entry_for(key, timeout)
        entry.busy += 1
        entry.last_used = time.monotonic()
        self._leased[id(entry.shim)] = entry
        return entry.shim

    async def release(self, shim: Shim) -> bool:
        try:
            return await handed_over(shim, RELEASE_S)
        finally:
            entry = self._leased.pop(id(shim), None)
            if entry is not None:
                entry.busy -= 1
                entry.last_used = time.monotonic()


def flavor_named(name: str) -> hooks.Flavor:
    return hooks.claude_code() if name == "claude-code" else hooks.codex()


async def serve(
    pool: ShimPool, req: HookRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    started = time.monotonic()
    flavor = flavor_named(req.flavor)
    try:
        data = await asyncio.wait_for(reader.readexactly(req.size), BODY_TIMEOUT_S)
    except (asyncio.IncompleteReadError, TimeoutError):
        raise BadRequest(f"the {req.size}-byte hook payload did not arrive") from None
    handling = asyncio.create_task(
        hooks.handle(flavor, req.cfg, data, post=req.post, started=started, connector=Pooled(pool))
    )
    hangup = asyncio.create_task(reader.read(1))
    try:
        done, _ = await asyncio.wait(
            {handling, hangup}, timeout=req.cfg.timeout + 3.0, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        hangup.cancel()
        with contextlib.suppress(BaseException):
            await hangup
    if handling not in done:
        handling.cancel()
        with contextlib.suppress(BaseException):
            await handling
        if not done:  # the backstop: the hook's own deadlines should have answered first
            writer.write(
                line(
                    {
                        "type": "hook",
                        "code": hooks.EXIT_BLOCK,
                        "stdout": "",
                        "stderr": f"towerctl: {flavor.name} hook passed its deadline; failing closed\n",
                    }
                )
            )
        return  # else the client went away: nobody to answer
    result = handling.result()
    writer.write(
        line({"type": "hook", "code": result.code, "stdout": result.stdout, "stderr": result.stderr})
    )
