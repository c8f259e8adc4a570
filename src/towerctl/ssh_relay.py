"""Relaying bytes between an SSH channel and a console on a pseudo-terminal.

Window resizes are forwarded (``TIOCSWINSZ`` on the master and ``SIGWINCH``
to the console), and when the connection drops the console is ended here: a
process on a PTY whose other side simply goes away gets no SIGHUP by itself.
The master is non-blocking and waited on with the event loop's readers and
writers, so one slow client never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios

import asyncssh


def set_winsize(fd: int, width: int, height: int, pixwidth: int = 0, pixheight: int = 0) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


async def _end(pid: int, waiter: asyncio.Task[int], grace_s: float) -> None:
    """SIGHUP, then SIGTERM, then SIGKILL the console's process group."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), grace_s)
            return
        except TimeoutError:
            continue


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _pump_out(master: int, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Console screen → SSH client, until the console closes its terminal."""
    while True:
        await _readable(master)
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            continue
        except OSError:  # EIO: every process holding the terminal is gone
            return
        if not data:
            return
        process.stdout.write(data)
        await process.stdout.drain()


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _writable(fd)
            continue
        view = view[n:]


async def _pump_in(master: int, process: asyncssh.SSHServerProcess[bytes], pid: int) -> None:
    """SSH client keys and resizes → console; returns when the client is gone."""
    while True:
        try:
            data = await process.stdin.read(4096)
        except asyncssh.TerminalSizeChanged as exc:
            set_winsize(master, exc.width, exc.height, exc.pixwidth, exc.pixheight)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGWINCH)
            continue
        except (asyncssh.BreakReceived, asyncssh.SignalReceived):
            continue
        except (asyncssh.Error, OSError):
            return
        if not data:
            return
        try:
            await _write_all(master, data)
        except OSError:
            return
