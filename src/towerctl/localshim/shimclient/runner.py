"""Running the tool a client admitted: argv as text, ``execve``, or spawn, wait and report."""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # no stub; `signal` imports enum: ~5 ms a start
import os
import sys

from .settings import connect_timeout
from .wire import Conn, Refused, say

EXIT_DENIED = 126
EXIT_NOT_FOUND = 127
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TOOL_CHARS = _ALNUM | frozenset("._+-")
_SHELL_SAFE = _ALNUM | frozenset("_@%+=:,./-")


def plain_tool_name(tool: str) -> bool:
    """``^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`` without importing ``re``."""
    return 0 < len(tool) <= 128 and tool[0] in _ALNUM and all(c in _TOOL_CHARS for c in tool)


def quote(arg: str) -> str:
    """:func:`shlex.quote` without importing ``re`` (a test keeps them equal)."""
    if not arg:
        return "''"
    if all(c in _SHELL_SAFE for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def join(argv: list[str]) -> str:
    """:func:`shlex.join`."""
    return " ".join(quote(a) for a in argv)


def _reset_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; the tool must get the defaults back.
    for name in ("SIGPIPE", "SIGXFSZ"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:  # noqa: SIM105 - contextlib is one more import on the hot path
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass


def execve_tool(real: str, argv: list[str], env: dict[str, str], prefix: str) -> int:
    _reset_signals()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(real, argv, env)
    except OSError as exc:
        say(prefix, f"cannot run {real}: {exc.strerror}")
    return EXIT_NOT_FOUND


def run_and_report(
    conn: Conn,
    argv: list[str],
    env: dict[str, str] | os._Environ[str],
    prefix: str,
    *,
    real: str | None = None,
    forward_sigint: bool = False,
) -> int:
    """Run the tool (``real``, else ``argv[0]`` looked up on PATH), forward
    signals, terminate it if an operator kills the session, report its exit code.

    One thread, no ``threading``: the child's exit arrives as SIGCHLD on a
    self-pipe, polled together with the daemon's socket.
    """
    import select

    child: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def on_child(_signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib is one more import on the hot path
            os.write(wake_w, b"x")
        except OSError:
            pass

    def forward(signum: int, _frame: object) -> None:
        if child:
            os.kill(child[0], signum)

    signal.signal(signal.SIGCHLD, on_child)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    # A gated tool got the terminal's Ctrl-C itself (same process group) and
    # must not get it twice; ``towerctl exec`` forwards it like asyncio did.
    # Python-level handlers (not SIG_IGN), so that the tool starts with the defaults.
    signal.signal(signal.SIGINT, forward if forward_sigint else (lambda _s, _f: None))
    sys.stdout.flush()
    sys.stderr.flush()
    sigdef = (signal.SIGPIPE, signal.SIGXFSZ)
    try:
        if real is not None:
            pid = os.posix_spawn(real, argv, env, setsigdef=sigdef)
        else:
            pid = os.posix_spawnp(argv[0], argv, env, setsigdef=sigdef)
    except OSError as exc:
        what = real or argv[0]
        conn.send(
            {"op": "report", "exit_code": EXIT_NOT_FOUND, "error": f"cannot run {what}: {exc.strerror}"}
        )
        say(prefix, f"cannot run {what}: {exc.strerror}")
        return EXIT_NOT_FOUND
    child.append(pid)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    sock_fd = conn.sock.fileno()
    poller.register(sock_fd, select.POLLIN)
    status: int | None = None
    while status is None:
        done, status_now = os.waitpid(pid, os.WNOHANG)
        if done:
            status = status_now
            break
        for fd, _events in poller.poll():
            if fd == wake_r:
                os.read(wake_r, 512)
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError, Refused):
                poller.unregister(sock_fd)  # the daemon is gone: the report will fail
                continue
            if msg["type"] == "kill":
                say(prefix, f"session killed by an operator: {msg.get('message', '')}; terminating")
                os.kill(pid, signal.SIGTERM)
    code = os.waitstatus_to_exitcode(status)
    ok = False
    try:
        conn.send({"op": "report", "exit_code": code})
        conn.sock.settimeout(connect_timeout() + 5.0)
        while True:
            msg = conn.recv()
            if msg["type"] == "reported":
                ok = msg.get("ok") is True
                break
    except (EOFError, OSError, Refused):
        pass
    if not ok:
        say(prefix, "warning: the outcome could not be reported to the tower")
    return code if code >= 0 else 128 - code


def leave(code: int) -> None:
    """Exit at once with ``code``: nothing is left to clean up, and skipping the
    interpreter's teardown saves a few ms on every call."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF if code >= 0 else 1)
