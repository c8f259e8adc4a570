"""Ed25519 keys that vouch for audit checkpoints.

A hash chain alone proves nothing against someone who can rewrite the whole
database: they simply recompute every hash. A signature by a key that lives
outside the database does, so the private key is kept in its own file
(mode 0600) and the verifier needs only the public half.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

CHECKPOINT_TAG: Final = b"towerctl/checkpoint/v1\x00"


class KeyFileError(Exception):
    """The key file is unreadable, of the wrong type, or readable by others."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint stored beside each signature, so a verifier handed the
    wrong key says so instead of reporting forged checkpoints."""
    raw = public_key.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(seq: int, hash_hex: str) -> bytes:
    """The exact bytes signed: a domain tag keeps a checkpoint signature from
    ever being valid for anything else this key might sign."""
    if seq < 0 or seq >= 1 << 64:
        raise ValueError(f"seq {seq} does not fit in 8 bytes")
    digest = bytes.fromhex(hash_hex)
    if len(digest) != 32:
        raise ValueError("checkpoint hash must be 32 bytes of hex")
    return CHECKPOINT_TAG + seq.to_bytes(8, "big") + digest


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, hash_hex: str) -> str:
    return key.sign(checkpoint_message(seq, hash_hex)).hex()


def verify_checkpoint(public_key: Ed25519PublicKey, seq: int, hash_hex: str, signature_hex: str) -> bool:
    """False for any malformed input too: a verifier must never crash on
    attacker-controlled rows, only report them."""
    try:
        public_key.verify(bytes.fromhex(signature_hex), checkpoint_message(seq, hash_hex))
    except (InvalidSignature, ValueError, TypeError, OverflowError):
        return False
    return True


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """PEM of the public half, to keep somewhere an attacker on the hub host
    cannot reach (the strongest way to run ``audit verify``)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _check_private(path: Path) -> None:
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )


def _load_private(path: Path) -> Ed25519PrivateKey:
    _check_private(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _write_new(path: Path, pem: bytes) -> None:
    """Write beside the target and hard-link into place so that a concurrent
    creator or a crash never leaves a half-written key at ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may only remove bits, but be explicit
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key at ``path``, created (mode 0600) if missing."""
    if path.exists():
        return _load_private(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    try:
        _write_new(path, pem)
    except FileExistsError:
        return _load_private(path)  # another process won the race: use its key
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Accepts the private key file or a public PEM exported from it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from exc
    if b"PRIVATE KEY" in data:
        return _load_private(path).public_key()
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM Ed25519 key: {exc}") from exc
    if not isinstance(pub, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(pub).__name__}, not an Ed25519 key")
    return pub
