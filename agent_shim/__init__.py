"""agent_shim: the piece of towerctl that runs inside an agent.

Imports only the standard library, websockets and pydantic, so that it is
cheap to embed and has nothing of the operator side in it.

The names below are loaded on first use (PEP 562): ``import
agent_shim.canonical`` (the hub's audit chain) or ``agent_shim.risk`` must not
pay for pydantic's model building and websockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_shim.action_ids import new_action_id
    from agent_shim.approved import Approved
    from agent_shim.client import Shim
    from agent_shim.errors import ActionDenied, SessionKilled, ShimError
    from agent_shim.protocol import PROTOCOL_VERSION, Action
    from agent_shim.sync import SyncShim

_WHERE = {
    "Approved": "agent_shim.approved",
    "Shim": "agent_shim.client",
    "new_action_id": "agent_shim.action_ids",
    "ActionDenied": "agent_shim.errors",
    "SessionKilled": "agent_shim.errors",
    "ShimError": "agent_shim.errors",
    "PROTOCOL_VERSION": "agent_shim.protocol",
    "Action": "agent_shim.protocol",
    "SyncShim": "agent_shim.sync",
}

__all__ = [
    "PROTOCOL_VERSION",
    "Action",
    "ActionDenied",
    "Approved",
    "SessionKilled",
    "Shim",
    "ShimError",
    "SyncShim",
    "new_action_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_shim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
