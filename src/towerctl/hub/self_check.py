"""The hub checks its own audit log, and the tables it acts on, by itself.

Why: ``towerctl audit verify`` finds an edited record, or a table edited behind
the log, only when someone runs it. A tower should notice on its own: when it
starts (a database edited while the hub was down) and every ``interval_s``
after (edited under it). Each check runs ``towerctl audit verify --json`` as a
child process at low priority, because hashing millions of records in the
serve process would hold its interpreter, and every agent waiting on it, for
seconds.

What a check leaves: a log line; a critical alert to the connected operators
when the log or a table is found broken (once per distinct finding); and the
status, which ``/healthz`` (``"audit"``) and ``/metrics``
(``towerctl_audit_intact``, ``towerctl_audit_checked_timestamp_seconds``)
report to monitoring, so that nobody needs to be watching a console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from towerctl.tasks import cancel_and_wait

log = logging.getLogger("towerctl.hub")

#: A check that takes longer is stopped and reported as an error.
CHECK_TIMEOUT_S: Final = 3600.0

State = Literal["unchecked", "intact", "broken", "error"]


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """The outcome of the latest check. ``detail`` says what broke, or why it could not run."""

    state: State = "unchecked"
    detail: str = ""
    records: int = 0
    checked_at: float | None = None

    def health(self) -> str:
        """The ``audit`` field of ``/healthz``."""
        return f"{self.state}: {self.detail}" if self.detail else self.state

    def alert(self) -> str:
        """What operators are told of a broken log: when it is found, and on connecting after."""
        return f"audit log check FAILED: {self.detail}"


def status_of(returncode: int | None, stdout: bytes, stderr: bytes, now: float) -> AuditStatus:
    """What one run of ``towerctl audit verify --json`` said (pure: tested without a process)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if returncode in (0, 1) and isinstance(report, dict) and isinstance(report.get("ok"), bool):
        records = report.get("records")
        count = records if type(records) is int else 0
        if report["ok"]:
            return AuditStatus("intact", "", count, now)
        bad = report.get("first_bad_seq")
        where = f"record {bad}: " if type(bad) is int else ""
        where = where or ("the tables disagree with the log: " if report.get("tables") else "")
        return AuditStatus("broken", f"{where}{report.get('problem') or 'unknown problem'}", count, now)
    why = stderr.decode("utf-8", "replace").strip().splitlines()
    return AuditStatus("error", (why[-1] if why else f"exit status {returncode}")[:500], 0, now)


class AuditSelfCheck:
    """Checks at start and every ``interval_s``; ``on_broken`` hears each new finding."""

    def __init__(
        self, db: Path, key: Path, interval_s: float, on_broken: Callable[[AuditStatus], None]
    ) -> None:
        self.db, self.key, self.interval_s = db, key, interval_s
        self.status = AuditStatus()
        self._on_broken = on_broken
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._told: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-self-check")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def check_soon(self) -> None:
        """Check now rather than at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self.check()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    def command(self) -> list[str]:
        verify = [sys.executable, "-m", "towerctl.cli", "audit", "verify", "--json"]
        verify += ["--db", str(self.db), "--key", str(self.key)]
        nice = shutil.which("nice")
        return [nice, "-n", "10", *verify] if nice else verify

    async def check(self) -> AuditStatus:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            return self._settle(AuditStatus("error", f"cannot start the check: {exc}", 0, time.time()))
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CHECK_TIMEOUT_S)
        except TimeoutError:
            late = AuditStatus("error", f"no answer within {CHECK_TIMEOUT_S:g}s", 0, time.time())
            return self._settle(late)
        finally:  # timed out, or the hub is stopping: never leave the child behind
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return self._settle(status_of(proc.returncode, out, err, time.time()))

    def _settle(self, status: AuditStatus) -> AuditStatus:
        self.status = status
        if status.state == "intact":
            log.info("audit self-check: intact, %d records", status.records)
            self._told = None
        elif status.state == "broken":
            log.error("audit self-check: BROKEN: %s", status.detail)
            if status.detail != self._told:  # each finding once, not every interval
                self._told = status.detail
                self._on_broken(status)
        else:
            log.warning("audit self-check could not run: %s", status.detail)
        return status
