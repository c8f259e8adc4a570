"""Shim overhead: what one allowed action costs inside the agent, and `towerctl exec` start-up.

    python bench/shim_overhead.py [--quick] [--url URL --token TOKEN] [--json OUT]

Per action (timeit-style, best and median of several repeats of N calls, in
this process, no I/O): the real ``Shim.admit`` + ``Shim.report`` path of an
allowed action (rate window, classify, policy, propose encode, digest check,
started encode, report encode; the outbox is cleared each time, nothing is
sent), and its parts on their own.

Start-up: ``towerctl exec --env dev -- true`` against a running hub (one is
started with harness.start_hub when no --url is given) vs ``true`` run bare,
and ``python -c 'import agent_shim'`` vs ``python -c pass``. With hyperfine on
PATH it is used; otherwise a bounded repeat loop with perf_counter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import BENCH_POLICY, child_env, start_hub

from agent_shim import Action, Shim, new_action_id
from agent_shim.policy import parse_policy_toml
from agent_shim.protocol import Started, encode
from agent_shim.risk import classify


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number * 1e6)
    return {"best_us": round(min(runs), 2), "median_us": round(statistics.median(runs), 2)}


def action_costs(number: int, repeat: int) -> dict[str, Any]:
    doc = parse_policy_toml(BENCH_POLICY)
    shim = Shim("ws://127.0.0.1:9", "unused", agent="bench", env="dev", host="bench")
    shim.gate.set_policy(doc.environments["dev"])
    loop = asyncio.new_event_loop()
    command = "kubectl get pods -n payments"

    async def admit_report() -> None:
        action = Action(action_id=new_action_id(), kind="shell", command=command)
        approved = await shim.admit(action)
        approved.set_result(0, b"ok")
        shim.report(approved)
        shim._outbox.clear()  # nothing is sent: this measures the agent-side work only

    def full() -> None:
        coro = admit_report()
        try:
            coro.send(None)  # admit of an allowed action never suspends
        except StopIteration:
            pass
        else:
            raise RuntimeError("admit suspended: the action was not auto-allowed")

    a = Action(action_id=new_action_id(), kind="shell", command=command)
    ruling = shim.gate.judge(a)
    assert ruling.verdict == "allow", ruling.explanation
    out = {
        "admit+report (allowed, end to end in the shim)": per_call_us(full, number, repeat),
        "Action(...) construction": per_call_us(
            lambda: Action(action_id=new_action_id(), kind="shell", command=command), number, repeat
        ),
        "classify": per_call_us(lambda: classify("shell", command), number, repeat),
        "judge (classify + policy + digest)": per_call_us(lambda: shim.gate.judge(a), number, repeat),
        "action.digest()": per_call_us(a.digest, number, repeat),
        "encode(propose)": per_call_us(lambda: encode(ruling.propose(0)), number, repeat),
        "encode(started)": per_call_us(
            lambda: encode(Started(action_id=a.action_id, digest=ruling.digest, started_at=0)), number, repeat
        ),
    }
    loop.close()
    return out


def time_cmd(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """Wall time of ``argv`` (ms): hyperfine if present, else a bounded loop."""
    if shutil.which("hyperfine"):
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"hf-{os.getpid()}.json"
        subprocess.run(
            [
                "hyperfine",
                "-N",
                "--warmup",
                "2",
                "--runs",
                str(runs),
                "--export-json",
                str(out),
                " ".join(argv),
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        res = json.loads(out.read_text())["results"][0]
        out.unlink()
        times = [t * 1000 for t in res["times"]]
    else:
        times = []
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)  # warm the page cache
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.run(argv, env=env, capture_output=True, timeout=60)
            times.append((time.perf_counter() - t0) * 1000)
            if proc.returncode != 0:
                raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return {
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "runs": len(times),
    }


def startup_costs(url: str, token: str, runs: int) -> dict[str, Any]:
    env = child_env()
    env.update(TOWER_URL=url, TOWER_TOKEN=token, TOWER_AGENT="bench-exec", TOWER_ENV="dev")
    towerctl = shutil.which("towerctl") or str(Path(sys.executable).with_name("towerctl"))
    true = shutil.which("true") or "/bin/true"
    bare = time_cmd([true], env, runs)
    gated = time_cmd([towerctl, "exec", "--env", "dev", "--", true], env, runs)
    py = time_cmd([sys.executable, "-c", "pass"], env, runs)
    imp = time_cmd([sys.executable, "-c", "import agent_shim"], env, runs)
    return {
        "tool": "hyperfine" if shutil.which("hyperfine") else "repeat loop",
        "bare `true`": bare,
        "`towerctl exec -- true` (allowed)": gated,
        "exec_added_ms": round(gated["median_ms"] - bare["median_ms"], 1),
        "python -c pass": py,
        "python -c 'import agent_shim'": imp,
        "import_agent_shim_ms": round(imp["median_ms"] - py["median_ms"], 1),
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    number, repeat = (500, 3) if args.quick else (2000, 5)
    result: dict[str, Any] = {"per_action": action_costs(number, repeat)}
    runs = 5 if args.quick else 10
    if args.url:
        result["startup"] = await asyncio.to_thread(startup_costs, args.url, args.token, runs)
    else:
        hub = await start_hub(sync="normal")
        try:
            result["startup"] = await asyncio.to_thread(startup_costs, hub.url, hub.token("agent"), runs)
        finally:
            await hub.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--url", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--json", default="", help="write the result here too")
    args = ap.parse_args()
    result = asyncio.run(amain(args))
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
