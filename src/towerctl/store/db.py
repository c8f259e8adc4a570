"""The hub's persistent store: every proposed action, decision and outcome.

Writes go through the group-committing ``Writer`` (one transaction per batch,
audit records in the same transaction as the change they describe). Reads go
straight to a separate read-only aiosqlite connection: WAL lets them run while
the writer commits, and they see everything whose write has returned.

This module owns the store's lifetime (open, close) and its key; the queries
live in :mod:`towerctl.store.writes` and :mod:`towerctl.store.reads`, one
mixin each, so that :class:`Store` is still one object to its callers.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import aiosqlite
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent_shim.protocol import DECISION_SIG_TAG
from towerctl.store.applier import Applier
from towerctl.store.models import StoreError
from towerctl.store.reads import (
    _ACTION_COLS,
    _AUDIT_COLS,
    _SESSION_COLS,
    _TOKEN_COLS,
    Row,
    StoreReads,
    _placeholders,
)
from towerctl.store.tx import Tx
from towerctl.store.writer import Writer, WriteStats
from towerctl.store.writes import _EVENT, _NAME, StoreWrites, T, _ms

#: Names that were defined here before the split (now next door).
__all__ = [
    "_ACTION_COLS",
    "_AUDIT_COLS",
    "_EVENT",
    "_NAME",
    "_SESSION_COLS",
    "_TOKEN_COLS",
    "Row",
    "Store",
    "T",
    "_ms",
    "_placeholders",
]


class Store(StoreWrites, StoreReads):
    """Open with ``await Store.open(...)``; always ``await close()`` (it signs
    the final checkpoint)."""

    def __init__(
        self,
        path: Path,
        writer: Writer,
        reader: aiosqlite.Connection,
        public_key: Ed25519PublicKey,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._public_key = public_key
        self._signing_key = signing_key
        self._closing = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        key_path: Path,
        synchronous: str = "NORMAL",
        checkpoint_every: int = 256,
        busy_timeout_ms: int = 5000,
        writer_process: bool = False,
    ) -> Store:
        """Create or migrate the database and load the chain head.

        ``synchronous="NORMAL"`` (WAL) survives a crash of the hub but may lose
        the last commits on power loss, never half of one; ``"FULL"`` makes
        every batch durable before its callers hear back.

        ``writer_process`` runs the transactions in a forked process of their
        own (the hub's choice: see :mod:`towerctl.store.writer_proc`); the
        default is a thread, for tools and tests.
        """
        if writer_process:
            from towerctl.store.writer_proc import ProcessWriter

            writer_cls: type[Writer] = ProcessWriter
        else:
            writer_cls = Writer
        writer = writer_cls(
            Applier(
                path,
                key_path,
                synchronous=synchronous,
                busy_timeout_ms=busy_timeout_ms,
                checkpoint_every=checkpoint_every,
            )
        )
        await writer.start()
        try:
            pending = aiosqlite.connect(
                writer.readonly_uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
            # aiosqlite >= 0.22 runs each connection on a non-daemon thread
            # that ends only on close(): a hub that died on an exception
            # before close() would hang in interpreter shutdown forever
            # instead of exiting for its supervisor to restart. This
            # connection is read-only (mode=ro), so nothing is lost when it
            # ends with the process.
            thread = getattr(pending, "_thread", None)
            if isinstance(thread, threading.Thread):
                thread.daemon = True
            reader = await pending
        except (sqlite3.Error, OSError) as exc:
            await writer.stop()
            raise StoreError(f"cannot open {path} for reading: {exc}") from exc
        key = writer.signing_key
        return cls(path, writer, reader, key.public_key(), key)

    async def close(self) -> None:
        """Sign a last checkpoint over everything written, then release the file."""
        if self._closing:
            return
        self._closing = True
        try:
            await self._writer.submit(Tx.checkpoint)
        finally:
            # Reader first: the writer's connection, closed last, is the one
            # that can fold the WAL back into the main file and remove it.
            try:
                await self._reader.close()
            finally:
                await self._writer.stop()

    @property
    def write_stats(self) -> WriteStats:
        return self._writer.stats

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def public_key_raw(self) -> bytes:
        """The raw 32 bytes of the public key (what shims pin, as hex or base64)."""
        return self._public_key.public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        from towerctl.audit.signing import key_id

        return key_id(self._public_key)

    def sign_decision(self, message: bytes) -> str:
        """Sign a decision's ``signing_bytes()`` with the hub key (hex signature).

        The same key signs audit checkpoints; only messages under the decision
        domain tag are accepted here, so this can never be made to produce a
        checkpoint signature.
        """
        if not message.startswith(DECISION_SIG_TAG):
            raise StoreError("refusing to sign: not a decision message")
        if self._signing_key is None:
            raise StoreError("this store has no signing key")
        return self._signing_key.sign(message).hex()
