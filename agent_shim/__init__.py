"""agent_shim: the piece of towerctl that runs inside an agent.

Imports only the standard library, websockets and pydantic, so that it is
cheap to embed and has nothing of the operator side in it.
"""

from agent_shim.approved import Approved
from agent_shim.client import Shim, new_action_id
from agent_shim.errors import ActionDenied, SessionKilled, ShimError
from agent_shim.protocol import PROTOCOL_VERSION, Action
from agent_shim.sync import SyncShim

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
