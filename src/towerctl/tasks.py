"""Stopping a background task the way every owner of one in the hub does."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished: its ``finally`` blocks
    (a child process killed, a socket closed) have run when this returns. A
    task that had already failed raises its error here, so that it is not lost."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
