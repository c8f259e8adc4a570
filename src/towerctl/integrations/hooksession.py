"""A hook's tower session: where its shim comes from, and what its
PreToolUse call leaves for its PostToolUse call.

Shims. :class:`Connector` is what :mod:`towerctl.integrations.hooks` asks for
a connected shim. :class:`OneShot` (``TOWER_NO_DAEMON=1``, or a caller
without a daemon) connects one per call, resuming the agent's session, and
closes it after handing everything over; calls of one session take turns
under a file lock, since the hub keeps one connection per session. The local
shim daemon's pool (:class:`towerctl.localshim.hookserve.Pooled`) keeps one
shim per session open between calls instead.

Hand-over. The PreToolUse hook leaves a small file (0600, in the private
runtime directory) with the exact action it proposed and when it was
admitted; the PostToolUse hook reads and removes it, and recomputes the action
from the payload only when it is missing (the mapping is deterministic). The
file is what keeps the digest right when Claude's working directory moved
between the two hooks. Through the daemon, the daemon writes and reads them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol

from towerctl.integrations import runtime
from towerctl.integrations.hookjson import HookInput

if TYPE_CHECKING:
    from agent_shim import Approved, Shim
    from towerctl.integrations.hooks import HookSettings

_HANDOVER_VERSION: Final = 1


class Connector(Protocol):
    """Where a hook gets the shim of its tower session from.

    :class:`OneShot` (this process: connect, ask, close) or the local shim
    daemon's pool (:mod:`towerctl.localshim.hookserve`: one shim per tower
    session, kept open between tool calls).
    """

    def lock(self, name: str, deadline: float) -> AbstractAsyncContextManager[None]:
        """Serialise the calls of one tower session where that is needed."""
        ...

    async def open(self, cfg: HookSettings, env: str, session_id: str | None, timeout: float) -> Shim:
        """A shim welcomed by the hub within ``timeout``; raise :class:`runtime.Unreachable`."""
        ...

    async def release(self, shim: Shim) -> bool:
        """Done with ``shim``: True once everything it queued has been handed to the hub."""
        ...


class OneShot:
    """A shim of our own for this one call, closed (session left open) at the end."""

    def lock(self, name: str, deadline: float) -> AbstractAsyncContextManager[None]:
        return runtime.session_lock(name, deadline)

    async def open(self, cfg: HookSettings, env: str, session_id: str | None, timeout: float) -> Shim:
        from agent_shim import Shim

        shim = Shim(
            cfg.url,
            cfg.token,
            agent=cfg.agent,
            env=env,
            session_id=session_id,
            connect_timeout=timeout,
            hub_key=cfg.hub_key or None,
            end_session_on_close=False,  # the agent's session goes on after this tool call
        )
        try:
            await runtime.connect(shim, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await runtime.flush(shim)
            raise
        return shim

    async def release(self, shim: Shim) -> bool:
        return await runtime.flush(shim)


# ----------------------------------------------------------------- hand-over


def _handover_path(prefix: str, inp: HookInput) -> str:
    name = runtime.key("handover", prefix, inp.session_id, inp.tool_use_id)
    return str(runtime.private_dir() / f"{name}.json")


def save_handover(prefix: str, inp: HookInput, approved: Approved, session_id: str | None, env: str) -> None:
    """Leave the admitted action for the PostToolUse hook (best effort: it can recompute)."""
    if not inp.tool_use_id:
        return
    body = {
        "v": _HANDOVER_VERSION,
        "action": approved.action.model_dump(mode="json"),
        "digest": approved.digest,
        "session_id": session_id,
        "env": env,
        "admitted_ns": time.time_ns(),
    }
    with contextlib.suppress(OSError, runtime.RuntimeProblem):
        path = _handover_path(prefix, inp)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(body))
        runtime.sweep(runtime.private_dir())


def take_handover(prefix: str, inp: HookInput) -> dict[str, Any] | None:
    """Read and remove the PreToolUse hook's hand-over file, if it is there and sound."""
    from agent_shim.protocol import Action

    try:
        path = _handover_path(prefix, inp)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r", encoding="utf-8") as fh:
            body = json.loads(fh.read(1 << 20))
        os.unlink(path)
    except (OSError, ValueError, runtime.RuntimeProblem):
        return None
    if not isinstance(body, dict) or body.get("v") != _HANDOVER_VERSION:
        return None
    try:
        action = Action.model_validate(body["action"])
    except (KeyError, ValueError):
        return None
    if action.digest() != body.get("digest"):
        return None
    return {**body, "action": action}
