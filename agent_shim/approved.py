"""The ticket an admitted action carries from verdict to report."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from agent_shim.errors import ActionDenied
from agent_shim.protocol import Action, Decision, Report

OUTPUT_TAIL_CHARS = 2000


@dataclass(slots=True)
class Approved:
    """What may run (``action``), bound to ``digest``; collects the outcome.

    Callers run ``approved.action`` — the exact value that was judged — and
    record the result with ``set_result``; the guard reports it on exit.
    """

    action: Action
    digest: str
    decision: Decision | None
    exit_code: int | None = None
    output: bytes = b""
    failed: bool = False
    _started_ns: int = field(default=0)

    def __post_init__(self) -> None:
        self._started_ns = time.monotonic_ns()

    @property
    def approved_by(self) -> str:
        return self.decision.operator if self.decision is not None else "policy"

    def verify(self) -> None:
        """Refuse to go on if the action is no longer the one that was approved."""
        if self.action.digest() != self.digest:
            raise ActionDenied("refused: action changed after approval", action_id=self.action.action_id)

    def set_result(self, exit_code: int, output: bytes | str = b"") -> None:
        self.exit_code = exit_code
        self.output = output.encode("utf-8", "replace") if isinstance(output, str) else output
        if exit_code != 0:
            self.failed = True

    def mark_failed(self) -> None:
        self.failed = True

    def to_report(self, *, error: str, finished_at: int) -> Report:
        duration_ms = max(0, (time.monotonic_ns() - self._started_ns) // 1_000_000)
        tail = self.output[-OUTPUT_TAIL_CHARS:].decode("utf-8", "replace") if self.output else ""
        return Report(
            action_id=self.action.action_id,
            digest=self.digest,
            status="failed" if (self.failed or error) else "succeeded",
            exit_code=self.exit_code,
            duration_ms=duration_ms,
            output_digest=hashlib.sha256(self.output).hexdigest() if self.output else None,
            output_tail=tail,
            error=error,
            finished_at=finished_at,
        )
