"""Plumbing for the one-shot processes that gates and hooks are.

A gate or a hook lives for one action: it connects, asks, answers and exits.
That is unlike the long-lived shim the design has in mind, and three things
follow from it, all handled here:

- **Nothing is judged offline.** A fresh process has never received the hub's
  policy, so the built-in one it starts with may be laxer than what operators
  configured, and whatever it queues dies with it. So a one-shot process that
  cannot reach the tower refuses (:func:`connect`), and one that could not
  hand its messages over before exiting refuses too (:func:`flush`).
- **One session, one connection.** The hub keeps one connection per session
  and closes the older one when a second arrives; two hook processes of the
  same Claude session running at once would knock each other off in a loop.
  :func:`session_lock` serialises them per session with ``flock``.
- **A hard deadline.** Claude Code lets a tool call proceed when its hook
  times out, so :func:`watchdog` ends the process with the fail-closed exit
  code even if the event loop is stuck.

State (locks, the PreToolUse → PostToolUse hand-over files) lives in a
private directory: ``$TOWER_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/towerctl-UID``,
else ``/tmp/towerctl-UID``; it must be a real directory, owned by the user,
mode 0700, or nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from agent_shim import Shim

RUNTIME_DIR_ENV: Final = "TOWER_RUNTIME_DIR"
#: Messages that mean "retrying will not help": fail at once instead of at the deadline.
_PERMANENT: Final = ("hub refused", "hub rejected")
#: Lock files and stale hand-over files older than this are swept.
STALE_AFTER_S: Final = 24 * 3600


class RuntimeProblem(RuntimeError):
    """Something this process needs is missing or unsafe; the caller fails closed."""


class Unreachable(RuntimeProblem):
    """The tower did not welcome us in time."""


def quiet_shim_log() -> None:
    """Keep the shim's reconnect warnings off the agent's stderr.

    A one-shot process reports the connection problem once, in its own
    refusal message (which carries the shim's ``last_error``), instead of one
    "retrying" line per attempt interleaved with the tool's output.
    """
    logging.getLogger("agent_shim").setLevel(logging.ERROR)


def private_dir() -> Path:
    """The per-user state directory, created 0700 and checked before use.

    Checked with ``lstat`` so that a symlink or a directory planted by another
    user in a shared ``/tmp`` is refused rather than followed.
    """
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        path = Path(explicit)
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        root = Path(xdg) if xdg and os.path.isdir(xdg) else Path(tempfile.gettempdir())
        path = root / f"towerctl-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise RuntimeProblem(f"cannot use state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeProblem(
            f"state directory {path} must be a directory owned by uid {os.getuid()} with mode 0700"
        )
    return path


def key(*parts: str) -> str:
    """A file-name-safe name for ``parts`` (ids from agents are not trusted as paths)."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:32]


def sweep(directory: Path, now: float | None = None) -> None:
    """Remove hand-over files nobody collected (a tool that never ran, a crash)."""
    cutoff = (now if now is not None else time.time()) - STALE_AFTER_S
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


@contextlib.asynccontextmanager
async def session_lock(name: str, deadline: float) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` for session ``name`` until ``deadline`` (monotonic).

    Polls the non-blocking lock so the deadline stays ours to keep; the lock is
    released by the kernel if the process dies, so a crash never wedges a session.
    """
    path = private_dir() / f"{key('session', name)}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        "another tool call of this session held the tower connection until the deadline"
                    ) from None
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)


async def connect(shim: Shim, timeout: float) -> None:
    """Start ``shim`` and return once the hub has welcomed it; raise :class:`Unreachable`.

    A refused token or a rejected hello fails at once (retrying cannot help);
    an unreachable hub is retried until ``timeout``.
    """
    starting = asyncio.create_task(shim.start())
    deadline = time.monotonic() + timeout
    try:
        while not await shim.wait_connected(min(0.05, max(0.0, deadline - time.monotonic()))):
            err = shim.last_error
            if err.startswith(_PERMANENT):
                raise Unreachable(err)
            if time.monotonic() >= deadline:
                raise Unreachable(err or f"no welcome within {timeout:g}s")
        await starting
    finally:
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting


async def flush(shim: Shim) -> bool:
    """Close ``shim`` after handing over everything queued; False if anything was left.

    A one-shot process that exits with messages still queued has acted
    unrecorded; callers treat False as a refusal.
    """
    await shim.close()
    return shim.pending_reports == 0


def watchdog(seconds: float, message: str, code: int) -> threading.Timer:
    """Exit with ``code`` after ``seconds`` whatever the event loop is doing.

    The backstop for the deadline: ``os._exit`` skips cleanup on purpose, since
    a process past its deadline must not get to print an "allow".
    """

    def fire() -> None:
        with contextlib.suppress(OSError):
            os.write(2, message.encode("utf-8", "replace"))
        os._exit(code)

    timer = threading.Timer(max(0.0, seconds), fire)
    timer.daemon = True
    timer.start()
    return timer
