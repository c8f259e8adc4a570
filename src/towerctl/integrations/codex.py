"""Codex CLI's tool calls as tower actions (pure mapping, no I/O).

Codex's hooks speak Claude Code's format (same stdin fields, same
``hookSpecificOutput`` answer), so this module only adds what differs: its
shell tool may carry an argv list, and file edits arrive as ``apply_patch``
with the whole patch in ``tool_input.command``. The patch's
``*** Add/Update/Delete File:`` headers give the paths; the worst operation
names the verb (``delete`` > ``edit`` > ``write``), so the classifier judges
the patch by the most dangerous thing it does, and the approver reads the
patch itself in the dry run.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Final

from agent_shim.protocol import Action
from agent_shim.types import Kind
from towerctl.integrations.claude_code import tool_action_fields
from towerctl.integrations.hookjson import HookInput, clip, compact, hook_action, hook_entry, quote

AGENT: Final = "codex"
PREFIX: Final = "cx"
INTERNAL_TOOLS: Final = frozenset({"update_plan", "view_image"})
_SHELL_TOOLS: Final = frozenset(
    {"Bash", "shell", "local_shell", "exec_command", "shell_command", "container.exec"}
)
_PATCH_OP: Final = re.compile(r"^\*\*\* (Add|Update|Delete) File: (.+?)\s*$|^\*\*\* Move to: (.+?)\s*$", re.M)


def patch_paths(patch: str) -> tuple[str, list[str]]:
    """(verb, paths) of an ``apply_patch`` body; the verb is its most dangerous operation."""
    verb = "write"
    paths: list[str] = []
    for m in _PATCH_OP.finditer(patch):
        op, path = (m.group(1), m.group(2)) if m.group(1) else ("Move", m.group(3))
        if op == "Delete":
            verb = "delete"
        elif op in ("Update", "Move") and verb != "delete":
            verb = "edit"
        if path not in paths:
            paths.append(path)
    return verb, paths


def _command_text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return shlex.join(value)
    return value if isinstance(value, str) else ("" if value is None else compact(value))


def codex_fields(name: str, tool_input: Any) -> tuple[Kind, str, str, str, str]:
    """(kind, command, target, reason, dry_run) for one Codex tool call."""
    data = tool_input if isinstance(tool_input, dict) else {}
    if name == "apply_patch":
        patch = _command_text(data.get("command", data.get("input", data.get("patch", ""))))
        verb, paths = patch_paths(patch)
        command = f"{verb} " + (" ".join(quote(p) for p in paths) if paths else "''")
        return "file", command, (paths[0] if paths else ""), "", clip(patch, 60000)
    if name in _SHELL_TOOLS:
        reason = data.get("justification", "")
        return (
            "shell",
            _command_text(data.get("command", "")),
            "",
            reason if isinstance(reason, str) else "",
            "",
        )
    return tool_action_fields(name, tool_input)


def to_action(inp: HookInput, *, prefix: str = PREFIX) -> Action:
    return hook_action(inp, prefix, codex_fields(inp.tool_name, inp.tool_input))


def is_ours(command: str) -> bool:
    return "hook codex" in command


def hooks_snippet(towerctl: str, timeout_s: int) -> dict[str, list[dict[str, Any]]]:
    """``hooks.json`` entries; no matcher means every tool (Bash, apply_patch, MCP)."""
    pre = f"{towerctl} hook codex --timeout {timeout_s} || exit 2"
    post = f"{towerctl} hook codex --post"
    return {
        "PreToolUse": [hook_entry(pre, timeout_s + 5, None)],
        "PostToolUse": [hook_entry(post, 30, None)],
    }
