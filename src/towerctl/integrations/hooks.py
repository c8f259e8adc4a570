"""The one-shot hook runner Claude Code and Codex CLI share.

PreToolUse: parse the payload, map it to an action, ask the tower through the
real shim under the agent's own session, answer allow/deny on stdout, exit 0.
Every failure (bad input, no token, hub down, a deadline, a bug) exits 2 with
the reason on stderr, because exit 2 is the only failure both agents treat as
"block": a crash, exit 1 or a hook timeout lets the tool call proceed.

PostToolUse / PostToolUseFailure: report what happened for that
``tool_use_id``, so the audit log reads proposal → decision → result. The
PreToolUse hook leaves a small hand-over file (0600, in the private runtime
directory) with the exact action it proposed and when it was admitted; the
PostToolUse hook reads and removes it, and recomputes the action from the
payload only when it is missing (the mapping is deterministic). The file is
what keeps the digest right when Claude's working directory moved between the
two hooks.

The tower never runs the tool: "allow" means the agent runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final

from towerctl.integrations import runtime
from towerctl.integrations.hookjson import (
    MAX_INPUT_BYTES,
    POST_EVENTS,
    PRE_EVENT,
    HookInput,
    HookInputError,
    compact,
    derived_id,
    parse_input,
    pre_output,
)

if TYPE_CHECKING:
    from agent_shim import Action, Approved, Shim

EXIT_BLOCK: Final = 2
EXIT_POST_FAILED: Final = 1
#: The PostToolUse hook has nothing to wait for but a connection.
POST_DEADLINE_S: Final = 25.0
_HANDOVER_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Flavor:
    """What differs between the agents: names, id prefix and the tool mapping."""

    name: str
    agent: str
    prefix: str
    to_action: Callable[[HookInput], Action]
    internal_tools: frozenset[str]


def claude_code() -> Flavor:
    from towerctl.integrations import claude_code as cc

    return Flavor("claude-code", cc.AGENT, cc.PREFIX, cc.to_action, cc.INTERNAL_TOOLS)


def codex() -> Flavor:
    from towerctl.integrations import codex as cx

    return Flavor("codex", cx.AGENT, cx.PREFIX, cx.to_action, cx.INTERNAL_TOOLS)


@dataclass(frozen=True, slots=True)
class HookSettings:
    url: str
    token: str
    env: str
    agent: str
    timeout: float
    connect_timeout: float
    all_tools: bool


class HookFailure(Exception):
    """Fail closed with this reason (exit 2 on PreToolUse)."""


def session_for(flavor: Flavor, inp: HookInput, env: str) -> str | None:
    """One agent session = one tower session per environment, derived from the agent's id.

    The environment is part of the id because a tower session belongs to one
    environment: re-running the agent under another TOWER_ENV must not collide.
    """
    return derived_id(f"{flavor.prefix}-{env}", inp.session_id) if inp.session_id else None


# ----------------------------------------------------------------- hand-over


def _handover_path(flavor: Flavor, inp: HookInput) -> str:
    name = runtime.key("handover", flavor.prefix, inp.session_id, inp.tool_use_id)
    return str(runtime.private_dir() / f"{name}.json")


def save_handover(
    flavor: Flavor, inp: HookInput, approved: Approved, session_id: str | None, env: str
) -> None:
    """Leave the admitted action for the PostToolUse hook (best effort: it can recompute)."""
    if not inp.tool_use_id:
        return
    body = {
        "v": _HANDOVER_VERSION,
        "action": approved.action.model_dump(mode="json"),
        "digest": approved.digest,
        "session_id": session_id,
        "env": env,
        "admitted_ns": time.time_ns(),
    }
    with contextlib.suppress(OSError, runtime.RuntimeProblem):
        path = _handover_path(flavor, inp)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(body))
        runtime.sweep(runtime.private_dir())


def take_handover(flavor: Flavor, inp: HookInput) -> dict[str, Any] | None:
    """Read and remove the PreToolUse hook's hand-over file, if it is there and sound."""
    from agent_shim.protocol import Action

    try:
        path = _handover_path(flavor, inp)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r", encoding="utf-8") as fh:
            body = json.loads(fh.read(1 << 20))
        os.unlink(path)
    except (OSError, ValueError, runtime.RuntimeProblem):
        return None
    if not isinstance(body, dict) or body.get("v") != _HANDOVER_VERSION:
        return None
    try:
        action = Action.model_validate(body["action"])
    except (KeyError, ValueError):
        return None
    if action.digest() != body.get("digest"):
        return None
    return {**body, "action": action}


# ----------------------------------------------------------------- PreToolUse


def _deny(reason: str, *, stop: str = "") -> str:
    return pre_output("deny", reason[:4000], stop_reason=stop)


async def _pre(flavor: Flavor, inp: HookInput, cfg: HookSettings, deadline: float) -> str:
    from pydantic import ValidationError

    from agent_shim import ActionDenied, SessionKilled, Shim

    if inp.tool_name in flavor.internal_tools and not cfg.all_tools:
        return "{}"  # no opinion: the agent's own permission flow applies
    try:
        action = flavor.to_action(inp)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return _deny(f"towerctl: this {inp.tool_name} call cannot be put to review ({problems}); denied")
    session_id = session_for(flavor, inp, cfg.env)
    async with runtime.session_lock(session_id or action.action_id, deadline):
        shim = Shim(
            cfg.url,
            cfg.token,
            agent=cfg.agent,
            env=cfg.env,
            session_id=session_id,
            connect_timeout=max(0.1, min(cfg.connect_timeout, deadline - time.monotonic())),
            end_session_on_close=False,  # the agent's session goes on after this tool call
        )
        answer = ""
        allowed = False
        try:
            try:
                await runtime.connect(shim, max(0.1, min(cfg.connect_timeout, deadline - time.monotonic())))
            except runtime.Unreachable as exc:
                raise HookFailure(f"tower unreachable at {cfg.url} ({exc}); failing closed") from None
            try:
                approved = await asyncio.wait_for(shim.admit(action), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                why = "the session is paused by an operator" if shim.paused else "no operator decided"
                answer = _deny(
                    f"towerctl: {why} within the hook's {cfg.timeout:g}s deadline; denied (fail closed)"
                )
            except SessionKilled as exc:
                who = f" by {exc.by}" if exc.by else ""
                answer = _deny(
                    f"towerctl: session killed{who}: {exc.reason}",
                    stop=f"towerctl: this session was killed{who}: {exc.reason}",
                )
            except ActionDenied as exc:
                who = f" by {exc.by}" if exc.by else ""
                answer = _deny(f"towerctl: denied{who}: {exc.reason}")
            else:
                if approved.decision is not None:
                    said = f": {approved.decision.reason}" if approved.decision.reason else ""
                    why = f"approved by {approved.decision.operator}{said}"
                else:
                    why = f"allowed ({shim.gate.judge(action).explanation})"
                save_handover(flavor, inp, approved, session_id, cfg.env)
                answer = pre_output("allow", f"towerctl: {why}"[:4000])
                allowed = True
        finally:
            delivered = await runtime.flush(shim)
        if allowed and not delivered:
            raise HookFailure("the tower did not receive the proposal; refusing to let it run unrecorded")
        return answer


# ---------------------------------------------------------------- PostToolUse


def _outcome(inp: HookInput) -> tuple[int | None, str, bool]:
    """(exit code if the agent says, output text, failed) from the tool's response."""
    resp = inp.tool_response
    failed = inp.event == "PostToolUseFailure"
    code: int | None = None
    if isinstance(resp, dict):
        # Not "code": WebFetch answers carry the HTTP status there.
        for k in ("exit_code", "exitCode", "returncode"):
            if isinstance(resp.get(k), int) and not isinstance(resp.get(k), bool):
                code = int(resp[k])
                break
        if resp.get("interrupted") is True or resp.get("success") is False:
            failed = True
        if "stdout" in resp or "stderr" in resp:
            out, err = str(resp.get("stdout") or ""), str(resp.get("stderr") or "")
            return code, out + (("\n" if out else "") + err if err else ""), failed or bool(code)
    text = resp if isinstance(resp, str) else ("" if resp is None else compact(resp))
    if failed and inp.error:
        text = f"{text}\n{inp.error}" if text else inp.error
    return code, text, failed or bool(code)


async def _post(flavor: Flavor, inp: HookInput, cfg: HookSettings, deadline: float) -> None:
    from agent_shim import Approved, Shim

    if not inp.tool_use_id:
        raise HookFailure("no tool_use_id in the payload: the outcome cannot be linked to its proposal")
    if inp.tool_name in flavor.internal_tools and not cfg.all_tools:
        return
    handed = take_handover(flavor, inp)
    if handed is not None:
        action: Action = handed["action"]
        digest = str(handed["digest"])
        session_id = handed.get("session_id")
        env = str(handed.get("env") or cfg.env)
    else:
        action = flavor.to_action(inp)
        digest = action.digest()
        session_id = session_for(flavor, inp, cfg.env)
        env = cfg.env
    approved = Approved(action=action, digest=digest, decision=None)
    if handed is not None and isinstance(handed.get("admitted_ns"), int):
        # Duration from admission to now; monotonic time is per-boot, wall time is not trusted for more.
        elapsed = max(0, time.time_ns() - int(handed["admitted_ns"]))
        approved._started_ns = time.monotonic_ns() - elapsed
    code, text, failed = _outcome(inp)
    approved.exit_code = code
    approved.output = text.encode("utf-8", "replace")
    if failed:
        approved.mark_failed()
    error = (inp.error or ("tool reported failure" if failed else ""))[:4000]
    async with runtime.session_lock(str(session_id or action.action_id), deadline):
        shim: Shim = Shim(
            cfg.url,
            cfg.token,
            agent=cfg.agent,
            env=env,
            session_id=str(session_id) if session_id else None,
            connect_timeout=max(0.1, min(cfg.connect_timeout, deadline - time.monotonic())),
            end_session_on_close=False,
        )
        try:
            try:
                await runtime.connect(shim, max(0.1, min(cfg.connect_timeout, deadline - time.monotonic())))
            except runtime.Unreachable as exc:
                raise HookFailure(f"tower unreachable at {cfg.url} ({exc}); outcome not recorded") from None
            shim.report(approved, error=error)
        finally:
            delivered = await runtime.flush(shim)
        if not delivered:
            raise HookFailure("the outcome report could not be delivered to the tower")


# --------------------------------------------------------------------- entry


def run(
    flavor: Flavor,
    cfg: HookSettings,
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    *,
    post: bool = False,
) -> int:
    """Run one hook invocation; return the exit code. Never raises.

    The event named in the payload wins over ``post``: a PreToolUse payload is
    always judged, so a hook wired to the wrong event still fails closed.
    """
    started = time.monotonic()
    runtime.quiet_shim_log()
    is_post = post
    code = EXIT_BLOCK
    timer = runtime.watchdog(
        cfg.timeout + 3.0, f"towerctl: {flavor.name} hook passed its deadline; failing closed\n", EXIT_BLOCK
    )
    try:
        try:
            inp = parse_input(stdin.read(MAX_INPUT_BYTES + 1))
        except HookInputError as exc:
            stderr.write(f"towerctl: bad {flavor.name} hook input: {exc}; failing closed\n")
            return EXIT_BLOCK
        is_post = inp.event in POST_EVENTS if inp.event else post
        if inp.event and inp.event != PRE_EVENT and not is_post:
            stderr.write(f"towerctl: {flavor.name} hook: unsupported event {inp.event!r}; failing closed\n")
            return EXIT_BLOCK
        if not cfg.token:
            raise HookFailure("no agent token (set TOWER_TOKEN or agent_token in the towerctl config)")
        if is_post:
            deadline = started + min(cfg.timeout, POST_DEADLINE_S)
            asyncio.run(_post(flavor, inp, cfg, deadline))
            code = 0
            return code
        deadline = started + cfg.timeout
        answer = asyncio.run(_pre(flavor, inp, cfg, deadline))
        stdout.write(answer + "\n")
        stdout.flush()
        code = 0
        return code
    except HookFailure as exc:
        stderr.write(f"towerctl: {exc}\n")
    except TimeoutError as exc:
        stderr.write(f"towerctl: {exc or 'deadline passed'}; failing closed\n")
    except runtime.RuntimeProblem as exc:
        stderr.write(f"towerctl: {exc}; failing closed\n")
    except BaseException as exc:  # any failure must block: never let the call through
        stderr.write(f"towerctl: {flavor.name} hook failed: {type(exc).__name__}: {exc}; failing closed\n")
    finally:
        timer.cancel()
        stderr.flush()
    return EXIT_POST_FAILED if is_post else EXIT_BLOCK
