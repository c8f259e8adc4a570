"""``towerctl hook claude-code|codex`` through the local shim daemon.

Claude Code and Codex run the hook once per tool call, twice with
PostToolUse; importing ``agent_shim`` (pydantic, websockets) and click and
connecting a new shim cost ~0.5 s each time. :func:`towerctl.cli.main` hands
the hook commands here before click is imported (unless
``TOWER_NO_DAEMON=1``): standard library only, it parses the command's
options like click would, resolves the settings, reads the hook JSON from
stdin and passes it, unparsed, to the daemon (:mod:`towerctl.localshim.hookserve`),
which maps and judges it with the same code as the in-process hook and
answers with the exact stdout, stderr and exit code to produce.

Failing closed is the contract: anything that goes wrong here (bad settings,
no daemon, a daemon that dies or does not answer in time) exits 2 with the
reason on stderr, which blocks the tool call; never 1, which would let it
through. The client gives up at the hook's deadline plus 3 s, like the
in-process watchdog.
"""

from __future__ import annotations

import os
import sys
import time

from .connect import open_daemon
from .settings import resolve, start_timeout
from .wire import PROTOCOL, Refused, dumps, say

EXIT_BLOCK = 2
#: Subcommand -> (flavor, PostToolUse implied).
COMMANDS = {
    "claude-code": ("claude-code", False),
    "claude-code-post": ("claude-code", True),
    "codex": ("codex", False),
}
#: The click command's valued options, by flag; and its flags.
OPTIONS = {
    "--timeout": "timeout",
    "--connect-timeout": "connect_timeout",
    "--env": "env",
    "--url": "url",
    "--token": "token",
    "--agent": "agent",
}
FLAGS = {"--post": "post", "--all-tools": "all_tools"}
DEFAULT_TIMEOUT_S = 55.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Mirror of towerctl.integrations.hookjson.MAX_INPUT_BYTES (a test keeps them equal).
MAX_INPUT_BYTES = 32 * 1024 * 1024


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


class HookArgs:
    """The hook command's options, defaults as in :mod:`towerctl.cli.hook`."""

    def __init__(self, flavor: str, post: bool) -> None:
        self.flavor = flavor
        self.post = post
        self.all_tools = False
        self.timeout = DEFAULT_TIMEOUT_S
        self.connect_timeout = DEFAULT_CONNECT_TIMEOUT_S
        self.text: dict[str, str] = {}  # env, url, token, agent as given


def parse_hook(args: list[str]) -> HookArgs | None:
    """``SUBCOMMAND [OPTIONS]`` as the click command parses it, or None for
    anything else (``--help``, an unknown option, a bad number): click answers."""
    if not args or args[0] not in COMMANDS:
        return None
    parsed = HookArgs(*COMMANDS[args[0]])
    i = 1
    while i < len(args):
        arg = args[i]
        if arg in FLAGS:
            setattr(parsed, FLAGS[arg], True)
            i += 1
            continue
        flag, eq, value = arg.partition("=")
        if flag not in OPTIONS:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        name = OPTIONS[flag]
        if name in ("timeout", "connect_timeout"):
            number = _float(value)
            if number is None:
                return None
            setattr(parsed, name, number)
        else:
            parsed.text[name] = value
        i += 1
    return parsed


def _read_stdin() -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_INPUT_BYTES:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[: MAX_INPUT_BYTES + 1]


def _ask(request: dict[str, object], data: bytes, deadline: float) -> dict[str, object]:
    """Send the request and the payload; return the daemon's answer."""
    for attempt in (1, 2):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn = open_daemon(min(start_timeout(), remaining))
        try:
            conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            conn.sock.sendall(dumps(request).encode("ascii") + b"\n" + data)
            while True:
                msg = conn.recv()
                if msg["type"] == "hook":
                    return msg
                if msg["type"] == "error":
                    raise Refused(f"the local shim daemon refused the request: {msg.get('message', '')}")
        except (EOFError, ConnectionError) as exc:
            # A daemon that was exiting (idle) as we connected: once more, with a new one.
            if attempt == 1 and conn.received == 0:
                continue
            raise Refused(f"the local shim daemon went away ({type(exc).__name__})") from None
        finally:
            conn.close()
    raise Refused("unreachable")  # pragma: no cover


def hook_main(args: list[str]) -> int | None:
    """``towerctl hook SUBCOMMAND …`` through the daemon; None when click should handle ``args``."""
    started = time.monotonic()
    opts = parse_hook(args)
    if opts is None:
        return None
    flavor = opts.flavor
    timeout = max(1.0, opts.timeout)
    deadline = started + timeout + 3.0
    try:
        try:
            settings = resolve(
                url=opts.text.get("url"), token=opts.text.get("token"), env=opts.text.get("env"), agent=flavor
            )
        except Refused as exc:
            say("towerctl", f"{flavor} hook: bad configuration: {exc}; failing closed")
            return EXIT_BLOCK
        data = _read_stdin()
        request: dict[str, object] = {
            "v": PROTOCOL,
            "op": "hook",
            "flavor": flavor,
            "post": opts.post,
            "all_tools": opts.all_tools,
            "timeout": timeout,
            "connect_timeout": max(0.1, min(120.0, opts.connect_timeout)),
            **settings,
            "agent": opts.text.get("agent", flavor),
            "size": len(data),
        }
        answer = _ask(request, data, deadline)
    except TimeoutError:
        say("towerctl", f"{flavor} hook passed its deadline; failing closed")
        return EXIT_BLOCK
    except Refused as exc:
        say("towerctl", f"{flavor} hook: {exc}; failing closed")
        return EXIT_BLOCK
    except OSError as exc:
        say("towerctl", f"{flavor} hook: the local shim daemon failed ({exc}); failing closed")
        return EXIT_BLOCK
    except KeyboardInterrupt:
        say("towerctl", f"{flavor} hook interrupted; failing closed")
        return EXIT_BLOCK
    code, out, err = answer.get("code"), answer.get("stdout"), answer.get("stderr")
    if (
        isinstance(code, bool)
        or not isinstance(code, int)
        or not isinstance(out, str)
        or not isinstance(err, str)
    ):
        say("towerctl", f"{flavor} hook: the local shim daemon sent a malformed answer; failing closed")
        return EXIT_BLOCK
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return code
