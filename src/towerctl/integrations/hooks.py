"""The hook runner Claude Code and Codex CLI share.

PreToolUse: parse the payload, map it to an action, ask the tower through the
real shim under the agent's own session, answer allow/deny on stdout, exit 0.
:func:`handle` does it for one payload wherever it runs: in the hook's own
process (:func:`run`, ``TOWER_NO_DAEMON=1``) or in the local shim daemon
(:mod:`towerctl.localshim.hookserve`), which differ only in where the shim
comes from (:mod:`towerctl.integrations.hooksession`).
Every failure (bad input, no token, hub down, a deadline, a bug) exits 2 with
the reason on stderr, because exit 2 is the only failure both agents treat as
"block": a crash, exit 1 or a hook timeout lets the tool call proceed.

PostToolUse / PostToolUseFailure: report what happened for that
``tool_use_id``, so the audit log reads proposal → decision → result, with
the action the PreToolUse call left in a hand-over file.

The tower never runs the tool: "allow" means the agent runs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

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
from towerctl.integrations.hooksession import Connector, OneShot, save_handover, take_handover

if TYPE_CHECKING:
    from agent_shim import Action

EXIT_BLOCK: Final = 2
EXIT_POST_FAILED: Final = 1
#: The PostToolUse hook has nothing to wait for but a connection.
POST_DEADLINE_S: Final = 25.0


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
    #: Pinned hub key ("" = ``TOWER_HUB_KEY`` or trust on first use) and CA file for ``wss://``.
    hub_key: str = ""
    ca: str = ""


@dataclass(frozen=True, slots=True)
class HookResult:
    """What one hook invocation prints and how it exits."""

    code: int
    stdout: str = ""
    stderr: str = ""


class HookFailure(Exception):
    """Fail closed with this reason (exit 2 on PreToolUse)."""


def session_for(flavor: Flavor, inp: HookInput, env: str) -> str | None:
    """One agent session = one tower session per environment, derived from the agent's id.

    The environment is part of the id because a tower session belongs to one
    environment: re-running the agent under another TOWER_ENV must not collide.
    """
    return derived_id(f"{flavor.prefix}-{env}", inp.session_id) if inp.session_id else None


# ----------------------------------------------------------------- PreToolUse


def _deny(reason: str, *, stop: str = "") -> str:
    return pre_output("deny", reason[:4000], stop_reason=stop)


async def _pre(
    flavor: Flavor, inp: HookInput, cfg: HookSettings, deadline: float, connector: Connector
) -> str:
    from pydantic import ValidationError

    from agent_shim import ActionDenied, SessionKilled

    if inp.tool_name in flavor.internal_tools and not cfg.all_tools:
        return "{}"  # no opinion: the agent's own permission flow applies
    try:
        action = flavor.to_action(inp)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return _deny(f"towerctl: this {inp.tool_name} call cannot be put to review ({problems}); denied")
    session_id = session_for(flavor, inp, cfg.env)
    async with connector.lock(session_id or action.action_id, deadline):
        try:
            shim = await connector.open(cfg, cfg.env, session_id, _connect_budget(cfg, deadline))
        except runtime.Unreachable as exc:
            raise HookFailure(f"tower unreachable at {cfg.url} ({exc}); failing closed") from None
        answer = ""
        allowed = False
        try:
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
                save_handover(flavor.prefix, inp, approved, session_id, cfg.env)
                answer = pre_output("allow", f"towerctl: {why}"[:4000])
                allowed = True
        finally:
            delivered = await connector.release(shim)
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


async def _post(
    flavor: Flavor, inp: HookInput, cfg: HookSettings, deadline: float, connector: Connector
) -> None:
    from agent_shim import Approved

    if not inp.tool_use_id:
        raise HookFailure("no tool_use_id in the payload: the outcome cannot be linked to its proposal")
    if inp.tool_name in flavor.internal_tools and not cfg.all_tools:
        return
    handed = take_handover(flavor.prefix, inp)
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
    async with connector.lock(str(session_id or action.action_id), deadline):
        try:
            shim = await connector.open(
                cfg, env, str(session_id) if session_id else None, _connect_budget(cfg, deadline)
            )
        except runtime.Unreachable as exc:
            raise HookFailure(f"tower unreachable at {cfg.url} ({exc}); outcome not recorded") from None
        try:
            shim.report(approved, error=error)
        finally:
            delivered = await connector.release(shim)
        if not delivered:
            raise HookFailure("the outcome report could not be delivered to the tower")


# --------------------------------------------------------------------- entry


def _connect_budget(cfg: HookSettings, deadline: float) -> float:
    return max(0.1, min(cfg.connect_timeout, deadline - time.monotonic()))


async def handle(
    flavor: Flavor,
    cfg: HookSettings,
    data: bytes,
    *,
    post: bool = False,
    started: float | None = None,
    connector: Connector | None = None,
) -> HookResult:
    """Judge (PreToolUse) or report (PostToolUse) one hook payload. Never raises
    (but lets cancellation through).

    The event named in the payload wins over ``post``: a PreToolUse payload is
    always judged, so a hook wired to the wrong event still fails closed.
    Deadlines count from ``started`` (monotonic; default now).
    """
    started = time.monotonic() if started is None else started
    connector = OneShot() if connector is None else connector
    is_post = post
    try:
        try:
            inp = parse_input(data)
        except HookInputError as exc:
            return HookResult(
                EXIT_BLOCK, stderr=f"towerctl: bad {flavor.name} hook input: {exc}; failing closed\n"
            )
        is_post = inp.event in POST_EVENTS if inp.event else post
        if inp.event and inp.event != PRE_EVENT and not is_post:
            return HookResult(
                EXIT_BLOCK,
                stderr=f"towerctl: {flavor.name} hook: unsupported event {inp.event!r}; failing closed\n",
            )
        if not cfg.token:
            raise HookFailure("no agent token (set TOWER_TOKEN or agent_token in the towerctl config)")
        if is_post:
            await _post(flavor, inp, cfg, started + min(cfg.timeout, POST_DEADLINE_S), connector)
            return HookResult(0)
        answer = await _pre(flavor, inp, cfg, started + cfg.timeout, connector)
        return HookResult(0, stdout=answer + "\n")
    except HookFailure as exc:
        why = f"towerctl: {exc}\n"
    except TimeoutError as exc:
        why = f"towerctl: {exc or 'deadline passed'}; failing closed\n"
    except runtime.RuntimeProblem as exc:
        why = f"towerctl: {exc}; failing closed\n"
    except Exception as exc:  # any failure must block: never let the call through
        why = f"towerctl: {flavor.name} hook failed: {type(exc).__name__}: {exc}; failing closed\n"
    return HookResult(EXIT_POST_FAILED if is_post else EXIT_BLOCK, stderr=why)


def run(
    flavor: Flavor,
    cfg: HookSettings,
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    *,
    post: bool = False,
) -> int:
    """Run one hook invocation in this process; return the exit code. Never raises."""
    started = time.monotonic()
    runtime.quiet_shim_log()
    timer = runtime.watchdog(
        cfg.timeout + 3.0, f"towerctl: {flavor.name} hook passed its deadline; failing closed\n", EXIT_BLOCK
    )
    try:
        try:
            data = stdin.read(MAX_INPUT_BYTES + 1)
            result = asyncio.run(handle(flavor, cfg, data, post=post, started=started))
        except BaseException as exc:  # KeyboardInterrupt and the like: block
            result = HookResult(
                EXIT_BLOCK,
                stderr=f"towerctl: {flavor.name} hook failed: {type(exc).__name__}: {exc}; failing closed\n",
            )
        if result.stdout:
            stdout.write(result.stdout)
            stdout.flush()
        if result.stderr:
            stderr.write(result.stderr)
        return result.code
    finally:
        timer.cancel()
        stderr.flush()
