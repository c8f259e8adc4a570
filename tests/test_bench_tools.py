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


def test_the_load_stamps_messages_the_hub_accepts_with_the_real_digest() -> None:
    """load_raw splices ids, digests and times into text encoded once per
    command: what it sends must still be the real message, digest and all."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from load_raw import ASK, READS, Templates

    from agent_shim.policy import policy_for
    from agent_shim.protocol import AgentMessageAdapter, Propose, Report, Started

    for env in ("dev", "prod"):
        tpl = Templates(policy_for(None, env), env)
        for i, command in enumerate((*READS, ASK.format(n="0badc0de"))):
            aid = f"{i:02d}" + "5e" * 15
            data, digest, verdict = tpl.propose(command, aid, 1_700_000_000_123)
            msg = AgentMessageAdapter.validate_json(data)
            assert isinstance(msg, Propose)
            assert (msg.action.action_id, msg.action.command) == (aid, command)
            assert msg.digest == digest == msg.action.digest()
            assert msg.verdict == verdict and msg.proposed_at == 1_700_000_000_123
            started = AgentMessageAdapter.validate_json(tpl.started_json(aid, digest, 42))
            report = AgentMessageAdapter.validate_json(tpl.report_json(aid, digest, 43))
            assert isinstance(started, Started) and isinstance(report, Report)
            assert (started.action_id, started.digest, started.started_at) == (aid, digest, 42)
            assert (report.action_id, report.digest, report.finished_at) == (aid, digest, 43)
    assert {tpl.propose(c, "ab" * 16, 0)[2] for c in (READS[0], ASK.format(n="1"))} == {"allow", "ask"}
