"""The quick benchmark tools keep working as the store changes (the figures
themselves belong to the benchmarks, not to tests)."""

from __future__ import annotations

from bench.writer_bench import run


def test_writer_bench_runs_on_the_current_store_with_and_without_extra_sql() -> None:
    plain_us, plain_kib = run(sessions=20, batch=10, sync="NORMAL", sql=[], prefill=2)
    assert plain_us > 0 and plain_kib >= 0
    # --sql runs before the batches (a statement the store cannot take would raise).
    index = "CREATE INDEX bench_extra ON audit (actor, seq)"
    us, kib = run(sessions=20, batch=10, sync="NORMAL", sql=[index], prefill=2)
    assert us > 0 and kib >= 0
