"""A tiny real MCP server (the official SDK's ``MCPServer``) for the MCP gate tests.

Run as a script it serves stdio; imported, :func:`build` returns the server for
in-process use (no ``from __future__ import annotations``: the SDK evaluates
the tools' annotations at registration). Every tool call it receives is
appended as one JSON line to the file named by ``MCP_FIXTURE_LOG`` (or
``build(log=...)``), so a test can prove a denied call never reached it.
"""

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import anyio
from mcp.server.mcpserver import ListRoots, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ListRootsResult

NAME = "fixture-db"


def ask_roots() -> ListRoots:
    """A resolver: the server asks its client for roots (``roots/list``)."""
    return ListRoots()


def build(log: str | Path | None = None) -> MCPServer:
    server = MCPServer(NAME, version="1.0")
    log_path = str(log) if log is not None else os.environ.get("MCP_FIXTURE_LOG", "")

    def record(tool: str, args: dict[str, object]) -> None:
        if log_path:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"tool": tool, "args": args}, sort_keys=True) + "\n")

    @server.tool(description="Read a file and return its contents.")
    def read_file(path: str) -> str:
        record("read_file", {"path": path})
        return f"contents of {path}"

    @server.tool(description="Drop a database table.")
    def delete_table(table: str) -> str:
        record("delete_table", {"table": table})
        return f"dropped {table}"

    @server.tool(description="Echo the text back.")
    def echo(text: str, times: int = 1) -> str:
        record("echo", {"text": text, "times": times})
        return " ".join([text] * times)

    @server.tool(description="Never answers (a call that outlives its caller's patience).")
    async def hang(reason: str) -> str:
        record("hang", {"reason": reason})
        await anyio.Event().wait()
        return "unreachable"

    @server.tool(description="Always fails.")
    def broken_read(path: str) -> str:
        record("broken_read", {"path": path})
        raise ToolError(f"cannot read {path}: disk on fire")

    @server.tool(description="List the client's roots (the server asks the client: roots/list).")
    def list_roots(roots: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
        record("list_roots", {})
        return f"{len(roots.roots)} roots"

    return server


def calls(log: str | Path) -> list[dict[str, object]]:
    """The calls the fixture received, in order."""
    try:
        text = Path(log).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else None).run()
