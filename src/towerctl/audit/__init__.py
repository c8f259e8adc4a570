"""The tamper-evident audit log: a hash chain with Ed25519-signed checkpoints.

``chain`` is pure (hashing and verification over rows), ``signing`` holds the
checkpoint key, ``verify`` reads a database file for the CLI.
"""

from towerctl.audit.chain import (
    GENESIS_HASH,
    AuditRow,
    ChainHead,
    CheckpointRow,
    VerifyResult,
    record_hash,
    verify,
)
from towerctl.audit.signing import (
    KeyFileError,
    key_id,
    load_or_create_key,
    load_public_key,
    public_key_pem,
    sign_checkpoint,
    verify_checkpoint,
)
from towerctl.audit.verify import AuditReadError, export_audit, verify_database

__all__ = [
    "GENESIS_HASH",
    "AuditReadError",
    "AuditRow",
    "ChainHead",
    "CheckpointRow",
    "KeyFileError",
    "VerifyResult",
    "export_audit",
    "key_id",
    "load_or_create_key",
    "load_public_key",
    "public_key_pem",
    "record_hash",
    "sign_checkpoint",
    "verify",
    "verify_checkpoint",
    "verify_database",
]
