"""Keeping the header's audit verdict and record count current without holding the UI.

Both reads happen in worker threads and both are throttled: re-verifying the
whole chain costs time proportional to the log, so it runs less often as the
log grows, while the record count is one indexed lookup and can follow the
hub's events closely. Records that no hub event announces (tokens created from
the CLI, checkpoints exported, another hub process) are caught by a slow poll.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Final

from textual.app import App
from textual.timer import Timer

from towerctl.tui.audit_reader import AuditReading, read_audit, read_audit_count
from towerctl.tui.state import Delta, TowerState

#: The audit log is re-read (and its whole chain re-verified) at most this often,
#: and at most once per ``AUDIT_VERIFY_DUTY`` x the last verification's own
#: duration: a long log is verified less often, so that its verification,
#: which competes with the UI for the interpreter, stays a small share of it.
AUDIT_MIN_INTERVAL_S: Final = 2.0
AUDIT_VERIFY_DUTY: Final = 10
#: The header's record count is re-read (one indexed lookup, in a worker)
#: whenever hub events say something happened, at most this often...
AUDIT_COUNT_MIN_INTERVAL_S: Final = 0.5
#: ...and this often regardless, for records no hub event announces (tokens
#: created or revoked from the CLI, checkpoints exported, another hub process).
AUDIT_POLL_S = 5.0


def writes_audit(delta: Delta) -> bool:
    """Whether the hub events behind ``delta`` imply new audit records.

    Sessions starting or changing status, actions, policies and freezes are
    all audited by the hub; the connection, identity and the audit state
    itself are not.
    """
    return bool(
        delta.full
        or delta.sessions
        or delta.removed_sessions
        or delta.actions
        or delta.policies
        or delta.frozen
        or delta.alerts
    )


class AuditWatch:
    """Reads the audit log at ``db_path`` for ``app`` and records what it found in ``state``.

    Workers and timers belong to ``app``, so they stop with it and an
    exclusive group replaces a read still running rather than queueing behind it.
    """

    def __init__(self, app: App[Any], state: TowerState, db_path: Path, key_path: Path | None) -> None:
        self._app = app
        self._state = state
        self._db_path = db_path
        self._key_path = key_path
        self._audit_timer: Timer | None = None
        self._audit_last = -AUDIT_MIN_INTERVAL_S
        self._audit_interval = AUDIT_MIN_INTERVAL_S
        self._count_timer: Timer | None = None
        self._count_last = -AUDIT_COUNT_MIN_INTERVAL_S

    def start(self) -> None:
        """Read the log once now, then poll its count for records no hub event announces."""
        self.request_refresh()
        self._app.set_interval(AUDIT_POLL_S, self.request_count, name="audit-poll")

    # ------------------------------------------------------------ verification

    def request_refresh(self) -> None:
        """Re-read and re-verify the audit log soon, throttled (see AUDIT_MIN_INTERVAL_S)."""
        if self._audit_timer is not None:
            return
        wait = self._audit_last + self._audit_interval - time.monotonic()
        if wait <= 0:
            self._start_audit_read()
        else:
            self._audit_timer = self._app.set_timer(wait, self._start_audit_read)

    def _start_audit_read(self) -> None:
        self._audit_timer = None
        self._audit_last = time.monotonic()
        self._app.run_worker(
            partial(self._read_audit, self._db_path, self._key_path),
            name="_read_audit",
            group="audit",
            exclusive=True,
            exit_on_error=False,
            thread=True,
        )

    def _read_audit(self, db_path: Path, key_path: Path | None) -> None:
        started = time.monotonic()
        reading = read_audit(db_path, key_path)
        self._app.call_from_thread(self._audit_read, reading, time.monotonic() - started)

    def _audit_read(self, reading: AuditReading, took_s: float) -> None:
        self._audit_interval = max(AUDIT_MIN_INTERVAL_S, AUDIT_VERIFY_DUTY * took_s)
        self._state.set_audit(reading.ok, reading.line, reading.short, reading.records, reading.verified)
        if self._state.audit_unverified():
            self.request_refresh()  # written while it was being verified

    # ------------------------------------------------------------ record count

    def request_count(self) -> None:
        """Re-count the audit log's records soon, at most every AUDIT_COUNT_MIN_INTERVAL_S."""
        if self._count_timer is not None:
            return
        wait = self._count_last + AUDIT_COUNT_MIN_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._start_audit_count()
        else:
            self._count_timer = self._app.set_timer(wait, self._start_audit_count)

    def _start_audit_count(self) -> None:
        self._count_timer = None
        self._count_last = time.monotonic()
        self._app.run_worker(
            partial(self._count_audit, self._db_path),
            name="_count_audit",
            group="audit-count",
            exclusive=True,
            exit_on_error=False,
            thread=True,
        )

    def _count_audit(self, db_path: Path) -> None:
        count = read_audit_count(db_path)
        self._app.call_from_thread(self._audit_counted, count)

    def _audit_counted(self, count: int | None) -> None:
        self._state.set_audit_count(count)
        if self._state.audit_unverified():
            # The header shows the count at once and "intact" only for what was
            # verified; the verification catches up, throttled by its own cost.
            self.request_refresh()
