"""Fleet benchmark: towerctl's hub side by side with the physical limit, in one run.

    python bench/fleet_bench.py [--quick] [--no-profile]

Starts, each in its own process: a bare websockets echo server (echo_baseline.py)
driven by the same client load, and a real hub (`towerctl serve` via
harness.start_hub: real SQLite file, real policy, real audit chain) driven by
load_raw.py agents. Figures (median and min-max spread over several windows):

1. throughput: auto-allowed actions/s, propose -> ack received (then started +
   report), closed loop, at 10 / 100 / 1,000 agents vs echo round trips/s at
   the same concurrency, and the ratio;
2. latency at fixed offered loads from 1,000 agents, lightest first: 25 % and 50 %
   of the measured 1,000-agent throughput and the issue's 1,000 actions/s when the
   hub sustains 1,400/s or more; 5 % of actions needing approval, decided at
   once by an automated OperatorClient; beside it, the do-nothing hub's
   allowed latency at 1,000/s under the same load (the protocol's floor);
3. hub RSS per idle agent session at 10 / 100 / 1,000 sessions (VmRSS of the
   serve process), and the echo server's per idle connection;
4. shim overhead per allowed action and `towerctl exec` start-up (shim_overhead.py);
5. durability: throughput with --sync full vs normal;
6. every acknowledged action has its rows and audit records in the SQLite file,
   and `towerctl audit verify` passes;
7. the console: tui_bench.py for 15 s (500 sessions, 1,000 hub events/s,
   keypress -> decision sent, event backlog).

With profiling on, the hub is sampled with py-spy under the 1,000-agent
throughput load and the top own-time and cumulative frames are summarised.
Prints a table and writes bench/results/fleet.json (profiles in bench/results/).
Only 127.0.0.1; every phase is bounded in time.

The parts, each in its own module: process and /proc helpers (fleet_procs.py),
the run's settings and result (fleet_run.py), the phases (fleet_phases_baseline.py:
echo and null hub; fleet_phases_hub.py: towerctl's hub, audit check and console),
and the table, ratios and profile summary (fleet_report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fleet_phases_baseline import ceiling_phase, echo_again_phase, echo_phase  # noqa: E402
from fleet_phases_hub import hub_phase, tui_phase  # noqa: E402
from fleet_procs import log  # noqa: E402
from fleet_report import build_table  # noqa: E402
from fleet_report import tui_rows as tui_rows  # noqa: E402  (re-exported: tests import it from here)
from fleet_run import RESULTS, Bench  # noqa: E402


async def amain(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (hub, load) inherit it
    bench = Bench(args)
    t0 = time.monotonic()
    log(f"machine: {bench.out['machine']}; work dir {bench.tmp}")
    # Seconds per phase: the whole run must stay under 5 minutes (issue 6).
    phases: dict[str, float] = {}
    for name, phase in (
        ("echo", echo_phase),
        ("ceiling", ceiling_phase),
        ("hub", hub_phase),
        ("echo again", echo_again_phase),
        ("tui", tui_phase),
    ):
        started = time.monotonic()
        await phase(bench)
        phases[name] = round(time.monotonic() - started, 1)
    bench.out["phase_s"] = phases
    bench.out["elapsed_s"] = round(time.monotonic() - t0, 1)
    bench.out["machine"]["loadavg_at_end"] = os.getloadavg()
    table, ratios = build_table(bench.out)
    bench.out["ratios"] = ratios
    bench.out["table"] = table
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(bench.out, indent=2) + "\n")
    m = bench.out["machine"]
    print(
        f"\nfleet benchmark — {m['nproc']} cores, {m['cpu']}, Python {m['python']}, {m['date_utc']}, "
        f"{bench.out['elapsed_s']} s ({', '.join(f'{k} {v} s' for k, v in phases.items())})\n"
    )
    print(table)
    print(f"\nratios: {json.dumps(ratios)}")
    prof = bench.out.get("profile")
    if prof and "own_pct" in prof:
        print(f"\nhub profile ({prof['samples']} samples, {prof['file']}): threads {prof['threads_pct']}")
        print("top own time:")
        for f, p in prof["own_pct"][:10]:
            print(f"  {p:5.1f}%  {f}")
        print("top cumulative:")
        for f, p in prof["cumulative_pct"][:12]:
            print(f"  {p:5.1f}%  {f}")
    print(f"\nwrote {RESULTS / 'fleet.json'}")
    with contextlib.suppress(OSError):
        shutil.rmtree(bench.tmp)
    if not all(bench.out.get(k, {}).get("ok") for k in ("audit_full", "audit_normal")):
        print("FAILED: an acknowledged action lacks its records, or `audit verify` failed", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer windows and scales (~2 min)")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profile")
    args = ap.parse_args()
    if args.quick:
        args.profile = False
    if args.profile and shutil.which("py-spy") is None:
        log("py-spy is not on PATH (pip install py-spy): running without the profile")
        args.profile = False
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
