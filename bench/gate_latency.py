"""Added latency of a gated allowed command: shell gate, ``towerctl exec``, hooks.

    python bench/gate_latency.py [--runs 30] [--slow] [--json OUT]

Starts a real ``towerctl serve`` (harness.start_hub, its own TOWER_HOME),
installs a gate for a stub ``kubectl`` (``#!/bin/sh`` + ``exit 0``) with
``towerctl gate install``, warms up (the first gated call starts the local
shim daemon and opens its tower session), then times, interleaved, N runs
each of:

- ``kubectl get pods`` with the stub alone on PATH (bare),
- the same through the gate (fast client + local shim daemon),
- with ``--slow``, the same with ``TOWER_NO_DAEMON=1`` (in-process shim),
- ``true`` bare and ``towerctl exec --env dev -- true`` (console script),
- ``towerctl hook claude-code`` (console script) fed a Claude Code PreToolUse
  payload for an allowed ``Bash`` ``ls`` (a fresh ``tool_use_id`` each run, one
  Claude session), through the daemon and with ``TOWER_NO_DAEMON=1``; the hook
  must answer "allow".

Added latency = median(gated) - median(bare); a hook's cost is its whole run
(there is nothing bare to subtract). The daemon is stopped at the end.
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
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import child_env, start_hub

#: A case's stdin, made afresh for each run (None: /dev/null).
Stdin = Callable[[], bytes] | None
HOOK_SESSION = str(uuid.uuid4())


def hook_payload() -> bytes:
    """Claude Code's PreToolUse payload for an allowed ``ls``, with a new tool_use_id."""
    return json.dumps(
        {
            "session_id": HOOK_SESSION,
            "transcript_path": f"/tmp/{HOOK_SESSION}.jsonl",
            "cwd": "/tmp",
            "permission_mode": "default",
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "ls", "description": "List files"},
            "tool_use_id": f"toolu_01{uuid.uuid4().hex[:22]}",
        }
    ).encode()


def timed(cmd: list[str], env: dict[str, str], stdin: Stdin = None) -> float:
    data = stdin() if stdin is not None else None
    t0 = time.perf_counter()
    if data is None:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    else:
        proc = subprocess.run(cmd, env=env, input=data, capture_output=True)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    if data is not None:
        answer = json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecision"]
        if answer != "allow":
            raise RuntimeError(f"{cmd} answered {answer}: {proc.stdout.decode()[-500:]}")
    return elapsed


def run_cases(
    hub_url: str, home: Path, token: str, work: Path, rt: Path, runs: int, slow: bool
) -> dict[str, Any]:
    stub = work / "bin"
    stub.mkdir()
    (stub / "kubectl").write_text("#!/bin/sh\nexit 0\n")
    (stub / "kubectl").chmod(0o755)
    base = child_env()
    base.update(
        TOWER_HOME=str(home), TOWER_URL=hub_url, TOWER_TOKEN=token, TOWER_ENV="dev", TOWER_RUNTIME_DIR=str(rt)
    )
    gates = work / "gates"
    subprocess.run(
        [sys.executable, "-m", "towerctl.cli", "gate", "install", "--dir", str(gates), "kubectl"],
        env=base,
        check=True,
        capture_output=True,
    )
    towerctl = shutil.which("towerctl", path=os.path.dirname(sys.executable)) or "towerctl"
    bare = dict(base, PATH=f"{stub}:{base['PATH']}")
    gated = dict(base, PATH=f"{gates}:{stub}:{base['PATH']}")
    hook = [towerctl, "hook", "claude-code"]
    cases: dict[str, tuple[list[str], dict[str, str], Stdin]] = {
        "kubectl get pods, bare stub": (["kubectl", "get", "pods"], bare, None),
        "kubectl get pods, gated (daemon)": (["kubectl", "get", "pods"], gated, None),
        "true, bare": (["true"], bare, None),
        "towerctl exec -- true": ([towerctl, "exec", "--env", "dev", "--", "true"], bare, None),
        "towerctl hook claude-code, Bash ls (daemon)": (hook, bare, hook_payload),
        "towerctl hook claude-code, Bash ls (TOWER_NO_DAEMON=1)": (
            hook,
            dict(bare, TOWER_NO_DAEMON="1"),
            hook_payload,
        ),
    }
    if slow:
        cases["kubectl get pods, gated (TOWER_NO_DAEMON=1)"] = (
            ["kubectl", "get", "pods"],
            dict(gated, TOWER_NO_DAEMON="1"),
            None,
        )
        cases["towerctl exec -- true (TOWER_NO_DAEMON=1)"] = (
            [towerctl, "exec", "--env", "dev", "--", "true"],
            dict(bare, TOWER_NO_DAEMON="1"),
            None,
        )
    try:
        for cmd, env, stdin in cases.values():  # warm-up: daemon start, session, page cache
            for _ in range(3):
                timed(cmd, env, stdin)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, (cmd, env, stdin) in cases.items():
                samples[name].append(timed(cmd, env, stdin))
    finally:
        subprocess.run(
            [sys.executable, "-m", "towerctl.cli", "shimd", "--stop"],
            env=dict(child_env(), TOWER_RUNTIME_DIR=str(rt)),
            capture_output=True,
        )
    medians = {name: round(statistics.median(v), 1) for name, v in samples.items()}
    bare_k, bare_t = medians["kubectl get pods, bare stub"], medians["true, bare"]
    added = {
        "gate (daemon)": round(medians["kubectl get pods, gated (daemon)"] - bare_k, 1),
        "towerctl exec": round(medians["towerctl exec -- true"] - bare_t, 1),
        "hook claude-code (daemon)": medians["towerctl hook claude-code, Bash ls (daemon)"],
        "hook claude-code (TOWER_NO_DAEMON=1)": medians[
            "towerctl hook claude-code, Bash ls (TOWER_NO_DAEMON=1)"
        ],
    }
    if slow:
        added["gate (TOWER_NO_DAEMON=1)"] = round(
            medians["kubectl get pods, gated (TOWER_NO_DAEMON=1)"] - bare_k, 1
        )
        added["towerctl exec (TOWER_NO_DAEMON=1)"] = round(
            medians["towerctl exec -- true (TOWER_NO_DAEMON=1)"] - bare_t, 1
        )
    return {
        "runs": runs,
        "median_ms": medians,
        "p90_ms": {n: round(sorted(v)[int(0.9 * (len(v) - 1))], 1) for n, v in samples.items()},
        "added_ms": added,
        "loadavg": os.getloadavg(),
    }


async def measure(runs: int, slow: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="gate-lat-"))
    rt = Path(tempfile.mkdtemp(prefix="gl-", dir="/tmp"))
    os.chmod(rt, 0o700)
    hub = await start_hub(work / "home")
    try:
        return await asyncio.to_thread(run_cases, hub.url, hub.home, hub.token("agent"), work, rt, runs, slow)
    finally:
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(rt, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--slow", action="store_true", help="Also time the in-process path (TOWER_NO_DAEMON=1)."
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.slow))
    for name, ms in result["median_ms"].items():
        print(f"{name:56s} median {ms:7.1f} ms   p90 {result['p90_ms'][name]:7.1f} ms")
    for name, ms in result["added_ms"].items():
        print(f"added by {name:47s} {ms:7.1f} ms")
    print("load average", " ".join(f"{x:.2f}" for x in result["loadavg"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
