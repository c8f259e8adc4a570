"""``towerctl mcp-gate``: an MCP server that puts the tower in front of another one.

The gate is a stdio MCP server. It starts the upstream MCP server (stdio),
lists the upstream's tools as its own, and sends every ``tools/call`` through
the shim before forwarding it::

    model ── tools/call ──▶ gate ── propose ──▶ tower (policy, operators)
                            gate ◀── verdict ──
                            gate ── tools/call (approved arguments) ──▶ upstream
                            gate ── report (result) ──▶ tower

Each call is one ``Action(kind="tool")`` whose command is
``{server}.{tool} {sorted compact JSON of the arguments}`` (the form the
classifier parses, rendered by :func:`agent_shim.tool.tool_command`) and whose
target is the upstream server's name. The arguments forwarded are parsed back
from the *approved* command text, never the caller's dict. A refusal (policy,
an operator, a timeout, a killed session, an unreachable tower) is answered as
an MCP error result (``isError: true``) carrying the reason, so the model sees
why; the upstream never receives the call.

Unlike the one-shot hooks, the gate is long-lived: one shim session for the
gate's lifetime. It still fails closed the hook way: a call made while the
shim is not connected to the tower (never welcomed, or reconnecting) is
refused rather than judged by the built-in policy, because that is the only
way to be sure the policy judging it is the operators' and that the call gets
recorded.

Requests the upstream sends back (``roots/list``, sampling, elicitation) are
answered here and never relayed or left hanging: roots with an empty list,
the others with the SDK's "not supported" error.

Only tools are proxied: the upstream's resources and prompts are not offered.

The ``mcp`` SDK (2.x) is imported only inside this module's functions, so the
rest of ``towerctl`` never pays its ~1 s import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from towerctl.integrations import runtime

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client.session import ClientRequestContext
    from mcp.server import Server
    from mcp.server.context import ServerRequestContext

    from agent_shim import Approved, Shim

#: Exit codes of :func:`serve_stdio`.
EXIT_OK: Final = 0
EXIT_UPSTREAM: Final = 1
EXIT_USAGE: Final = 2
#: The ``TOWER_*`` settings are the gate's, not the upstream's: never hand the agent token on.
_PRIVATE_PREFIX: Final = "TOWER_"
_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_.-]+")
#: Output kept for the report (the hub keeps a tail and a digest).
_MAX_OUTPUT_BYTES: Final = 1 << 20


def server_name(raw: str) -> str:
    """A name usable in a command: ``[A-Za-z0-9_.-]``, at most 64 chars, never empty."""
    clean = _NAME_BAD.sub("-", raw.strip()).strip("-.")[:64]
    return clean or "mcp"


def upstream_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The gate's environment minus ``TOWER_*``: what the upstream server is started with.

    The host passes an MCP server only what its config's ``env`` names (plus
    HOME, PATH …), so everything else here was meant for the upstream too
    (``GITHUB_TOKEN`` and the like); the tower's token was not.
    """
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(_PRIVATE_PREFIX)}


def approved_arguments(command: str, prefix: str) -> dict[str, Any]:
    """The arguments in an approved ``prefix {json}`` command; raise ``ActionDenied`` otherwise."""
    from agent_shim import ActionDenied

    head, sep, body = command.partition(" ")
    if head != prefix or not sep:
        raise ActionDenied("refused: the approved command is not this tool call", by="shim")
    try:
        args = json.loads(body)
    except ValueError:
        raise ActionDenied("refused: the approved arguments are not JSON", by="shim") from None
    if not isinstance(args, dict):
        raise ActionDenied("refused: the approved arguments are not an object", by="shim")
    return args


def _content_text(content: Sequence[Any]) -> str:
    """The result as operators see it in the report's output tail."""
    parts: list[str] = []
    for block in content:
        text = getattr(block, "text", None)
        if getattr(block, "type", None) == "text" and isinstance(text, str):
            parts.append(text)
        else:
            dump = block.model_dump(mode="json", by_alias=True, exclude_none=True)
            parts.append(json.dumps(dump, sort_keys=True, separators=(",", ":"))[:4096])
    return "\n".join(parts)


def error_result(message: str) -> mcp_types.CallToolResult:
    """An MCP error result (``isError``) the model reads as the reason.

    ``resultType`` is set explicitly: a 2026-07-28 session requires it on every
    result; the SDK drops it again for handshake-era sessions.
    """
    import mcp_types

    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=message[:8000])],
        is_error=True,
        result_type="complete",
    )


async def no_roots(context: ClientRequestContext) -> mcp_types.ListRootsResult:
    """Answer an upstream's ``roots/list`` ourselves: no roots are shared through the gate."""
    import mcp_types

    return mcp_types.ListRootsResult(roots=[])


async def _await_tower(shim: Shim, timeout: float) -> bool:
    """True once ``shim`` is connected; False after ``timeout``, or at once when the
    hub refused us for good (a bad token: waiting cannot help)."""
    deadline = time.monotonic() + timeout
    while not shim.connected:
        if shim.last_error.startswith(runtime._PERMANENT) or time.monotonic() >= deadline:
            return False
        await shim.wait_connected(min(0.05, max(0.0, deadline - time.monotonic())))
    return True


@dataclass(slots=True)
class ToolGate:
    """Judges and forwards the tool calls of one upstream MCP server.

    ``shim`` is ``None`` when no tower can supervise (no token, a bad hub
    key): every call is then refused with ``refusal`` as the reason.
    """

    upstream: Client
    shim: Shim | None
    server: str
    url: str = ""
    refusal: str = ""
    reason: str = ""
    connect_timeout: float = 3.0
    instructions: str | None = None

    # ------------------------------------------------------------- handlers

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        import mcp_types

        page = await self.upstream.list_tools(
            cursor=params.cursor if params is not None else None, cache_mode="bypass"
        )
        return mcp_types.ListToolsResult(tools=page.tools, next_cursor=page.next_cursor)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        return await self.call(params.name, dict(params.arguments or {}))

    async def call(self, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Judge one call; forward it with the approved arguments or answer the refusal."""
        from agent_shim import Action, ActionDenied, SessionKilled, new_action_id
        from agent_shim.tool import tool_command

        shim = self.shim
        if shim is None:
            return error_result(f"towerctl: denied: {self.refusal or 'no tower supervises this gate'}")
        prefix = f"{self.server}.{tool}"
        try:
            command = tool_command(prefix, arguments)
        except ActionDenied as exc:
            return error_result(f"towerctl: denied: {exc.reason}")
        if not await _await_tower(shim, self.connect_timeout):
            why = shim.last_error or f"no connection within {self.connect_timeout:g}s"
            return error_result(f"towerctl: denied: tower unreachable at {self.url} ({why}); failing closed")
        action = Action(
            action_id=new_action_id(),
            kind="tool",
            command=command,
            target=self.server,
            cwd=os.getcwd(),
            reason=self.reason,
        )
        try:
            approved = await shim.admit(action)
        except SessionKilled as exc:
            who = f" by {exc.by}" if exc.by else ""
            return error_result(f"towerctl: session killed{who}: {exc.reason}")
        except ActionDenied as exc:
            who = f" by {exc.by}" if exc.by else ""
            return error_result(f"towerctl: denied{who}: {exc.reason}")
        try:
            approved.verify()
            sent = approved_arguments(approved.action.command, prefix)
        except ActionDenied as exc:
            approved.mark_failed()
            shim.report(approved, error=exc.reason)
            return error_result(f"towerctl: {exc.reason}")
        return await self._forward(shim, approved, tool, sent)

    async def _forward(
        self, shim: Shim, approved: Approved, tool: str, arguments: dict[str, Any]
    ) -> mcp_types.CallToolResult:
        import mcp_types

        try:
            result = await self.upstream.call_tool(tool, arguments)
        except Exception as exc:  # the upstream failed or went away: a failed outcome, reported
            message = f"{type(exc).__name__}: {exc}"[:4000]
            approved.set_result(1, message)
            shim.report(approved, error=f"upstream {self.server} failed: {message}")
            return error_result(f"towerctl: upstream {self.server} failed: {message}")
        except BaseException:  # cancelled by the host (its timeout) or shutdown: the outcome is unknown
            approved.mark_failed()
            shim.report(approved, error="the call was cancelled before the upstream answered")
            raise
        output = _content_text(result.content).encode("utf-8", "replace")[-_MAX_OUTPUT_BYTES:]
        approved.set_result(1 if result.is_error else 0, output)
        shim.report(approved, error="the tool returned an error result" if result.is_error else "")
        return mcp_types.CallToolResult(
            content=result.content,
            structured_content=result.structured_content,
            is_error=result.is_error,
        )

    # --------------------------------------------------------------- server

    def build_server(self) -> Server[Any]:
        """The low-level MCP server offering the upstream's tools, every call gated."""
        from mcp.server import Server

        return Server(
            f"{self.server} (via towerctl)",
            version="1",
            instructions=self.instructions,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )


# ------------------------------------------------------------------- process


@dataclass(frozen=True, slots=True)
class GateSettings:
    url: str
    token: str
    env: str
    #: ``None``: ``mcp-{server}``.
    agent: str | None
    #: ``None``: the upstream's own name (its ``serverInfo``), else the command's base name.
    name: str | None = None
    hub_key: str = ""
    connect_timeout: float = 5.0
    reason: str = ""


def _make_shim(cfg: GateSettings, agent: str) -> tuple[Shim | None, str]:
    from agent_shim import Shim

    if not cfg.token:
        return None, "no agent token (pass --token, or set TOWER_TOKEN in the server config's env)"
    try:
        shim = Shim(
            cfg.url,
            cfg.token,
            agent=agent,
            env=cfg.env,
            connect_timeout=cfg.connect_timeout,
            hub_key=cfg.hub_key or None,
        )
    except ValueError as exc:
        return None, f"bad hub key: {exc}"
    return shim, ""


async def serve_stdio(cfg: GateSettings, upstream_argv: Sequence[str]) -> int:
    """Run the gate on this process's stdin/stdout until the host closes it.

    The upstream is started first (its name is needed for every command);
    the shim connects in the background meanwhile, and calls made before it
    is welcomed wait up to ``connect_timeout`` for it.
    """
    from mcp import Client, StdioServerParameters
    from mcp.server.stdio import stdio_server

    runtime.quiet_shim_log()
    params = StdioServerParameters(
        command=upstream_argv[0], args=list(upstream_argv[1:]), env=upstream_env(), cwd=os.getcwd()
    )
    client = Client(params, list_roots_callback=no_roots, cache=None)
    async with contextlib.AsyncExitStack() as stack:
        try:
            upstream = await stack.enter_async_context(client)
        except Exception as exc:
            why = describe(exc)
            print(f"towerctl mcp-gate: cannot start the upstream {upstream_argv[0]}: {why}", file=sys.stderr)
            return EXIT_UPSTREAM
        info = upstream.server_info
        name = server_name(cfg.name or (info.name if info is not None else "") or Path(upstream_argv[0]).name)
        shim, refusal = _make_shim(cfg, cfg.agent or f"mcp-{name}")
        if shim is not None:
            stack.push_async_callback(shim.close)
            starting = asyncio.create_task(shim.start())
            stack.push_async_callback(_cancel, starting)
        gate = ToolGate(
            upstream=upstream,
            shim=shim,
            server=name,
            url=cfg.url,
            refusal=refusal,
            reason=cfg.reason,
            connect_timeout=cfg.connect_timeout,
            instructions=upstream.instructions,
        )
        server = gate.build_server()
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    return EXIT_OK


def describe(exc: BaseException) -> str:
    """The innermost errors of ``exc`` (anyio wraps them in exception groups), for a person."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions[:3])
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
