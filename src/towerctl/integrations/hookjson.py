"""The hook wire format Claude Code and Codex CLI share, and their settings files.

Both agents run a command per tool call, write one JSON object on its stdin
(``tool_name``, ``tool_input``, ``session_id``, ``tool_use_id``, ``cwd``,
``hook_event_name`` …) and read ``{"hookSpecificOutput": {…,
"permissionDecision": "allow"|"deny", "permissionDecisionReason": …}}`` back
on exit 0. Pure functions only: parsing, ids, output, settings merging; the
I/O lives in :mod:`towerctl.integrations.hooks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent_shim.protocol import Action

#: Refuse absurd inputs before parsing them (a Write of a huge file still fits).
MAX_INPUT_BYTES: Final = 32 * 1024 * 1024
#: Room for a prefix inside the protocol's 80-character id limit.
_ID_OK: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,72}$")

PRE_EVENT: Final = "PreToolUse"
POST_EVENTS: Final = frozenset({"PostToolUse", "PostToolUseFailure"})


class HookInputError(ValueError):
    """The hook's stdin is not a hook payload we can judge: the caller fails closed."""


@dataclass(frozen=True, slots=True)
class HookInput:
    """The fields of a hook payload towerctl uses; the rest is ignored on purpose."""

    event: str
    tool_name: str
    tool_input: Any
    session_id: str
    tool_use_id: str
    cwd: str
    tool_response: Any = None
    error: str = ""


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HookInputError(f"{name} must be a string, not {type(value).__name__}")
    return value


def parse_input(data: bytes) -> HookInput:
    """Parse and check one hook payload; raise :class:`HookInputError` with the reason."""
    if len(data) > MAX_INPUT_BYTES:
        raise HookInputError(f"hook input larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    if not data.strip():
        raise HookInputError("no hook JSON on stdin")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HookInputError(f"hook input is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HookInputError("hook input must be a JSON object")
    name = _text(obj, "tool_name")
    if not name:
        raise HookInputError("hook input has no tool_name")
    error = obj.get("error", "")
    return HookInput(
        event=_text(obj, "hook_event_name"),
        tool_name=name,
        tool_input=obj.get("tool_input", {}),
        session_id=_text(obj, "session_id"),
        tool_use_id=_text(obj, "tool_use_id"),
        cwd=_text(obj, "cwd"),
        tool_response=obj.get("tool_response"),
        error=error if isinstance(error, str) else compact(error),
    )


def derived_id(prefix: str, raw: str) -> str:
    """A protocol-valid id for an agent-supplied one, the same in every process.

    The PreToolUse and PostToolUse hooks run as separate processes, so the
    action id must be a function of ``tool_use_id`` alone for the two to meet.
    """
    if _ID_OK.match(raw) and len(prefix) + 1 + len(raw) <= 80:
        return f"{prefix}-{raw}"
    return f"{prefix}-h{hashlib.sha256(raw.encode('utf-8')).hexdigest()[:40]}"


def hook_action(inp: HookInput, prefix: str, fields: tuple[str, str, str, str, str]) -> Action:
    """The Action for a hook payload, from ``(kind, command, target, reason, dry_run)``.

    The id derives from ``tool_use_id`` (see ``derived_id``) so that the Pre and
    Post hooks, separate processes, name the same action.
    """
    kind, command, target, reason, dry_run = fields
    if inp.tool_use_id:
        action_id = derived_id(prefix, inp.tool_use_id)
    else:
        from agent_shim import new_action_id

        action_id = f"{prefix}-{new_action_id()}"
    return Action(
        action_id=action_id,
        kind=kind,  # type: ignore[arg-type]  # validated by the model
        command=command,
        target=target[:512],
        cwd=inp.cwd[:4096],
        reason=reason[:4096],
        dry_run=dry_run[:65536],
    )


def compact(value: Any) -> str:
    """Deterministic compact JSON (sorted keys), so equal inputs give equal commands."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters not shown]"


def quote(path: str) -> str:
    return shlex.quote(path) if path else "''"


def pre_output(decision: str, reason: str, *, stop_reason: str = "") -> str:
    """The PreToolUse answer; ``stop_reason`` also ends the agent's turn (a killed session)."""
    out: dict[str, Any] = {
        "hookSpecificOutput": {
            "hookEventName": PRE_EVENT,
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    }
    if stop_reason:
        out["continue"] = False
        out["stopReason"] = stop_reason
    return json.dumps(out, ensure_ascii=False)


# ------------------------------------------------------------------ settings


def towerctl_command() -> str:
    """How the agent should start this towerctl: an absolute path, so its PATH cannot matter."""
    beside = Path(sys.executable).with_name("towerctl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    found = shutil.which("towerctl")
    if found:
        return shlex.quote(str(Path(found).resolve()))
    return f"{shlex.quote(sys.executable)} -P -m towerctl.cli"  # -P: the project's cwd stays off sys.path


def hook_entry(command: str, timeout_s: int, matcher: str | None) -> dict[str, Any]:
    group: dict[str, Any] = {"hooks": [{"type": "command", "command": command, "timeout": timeout_s}]}
    if matcher is not None:
        group = {"matcher": matcher, **group}
    return group


def merge_hooks(
    settings: dict[str, Any], wanted: dict[str, list[dict[str, Any]]], is_ours: Callable[[str], bool]
) -> dict[str, Any]:
    """``settings`` with ``wanted`` hook groups in place of any earlier towerctl ones.

    Everything else (other hooks, other keys) is kept as it was, so installing
    twice changes nothing and never clobbers what the user configured.
    """
    merged: dict[str, Any] = json.loads(json.dumps(settings))
    hooks = merged.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise ValueError("'hooks' in the settings file is not an object")
    for event, groups in wanted.items():
        existing = hooks.get(event, [])
        if not isinstance(existing, list):
            raise ValueError(f"'hooks.{event}' in the settings file is not a list")
        kept: list[Any] = []
        for group in existing:
            if isinstance(group, dict) and isinstance(group.get("hooks"), list):
                inner = [
                    h
                    for h in group["hooks"]
                    if not (isinstance(h, dict) and is_ours(str(h.get("command", ""))))
                ]
                if not inner:
                    continue
                group = {**group, "hooks": inner}
            kept.append(group)
        hooks[event] = [*kept, *groups]
    return merged


def install_json(
    path: Path, wanted: dict[str, list[dict[str, Any]]], is_ours: Callable[[str], bool]
) -> Path | None:
    """Merge ``wanted`` into the JSON settings file at ``path``; return the backup made.

    The old file is copied aside first (same mode) and the new one replaces it
    atomically, so a crash leaves either the old or the new file, never half.
    """
    current: dict[str, Any] = {}
    backup: Path | None = None
    mode = 0o600
    if path.exists():
        raw = path.read_text(encoding="utf-8")
        if raw.strip():
            loaded = json.loads(raw)
            if not isinstance(loaded, dict):
                raise ValueError(f"{path} does not hold a JSON object")
            current = loaded
        mode = path.stat().st_mode & 0o777
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            n += 1
        shutil.copy2(path, backup)
    merged = merge_hooks(current, wanted, is_ours)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.towerctl-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return backup
