"""The quick benchmark tools keep working as the store changes (the figures
themselves belong to the benchmarks, not to tests)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench.writer_bench import run

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_writer_bench_runs_on_the_current_store_with_and_without_extra_sql() -> None:
    plain_us, plain_kib = run(sessions=20, batch=10, sync="NORMAL", sql=[], prefill=2)
    assert plain_us > 0 and plain_kib >= 0
    # --sql runs before the batches (a statement the store cannot take would raise).
    index = "CREATE INDEX bench_extra ON audit (actor, seq)"
    us, kib = run(sessions=20, batch=10, sync="NORMAL", sql=[index], prefill=2)
    assert us > 0 and kib >= 0


def test_the_writer_bench_leaves_no_log_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run(sessions=5, batch=5, sync="NORMAL", sql=[], prefill=1)
    assert list(tmp_path.iterdir()) == []


async def test_a_probes_hub_removes_the_home_it_made_and_keeps_one_it_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A probe's hub log is hundreds of MB and probes run by the dozen."""
    sys.path.insert(0, _BENCH)
    from harness import start_hub

    made = tmp_path / "made"
    made.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(made))
    hub = await start_hub(sync="normal")
    assert hub.home.parent == made and (hub.home / "tokens" / "agent.token").exists()
    await hub.stop()
    assert list(made.iterdir()) == []
    given = tmp_path / "given"
    hub = await start_hub(given, sync="normal")
    await hub.stop()
    assert (given / "tokens" / "agent.token").exists()


def test_serve_path_times_only_actions_the_hub_recorded_with_their_outcome() -> None:
    """In its own process: it tunes and freezes the collector as ``serve`` does."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "serve_path.py"
    args = ["--agents", "5", "--actions", "50", "--rounds", "2"]
    out = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["actions"] == 100 == result["recorded_with_outcome"]
    # The writer's CPU comes from /proc in clock ticks (10 ms): 100 actions may read 0.
    assert result["serve_us_median"] > 0 and result["writer_us_median"] >= 0


def test_the_load_stamps_messages_the_hub_accepts_with_the_real_digest() -> None:
    """load_raw splices ids, digests and times into text encoded once per
    command: what it sends must still be the real message, digest and all."""
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


def _run(
    echo: tuple[float, float, float], null: tuple[float, float, float], hub: tuple[float, float, float]
) -> dict[str, object]:
    """A fleet.json shaped run: (rate, load cores, server cores) per party at 100 agents."""

    def party(rate: float, client: float, server: float, key: str) -> dict[str, object]:
        return {"rate": {"median": rate}, "client_cpu": client, key: server}

    return {
        "machine": {"nproc": 2},
        "echo": {"100": party(*echo, key="server_cpu")},
        "ceiling": {"100": party(*null, key="server_cpu")},
        "throughput": {"full": {"100": party(*hub, key="hub_cpu")}},
    }


@pytest.mark.parametrize(
    ("echo", "null", "hub", "budget_us", "load_cores", "any_hub"),
    [
        # 00:30 run: the load alone would need a full core at 0.8x echo.
        ((7039, 1.003, 0.61), (5550, 1.01, 0.69), (1896, 0.424, 1.29), 173, 1.02, False),
        # A cheap load: 100 us/action leaves 2/4000 - 100 = 400 us for the hub.
        ((5000, 0.5, 0.4), (5000, 0.5, 0.5), (1000, 0.1, 0.6), 400, 0.40, True),
        # The load is cheaper against the null hub than against towerctl: the generous one counts.
        ((5000, 0.5, 0.4), (5000, 0.5, 0.5), (1000, 0.3, 0.6), 400, 0.40, True),
        # The protocol alone costs more than the budget: no hub can.
        ((5000, 0.5, 0.4), (2000, 0.2, 0.9), (1000, 0.1, 0.6), 400, 0.40, False),
    ],
)
def test_the_budget_is_what_the_machine_leaves_the_hub_at_the_target_rate(
    echo: tuple[float, float, float],
    null: tuple[float, float, float],
    hub: tuple[float, float, float],
    budget_us: float,
    load_cores: float,
    any_hub: bool,
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from budget import budget_rows, budgets

    run = _run(echo, null, hub)
    (b,) = budgets(run)
    assert (b.agents, b.target, b.rate) == ("100", 0.8, pytest.approx(0.8 * echo[0]))
    assert b.budget_us == pytest.approx(budget_us, abs=1)
    assert b.load_cores == pytest.approx(load_cores, abs=0.01)
    assert b.hub_us == pytest.approx(hub[2] / hub[0] * 1e6)
    assert b.reachable_by_any_hub is any_hub
    (row,) = budget_rows(run)
    assert row[0].startswith("hub CPU budget per action at 0.8x echo") and row[4].startswith("≤ 1x")
    assert row[1] == f"{b.hub_us:.0f} µs used (serve + writer)"  # a run without the serve figure
    assert b.serve_us is None and b.serve_cores is None
    assert budgets({"machine": {"nproc": 2}, "echo": {}}) == []


def test_the_budget_says_what_the_serve_process_alone_needs_at_the_target_rate() -> None:
    """The serve process is one thread: at the target rate it alone needs
    ``serve us x rate`` of one core, whatever the two cores' budget says."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from budget import budget_rows, budgets

    # 10:59 run at 1,000 agents, scaled to 100: 8,738/s with the hub at 1.22 cores, serve 0.85.
    run = _run((15000, 1.011, 0.39), (15500, 1.028, 0.46), (8738, 0.586, 1.22))
    run["throughput"]["full"]["100"]["serve_cpu"] = 0.85  # type: ignore[index]
    (b,) = budgets(run)
    assert b.serve_us == pytest.approx(0.85 / 8738 * 1e6)
    assert b.serve_cores == pytest.approx(0.85 / 8738 * 0.8 * 15000, abs=0.001)
    (row,) = budget_rows(run)
    assert row[1] == f"140 µs used (serve 97 + writer 42); serve alone {b.serve_cores:.2f} of its core"


def _tui_result(received: float, target_met: bool) -> dict[str, Any]:
    """The parts of ``tui_bench.py``'s JSON the fleet table reads."""
    return {
        "sessions_seen": 503,
        "events_per_s": {
            "target": 1000,
            "received": received,
            "target_met": target_met,
            "load_actions_per_s_last": 832.0,
        },
        "keypress_to_decision_sent_ms": {"all": {"n": 55.0, "p99": 4.69, "max": 15.93}},
        "backlog_events": {"all": {"p99": 260.0, "max": 409.0}},
        "cores_used": {"tui": 0.66},
    }


@pytest.mark.parametrize(("received", "met"), [(1076.6, True), (912.0, False)])
def test_the_fleet_table_states_the_console_figures_and_a_shortfall(received: float, met: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from fleet_bench import tui_rows

    events, keys, backlog = tui_rows(_tui_result(received, met))
    assert events[0] == "TUI: hub events/s received (503 sessions)" and events[4] == "≥ 1,000"
    assert events[1].startswith(f"{received:.0f} (832 actions/s)")
    assert events[1].endswith("SHORTFALL") is not met
    assert keys[1] == "4.7 ms (15.9; n 55)" and keys[4] == "< 100 ms"
    assert backlog[1] == "260 / 409 (0.66)"


def test_the_profile_summary_names_the_hubs_threads_by_the_code_that_runs_them() -> None:
    """fleet_report tells the writer process and the writer thread apart by
    module and method names in py-spy's stacks: renaming either must show here,
    not as a profile with no writer in it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from fleet_report import _thread_of

    from towerctl.store import writer_child
    from towerctl.store.applier import Applier

    assert callable(writer_child.run_child) and callable(Applier.apply)
    serve = ["serve (towerctl/cli/serve.py:231)", "Runner.run (asyncio/runners.py:118)"]
    child = [*serve, "ProcessWriter.start (towerctl/store/writer_proc.py:200)"]
    apply = "Applier.apply (towerctl/store/applier.py:170)"
    child += ["run_child (towerctl/store/writer_child.py:140)", apply]
    thread = ["Thread._bootstrap (threading.py:1002)", apply]
    reads = ["Thread._bootstrap (threading.py:1002)", "_connection_worker_thread (aiosqlite/core.py:59)"]
    assert _thread_of(child) == "writer process"
    assert _thread_of([*serve, "Writer.enqueue (towerctl/store/writer.py:170)"]) == "event loop"
    assert _thread_of(thread) == "group-commit writer thread"
    assert _thread_of(reads) == "aiosqlite thread (reads)"


def test_the_benchmarks_collect_young_objects_as_serve_does() -> None:
    """harness keeps its own copy of serve's threshold (the load must not import the hub)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from harness import HUB_YOUNG_GC_THRESHOLD

    from towerctl.hub.server import YOUNG_GC_THRESHOLD

    assert HUB_YOUNG_GC_THRESHOLD == YOUNG_GC_THRESHOLD


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({}, {}, {"collections": 0, "over_10ms": 0, "longest_le_ms": 0.0}),
        (
            {0.001: 2, 0.01: 3, 0.05: 3, float("inf"): 3},
            {0.001: 6, 0.01: 9, 0.05: 12, float("inf"): 12},
            {"collections": 9, "over_10ms": 3, "longest_le_ms": 50.0},
        ),
        (
            {0.001: 1, 0.01: 1, 0.05: 1, float("inf"): 1},
            {0.001: 1, 0.01: 1, 0.05: 1, float("inf"): 2},
            {"collections": 1, "over_10ms": 1, "longest_le_ms": float("inf")},
        ),
        (
            {0.001: 4, 0.01: 4, 0.05: 4, float("inf"): 4},
            {0.001: 5, 0.01: 5, 0.05: 5, float("inf"): 5},
            {"collections": 1, "over_10ms": 0, "longest_le_ms": 1.0},
        ),
    ],
)
def test_the_fleet_bench_reads_the_collectors_pauses_between_two_scrapes(
    before: dict[float, float], after: dict[float, float], expected: dict[str, float]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from harness import gc_pauses_between

    assert gc_pauses_between(before, after) == expected


_BENCH = str(Path(__file__).resolve().parents[1] / "bench")


async def test_the_fleet_bench_scrapes_the_hubs_collections(tmp_path: Path) -> None:
    import asyncio
    import gc

    sys.path.insert(0, _BENCH)
    from harness import gc_pause_buckets, gc_pauses_between

    from .conftest import make_tower

    tower = await make_tower(tmp_path)
    try:
        before = await asyncio.to_thread(gc_pause_buckets, tower.url)
        gc.collect()
        after = await asyncio.to_thread(gc_pause_buckets, tower.url)
    finally:
        await tower.hub.stop()
    seen = gc_pauses_between(before, after)
    assert seen["collections"] >= 1 and seen["longest_le_ms"] > 0


def test_pinning_a_process_confines_every_one_of_its_threads() -> None:
    """hub_probe --pin: the serve process has threads besides its event loop."""
    sys.path.insert(0, str(BENCH))
    from harness import pin

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to confine a process to")
    cpu = max(os.sched_getaffinity(0))
    code = (
        "import sys, threading\nthreading.Thread(target=sys.stdin.read).start()\n"
        "print('up', flush=True)\nsys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        tids = [int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir()]
        assert len(tids) == 2
        pin(proc.pid, {cpu})
        assert all(os.sched_getaffinity(t) == {cpu} for t in tids)
    finally:
        proc.kill()
        proc.wait()


def test_the_serve_process_alone_on_a_cpu_and_back() -> None:
    """hub_probe --pin and the fleet's pinned row: the serve process on the
    first CPU, its child (the writer) and the load on the others; undone after."""
    sys.path.insert(0, str(BENCH))
    from harness import serve_alone

    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to confine a process to")
    first, rest = min(cpus), cpus - {min(cpus)}
    wait = "import sys; sys.stdin.read()"
    parent = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {wait!r}], stdin=subprocess.PIPE)\n"
        "print(child.pid, flush=True)\nsys.stdin.read()\nchild.communicate(b'')"
    )
    serve = subprocess.Popen(
        [sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    load = subprocess.Popen([sys.executable, "-c", wait], stdin=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        writer = int(serve.stdout.readline())
        undo = serve_alone(serve.pid, load.pid)
        assert os.sched_getaffinity(serve.pid) == {first}
        assert os.sched_getaffinity(writer) == rest and os.sched_getaffinity(load.pid) == rest
        undo()
        assert os.sched_getaffinity(serve.pid) == cpus and os.sched_getaffinity(writer) == cpus
    finally:
        for p in (serve, load):
            p.communicate("", timeout=30)


def test_a_process_that_had_to_wait_for_a_cpu_says_how_long() -> None:
    """Three processes spinning on one CPU: each runs a third of the time and
    waits the rest, so its wait is about twice its CPU time (a reading of the
    wrong schedstat field would give the CPU time itself)."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    from harness import proc_wait_s

    if not Path("/proc/self/schedstat").exists():
        pytest.skip("the kernel keeps no schedstat here")
    cpu = min(os.sched_getaffinity(0))
    spin = (
        f"import os, sys, time; sys.path.insert(0, {str(bench)!r}); from harness import proc_wait_s\n"
        f"os.sched_setaffinity(0, {{{cpu}}}); t = time.monotonic() + 0.5\n"
        "while time.monotonic() < t: pass\n"
        "print(proc_wait_s(os.getpid()), time.process_time())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    figures = [[float(x) for x in p.communicate(timeout=30)[0].split()] for p in procs]
    waited, ran = sum(f[0] for f in figures), sum(f[1] for f in figures)
    assert waited > 1.3 * ran > 0, figures
    assert proc_wait_s(2**22 + 7) == 0.0  # no such process: no figure, no error


async def test_echo_is_measured_again_after_the_hub_and_the_ratio_divides_by_both_runs() -> None:
    """A real echo server and client, briefly: the second run's windows join
    the first's, and the table shows both runs beside the ratio."""
    sys.path.insert(0, str(BENCH))
    import argparse

    from fleet_phases_baseline import echo_again_phase
    from fleet_report import build_table
    from fleet_run import Bench

    bench = Bench(argparse.Namespace(quick=True))
    bench.scales, bench.window_s, bench.warmup_s = [10, 100], 0.3, 0.2
    before = {"median": 1.0, "min": 1.0, "max": 1.0}
    bench.out["echo"] = {
        "10": {"rate": before, "rates": [1.0], "client_cpu": 0.5, "server_cpu": 0.2},
        "100": {"rate": before, "rates": [1.0, 1.0, 1.0], "client_cpu": 0.5, "server_cpu": 0.2},
        "rss_per_idle_conn_kib": 15.0,
    }
    await echo_again_phase(bench)
    e = bench.out["echo"]["100"]
    assert e["rate_before"] == before and e["rate_after"]["median"] > 100
    assert len(e["rates"]) == 6 and e["rate"]["median"] == pytest.approx(statistics.median(e["rates"]), abs=1)
    assert "rate_after" not in bench.out["echo"]["10"]  # no target at 10 agents: not measured again
    rate = {"median": 50.0, "min": 50.0, "max": 50.0}
    bench.out["throughput"] = {"full": {"100": {"rate": rate, "hub_cpu": 1.0}}, "normal": {}}
    table, ratios = build_table(bench.out)
    assert ratios["throughput_100"] == pytest.approx(50 / e["rate"]["median"], abs=0.001)
    (row,) = [line for line in table.splitlines() if "before / after the hub, 100 clients" in line]
    assert "1 (1-1) / " in row and ratios["echo_after_vs_before_100"] > 100


def test_the_fleet_table_shows_how_busy_the_serve_process_was() -> None:
    """Whether the serve process, one thread, saturated: on every run's table."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from fleet_report import build_table

    def rate(median: float) -> dict[str, float]:
        return {"median": median, "min": median, "max": median}

    out: dict[str, Any] = {
        "machine": {"nproc": 2},
        "echo": {"1000": {"rate": rate(15000), "client_cpu": 1.0, "server_cpu": 0.39}},
        "ceiling": {"1000": {"rate": rate(15500), "client_cpu": 1.0, "server_cpu": 0.46}},
        "throughput": {
            "full": {
                "1000": {
                    "rate": rate(8738),
                    "hub_cpu": 1.22,
                    "serve_cpu": 0.85,
                    "machine_cpu": 1.8,
                    "client_cpu": 0.586,
                }
            },
            "normal": {},
        },
    }
    table, _ = build_table(out)
    busy = [line for line in table.splitlines() if "serve process busy" in line]
    assert len(busy) == 1 and "0.85 of 1 core; hub 1.22, machine 1.8 of 2" in busy[0]
    assert "(serve 97 + writer 42); serve alone 0.88 of its core" in table
    # With the time it waited for a CPU (schedstat), the row says it had work all along.
    out["throughput"]["full"]["1000"]["serve_wait"] = 0.14
    table, _ = build_table(out)
    assert "0.85 of 1 core + 0.14 runnable, waiting for a CPU; hub 1.22" in table
    # The same hub with its serve process alone on a CPU: its own row and ratio, no target.
    pinned = {**out["throughput"]["full"]["1000"], "rate": rate(9900), "serve_wait": 0.02}
    out["throughput"]["full"]["1000-pinned"] = pinned
    table, ratios = build_table(out)
    (row,) = [line for line in table.splitlines() if "serve alone on a CPU" in line]
    assert "9900 (9900-9900); serve busy 0.85 + waiting 0.02" in row and "| 0.660x | —" in row
    assert ratios["throughput_1000_pinned"] == 0.66 and ratios["throughput_1000"] == 0.583
    # A run from before the figure existed still makes its table, without the row.
    del out["throughput"]["full"]["1000"]["serve_cpu"]
    table, _ = build_table(out)
    assert "serve process busy" not in table and "140 µs used (serve + writer)" in table
