"""``admit`` requests (gates, ``towerctl exec``): judge, wait, and in wait mode report.

Each request runs the gate's judge/admit path in the daemon's shim for its
settings: classification and policy in the shim, waiting for an operator where
policy says ask (a ``note`` line tells the client), and failing closed when
the hub cannot be reached or the proposal could not be handed to it. What runs
is re-derived from the approved command text, never from the request's argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import time
from dataclasses import dataclass
from typing import Any

from towerctl.integrations import runtime
from towerctl.localshim.pool import ShimKey, ShimPool, handed_over
from towerctl.localshim.serverio import BadRequest, line
from towerctl.localshim.serverio import text_field as _str
from towerctl.localshim.shimclient import settings, wire

log = logging.getLogger("towerctl.shimd")


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    key: ShimKey
    mode: str
    connect_timeout: float
    kind: str
    command: str
    argv: list[str]
    shape: str
    target: str
    cwd: str
    reason: str
    rollback: str
    dry_run: str

    @property
    def url(self) -> str:
        return self.key[0]

    @classmethod
    def parse(cls, req: dict[str, Any]) -> AdmitRequest:
        mode = _str(req, "mode")
        if mode not in ("exec", "wait"):
            raise BadRequest("'mode' must be exec or wait")
        shape = _str(req, "shape", default="argv")
        if shape not in ("argv", "sh"):
            raise BadRequest("'shape' must be argv or sh")
        argv = req.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise BadRequest("'argv' must be a non-empty list of strings")
        timeout = req.get("connect_timeout", settings.CONNECT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0.05 <= timeout <= 120:
            raise BadRequest("'connect_timeout' must be a number of seconds between 0.05 and 120")
        url, token = _str(req, "url"), _str(req, "token")
        if not url or not token:
            raise BadRequest("'url' and 'token' are required")
        key: ShimKey = (
            url,
            token,
            _str(req, "env", limit=128),
            _str(req, "agent", limit=255),
            _str(req, "hub_key", default=""),
            _str(req, "ca", default=""),
            "",
        )
        return cls(
            key=key,
            mode=mode,
            connect_timeout=float(timeout),
            kind=_str(req, "kind", limit=32),
            command=_str(req, "command", limit=wire.MAX_LINE),
            argv=list(argv),
            shape=shape,
            target=_str(req, "target", default=""),
            cwd=_str(req, "cwd", default=""),
            reason=_str(req, "reason", default="", limit=wire.MAX_LINE),
            rollback=_str(req, "rollback", default="", limit=wire.MAX_LINE),
            dry_run=_str(req, "dry_run", default="", limit=wire.MAX_LINE),
        )

    def runs_exactly(self, command: str) -> bool:
        """Whether the approved ``command`` text is what ``argv`` will run."""
        if self.shape == "sh":
            return self.argv == ["/bin/sh", "-c", command]
        try:
            return shlex.split(command) == self.argv
        except ValueError:
            return False


async def admit(
    pool: ShimPool, req: AdmitRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    from pydantic import ValidationError

    from agent_shim import Action, ActionDenied, SessionKilled, new_action_id

    def verdict(allow: bool, message: str, action_id: str = "") -> None:
        writer.write(
            line(
                {
                    "type": "verdict",
                    "verdict": "allow" if allow else "deny",
                    "message": message,
                    "action_id": action_id,
                }
            )
        )

    try:
        action = Action(
            action_id=new_action_id(),
            kind=req.kind,  # type: ignore[arg-type]  # validated by the model
            command=req.command,
            target=req.target,
            cwd=req.cwd,
            reason=req.reason,
            rollback=req.rollback,
            dry_run=req.dry_run,
        )
    except ValidationError as exc:
        verdict(False, f"denied: this invocation cannot be put to review ({exc.errors()[0]['msg']})")
        return
    try:
        entry = await pool.entry_for(req.key, req.connect_timeout)
    except runtime.Unreachable as exc:
        verdict(False, f"denied: tower unreachable at {req.url} ({exc}); failing closed")
        return
    except ValueError as exc:  # a malformed hub key
        verdict(False, f"denied: bad hub key: {exc}")
        return
    except OSError as exc:  # an unreadable TOWER_CA file
        verdict(False, f"denied: cannot set up the connection to {req.url}: {exc}")
        return
    shim = entry.shim
    entry.busy += 1
    entry.last_used = time.monotonic()
    try:
        ruling = shim.gate.judge(action)
        if ruling.verdict == "ask":
            writer.write(
                line(
                    {
                        "type": "note",
                        "message": f"{action.command[:200]}: waiting for an operator's approval "
                        f"(up to {ruling.timeout_s}s; {ruling.explanation})",
                    }
                )
            )
            await writer.drain()
        # Wait for the verdict, but give up if the client goes away meanwhile
        # (Ctrl-C on a call waiting for approval): nothing may start then.
        admitting = asyncio.create_task(shim.admit(action))
        hangup = asyncio.create_task(reader.read(1))
        done, _ = await asyncio.wait({admitting, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if admitting not in done:
            admitting.cancel()
            with contextlib.suppress(BaseException):
                await admitting
            log.info("client left before the verdict on %s", action.action_id)
            return
        hangup.cancel()
        with contextlib.suppress(BaseException):
            await hangup
        try:
            approved = admitting.result()
        except (ActionDenied, SessionKilled) as exc:
            who = f" by {exc.by}" if exc.by else ""
            verdict(False, f"denied{who}: {exc.reason}", action.action_id)
            return
        approved.verify()
        # What runs is re-derived from the approved text, never from the request's variables.
        if not req.runs_exactly(approved.action.command):
            shim.report(approved, error="refused: approved command differs from the invocation")
            verdict(False, "refused: the approved command differs from the invocation", action.action_id)
            return
        if not await handed_over(shim, req.connect_timeout):
            shim.report(approved, error="refused: the proposal could not be handed to the tower in time")
            verdict(
                False,
                "denied: the tower did not receive the proposal; refusing to run it unrecorded",
                action.action_id,
            )
            return
        verdict(True, "allowed", action.action_id)
        if req.mode == "exec":
            return
        await writer.drain()
        entry.running.add(writer)
        try:
            raw = await reader.readline()
        finally:
            entry.running.discard(writer)
        report = parse_report(raw)
        if report is None:
            approved.mark_failed()
            shim.report(approved, error="the gate went away before reporting how the tool ended")
            return
        code, error = report
        approved.set_result(code)
        shim.report(approved, error=error)
        ok = await handed_over(shim, req.connect_timeout)
        writer.write(line({"type": "reported", "ok": ok}))
    finally:
        entry.busy -= 1
        entry.last_used = time.monotonic()


def parse_report(raw: bytes) -> tuple[int, str] | None:
    if not raw:
        return None
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("op") != "report":
        return None
    code = msg.get("exit_code")
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    error = msg.get("error", "")
    return code, error[:4000] if isinstance(error, str) else ""
