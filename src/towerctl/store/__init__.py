"""Persistence for the hub: sessions, actions, decisions, outcomes, policies,
tokens, and the tamper-evident audit log, in one SQLite file."""

from towerctl.audit.chain import VerifyResult
from towerctl.store.db import Store
from towerctl.store.models import (
    ActionRow,
    AlreadyDecided,
    AuditRow,
    CheckpointRow,
    Conflict,
    DecisionRow,
    InvalidTransition,
    NotFound,
    OutcomeRow,
    PolicyRow,
    SessionRow,
    StoreError,
    TokenRow,
)
from towerctl.store.writer import WriteStats

__all__ = [
    "ActionRow",
    "AlreadyDecided",
    "AuditRow",
    "CheckpointRow",
    "Conflict",
    "DecisionRow",
    "InvalidTransition",
    "NotFound",
    "OutcomeRow",
    "PolicyRow",
    "SessionRow",
    "Store",
    "StoreError",
    "TokenRow",
    "VerifyResult",
    "WriteStats",
]
