"""Claude Code's tool calls as tower actions (pure mapping, no I/O).

The mapping is deterministic, a function of the hook payload alone, because
the PreToolUse and PostToolUse hooks are separate processes that must agree
on the action they are talking about (the PostToolUse hook prefers the copy
the PreToolUse hook left behind, and recomputes only when that is gone).

========================  ======  ==========================================
Claude Code tool          kind    command the classifier judges
========================  ======  ==========================================
Bash                      shell   ``tool_input.command`` as is
Write                     file    ``write PATH`` (size, digest, preview in dry_run)
Edit / MultiEdit          file    ``edit PATH`` (old → new in dry_run)
NotebookEdit              file    ``edit PATH`` (new cell source in dry_run)
Read / Glob / Grep / LS   file    ``read PATH`` / ``glob PAT [PATH]`` / …
WebFetch                  http    ``GET URL``
``mcp__server__tool``     tool    ``server.tool {compact JSON args}``
anything else             tool    ``Name {compact JSON input}``
========================  ======  ==========================================
"""

from __future__ import annotations

import hashlib
from typing import Any, Final
from urllib.parse import urlsplit

from agent_shim.protocol import Action
from agent_shim.types import Kind
from towerctl.integrations.hookjson import HookInput, clip, compact, hook_action, quote

AGENT: Final = "claude-code"
PREFIX: Final = "cc"
#: How much of a written file or an edit the approver sees in the dry run.
PREVIEW_CHARS: Final = 6000
#: Claude Code's own bookkeeping tools: they touch nothing outside Claude's
#: process (the subagent a Task starts has its tool calls hooked one by one),
#: so they are left to Claude's own permission flow rather than filling the
#: approval queue with to-do list updates. ``--all-tools`` sends them too.
INTERNAL_TOOLS: Final = frozenset(
    {
        "TodoWrite",
        "TodoRead",
        "ExitPlanMode",
        "EnterPlanMode",
        "BashOutput",
        "AskUserQuestion",
        "Task",
        "Agent",
    }
)
_READERS: Final = {"Read": "read", "LS": "ls"}


def _s(data: Any, name: str) -> str:
    value = data.get(name, "") if isinstance(data, dict) else ""
    return value if isinstance(value, str) else ("" if value is None else compact(value))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _write_preview(path: str, content: str) -> str:
    return (
        f"write {len(content)} characters to {path} (sha256 {_digest(content)}…)\n"
        f"{clip(content, PREVIEW_CHARS)}"
    )


def _edit_preview(edits: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    budget = PREVIEW_CHARS
    for n, edit in enumerate(edits, 1):
        old, new = _s(edit, "old_string"), _s(edit, "new_string")
        scope = "every occurrence" if edit.get("replace_all") is True else "one occurrence"
        share = max(200, budget // 2)
        parts.append(f"edit {n} ({scope}):\n--- old\n{clip(old, share)}\n+++ new\n{clip(new, share)}")
        budget = max(0, budget - len(parts[-1]))
    return "\n".join(parts)


def split_mcp(name: str) -> tuple[str, str] | None:
    """``mcp__github__create_issue`` → ``("github", "create_issue")``."""
    if not name.startswith("mcp__"):
        return None
    server, sep, tool = name[5:].partition("__")
    if not sep or not server or not tool:
        return None
    return server, tool


def tool_action_fields(name: str, tool_input: Any) -> tuple[Kind, str, str, str, str]:
    """(kind, command, target, reason, dry_run) for one tool call; shared with Codex."""
    data = tool_input if isinstance(tool_input, dict) else {}
    if name == "Bash":
        return "shell", _s(data, "command"), "", _s(data, "description"), ""
    if name == "Write":
        path = _s(data, "file_path")
        return "file", f"write {quote(path)}", path, "", _write_preview(path, _s(data, "content"))
    if name == "Edit":
        path = _s(data, "file_path")
        return "file", f"edit {quote(path)}", path, "", _edit_preview([data])
    if name == "MultiEdit":
        path = _s(data, "file_path")
        edits = (
            [e for e in data.get("edits", []) if isinstance(e, dict)]
            if isinstance(data.get("edits"), list)
            else []
        )
        return "file", f"edit {quote(path)}", path, "", _edit_preview(edits)
    if name == "NotebookEdit":
        path = _s(data, "notebook_path")
        mode = _s(data, "edit_mode") or "replace"
        cell = _s(data, "cell_id")
        preview = f"{mode} cell {cell or '(new)'}:\n{clip(_s(data, 'new_source'), PREVIEW_CHARS)}"
        return "file", f"edit {quote(path)}", path, "", preview
    if name in _READERS:
        path = _s(data, "file_path") or _s(data, "path")
        return "file", f"{_READERS[name]} {quote(path)}", path, "", ""
    if name in ("Glob", "Grep"):
        path = _s(data, "path")
        command = f"{name.lower()} {quote(_s(data, 'pattern'))}" + (f" {quote(path)}" if path else "")
        return "file", command, path, "", ""
    if name == "WebFetch":
        url = _s(data, "url")
        return "http", f"GET {url}", urlsplit(url).netloc, clip(_s(data, "prompt"), 2000), ""
    mcp = split_mcp(name)
    if mcp is not None:
        server, tool = mcp
        return "tool", f"{server}.{tool} {compact(tool_input)}", f"mcp:{server}", "", ""
    return "tool", f"{name} {compact(tool_input)}", "", "", ""


def to_action(inp: HookInput, *, prefix: str = PREFIX) -> Action:
    """The action a PreToolUse payload proposes (raises pydantic's error if it cannot be one).

    The action id comes from ``tool_use_id`` so that PostToolUse, and anyone
    reading the audit log next to Claude's transcript, can find it.
    """
    return hook_action(inp, prefix, tool_action_fields(inp.tool_name, inp.tool_input))


def is_ours(command: str) -> bool:
    return "hook claude-code" in command


def settings_snippet(towerctl: str, timeout_s: int) -> dict[str, list[dict[str, Any]]]:
    """The ``hooks`` entries for ``settings.json``.

    ``|| exit 2``: if towerctl cannot even start (moved venv, broken install),
    the shell's 126/127 would let the call proceed; 2 blocks it. The hook's own
    ``--timeout`` stays 5 s under Claude Code's, which would otherwise let the
    call proceed when it fires.
    """
    from towerctl.integrations.hookjson import hook_entry

    pre = f"{towerctl} hook claude-code --timeout {timeout_s} || exit 2"
    post = f"{towerctl} hook claude-code --post"
    return {
        "PreToolUse": [hook_entry(pre, timeout_s + 5, "*")],
        "PostToolUse": [hook_entry(post, 30, "*")],
        "PostToolUseFailure": [hook_entry(post, 30, "*")],
    }
