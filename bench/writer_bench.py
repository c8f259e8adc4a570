"""The store writer alone: microseconds and disk bytes per allowed action.

    python bench/writer_bench.py                      # 1,000 sessions, sync FULL
    python bench/writer_bench.py --sessions 1 --sync NORMAL
    python bench/writer_bench.py --prefill 5000 --random-ids   # 500k actions logged, uuid4 ids
    python bench/writer_bench.py --sql "CREATE INDEX audit_by_action ON audit (action_id, seq)"

Why: the writer process is half of the hub's CPU under load, and what it
costs depends on the schema's B-trees more than on Python: with random
ids and many sessions appending at once, every index keyed by action or
session puts each write on a random leaf page (action ids are time-ordered
for this reason: agent_shim.action_ids), and every COMMIT writes
those pages to the WAL (and the checkpoint writes them again). This runs
``Applier.apply`` in-process, with no event loop or socket, on batches shaped
like the hub's under a closed loop (100 new proposals, each allowed and
running at once, plus the 100 outcomes of the batch before), across
``--sessions`` sessions, with an idle checkpoint every 8 batches as the hub's
writer does. It reports the best of 4 rounds of 16 batches: microseconds per
action and KiB written to disk per action (``/proc/self/io``). ``--sql`` runs
statements first (add or drop an index) to price a schema change.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from agent_shim.action_ids import new_action_id
from towerctl.store import ops, ops_sessions
from towerctl.store.applier import Applier
from towerctl.store.models import ActionRow, OutcomeRow, SessionRow
from towerctl.store.tx import Tx

BODY = {
    "kind": "shell",
    "command": "kubectl get pods -n payments",
    "target": "",
    "cwd": "",
    "reason": "",
    "rollback": "",
    "dry_run": "",
    "declared_risk": None,
}


def written_bytes() -> int:
    """Bytes this process caused to be written to storage so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class Batches:
    """Hub-shaped batches: new proposals and the outcomes of the previous batch."""

    def __init__(
        self, sessions: list[str], size: int, t0: int, new_id: Callable[[], str] = new_action_id
    ) -> None:
        self.sessions = sessions
        self.size = size
        self.t0 = t0
        self.new_id = new_id
        self._next_session = itertools.cycle(range(len(sessions)))
        self._previous: list[tuple[str, str]] = []

    def next(self) -> list[Callable[[Tx], object]]:
        ids = [self.new_id() for _ in range(self.size)]
        out: list[Callable[[Tx], object]] = []
        made: list[tuple[str, str]] = []
        for aid in ids:
            sid = self.sessions[next(self._next_session) * 7919 % len(self.sessions)]
            made.append((aid, sid))
            row = ActionRow(
                action_id=aid,
                session_id=sid,
                kind="shell",
                command=str(BODY["command"]),
                target=None,
                digest="ab" * 32,
                risk="read",
                reasons=("kubectl get: reads",),
                policy_verdict="allow",
                rule=None,
                state="allowed",
                body=ops.to_json({**BODY, "action_id": aid}),  # as the hub sends it (made for the digest)
                created_at=self.t0,
                updated_at=self.t0,
                expires_at=None,
            )
            out.append(
                partial(ops.action_proposed, row=row, actor="agent:bench", ts_ms=self.t0, started=True)
            )
        for aid, sid in self._previous:
            outcome = OutcomeRow(
                action_id=aid,
                status="succeeded",
                exit_code=0,
                duration_ms=3,
                output_digest=None,
                output_tail="ok",
                reported_at=self.t0,
            )
            # As the hub does: it knows the action is running, for which session.
            expect = (sid, "running")
            finish = partial(
                ops.action_finished, outcome=outcome, actor="agent:bench", ts_ms=self.t0, expect=expect
            )
            out.append(finish)
        self._previous = made
        return out


def run(
    sessions: int, batch: int, sync: str, sql: list[str], prefill: int, random_ids: bool = False
) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="writer-bench-"))
    writer = Applier(home / "t.db", home / "k", synchronous=sync, busy_timeout_ms=5000, checkpoint_every=256)
    writer.open()
    try:
        assert writer.conn is not None
        for statement in sql:
            writer.conn.execute(statement)
        t0 = time.time_ns() // 1_000_000
        sids = [f"s-{uuid.uuid4().hex[:16]}" for _ in range(sessions)]
        start: list[Callable[[Tx], object]] = [
            partial(
                ops_sessions.session_started,
                row=SessionRow(
                    session_id=s,
                    agent="a",
                    env="dev",
                    host="h",
                    pid=1,
                    status="active",
                    started_at=t0,
                    last_seen=t0,
                    ended_at=None,
                ),
                resumed=False,
                ts_ms=t0,
            )
            for s in sids
        ]
        writer.apply(start)
        batches = Batches(sids, batch, t0, (lambda: uuid.uuid4().hex) if random_ids else new_action_id)

        def apply(todo: Iterable[list[Callable[[Tx], object]]]) -> None:
            for k, ops_ in enumerate(todo):
                results = writer.apply(ops_)
                if not all(ok for ok, _ in results):
                    raise SystemExit(f"a write failed: {next(v for ok, v in results if not ok)}")
                if k % 8 == 7:
                    writer.idle_checkpoint()

        # B-trees of a hub that has been up a while, not empty ones.
        apply(batches.next() for _ in range(prefill))
        best_us, best_kib = float("inf"), float("inf")
        for _ in range(4):
            # Made before the clock starts: building the rows is the hub's work, not the writer's.
            todo = [batches.next() for _ in range(16)]
            b0, t = written_bytes(), time.perf_counter()
            apply(todo)
            actions = 16 * batch
            best_us = min(best_us, (time.perf_counter() - t) / actions * 1e6)
            best_kib = min(best_kib, (written_bytes() - b0) / actions / 1024)
        return best_us, best_kib
    finally:
        writer.close()
        # A run at --prefill 5000 leaves 1.5 GB of log: runs used to fill /tmp.
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100, help="proposals per batch (plus as many outcomes)")
    ap.add_argument("--sync", choices=("FULL", "NORMAL"), default="FULL")
    ap.add_argument("--prefill", type=int, default=100, help="batches written before measuring")
    ap.add_argument("--sql", action="append", default=[], help="statement run first (repeatable)")
    ap.add_argument(
        "--random-ids", action="store_true", help="uuid4 action ids instead of the shim's time-ordered ones"
    )
    args = ap.parse_args()
    us, kib = run(args.sessions, args.batch, args.sync, args.sql, args.prefill, args.random_ids)
    ids = "random" if args.random_ids else "time-ordered"
    print(
        f"writer, {args.sessions} sessions, batches of {args.batch}, sync {args.sync}, "
        f"{args.prefill * args.batch} actions in the log, {ids} ids"
        f"{', after ' + '; '.join(args.sql) if args.sql else ''}: "
        f"{us:.0f} us per allowed action, {kib:.1f} KiB written per action (best of 4)"
    )


if __name__ == "__main__":
    main()
