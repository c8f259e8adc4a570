"""TUI under fleet load: is the console still responsive?

    python bench/tui_bench.py [--sessions 500] [--events-per-s 1000] [--duration 30]
                              [--askers 3] [--ask-every 0.3] [--think-ms 250] [--window-s 5]
                              [--size 120x40] [--burn 0]

A real hub (`towerctl serve`, own process), a load process of real shims
(`load_agents.py`, own process), and the real TowerApp headless (`run_test`,
this process) attached as an admin. The load is paced in hub events, not
actions: how many events the hub sends per action depends on the hub (it
coalesces session updates), so before the measurement the bench sets the load's
actions/s, counts the events that actually arrive at the console, and corrects
(``calibrate``), and during it re-checks every few seconds (``Pacer.hold``).
The events/s received is reported against ``--events-per-s``; a run that
received fewer (over the whole measurement) says SHORTFALL and exits with 1.

``--askers`` extra prod agents each ask for approval again ``--ask-every``
seconds after their previous decision (so an approval is usually waiting);
the bench acts as the operator:
it presses `a`, `enter` (open the oldest approval), waits ``--think-ms`` (the
time to read the command), presses `y`, and measures

* keypress -> decision sent: from posting the `y` key event (the way the
  terminal driver posts it) to the moment the console's OperatorClient starts
  sending the Decide request (`OperatorClient._request` entered);
* keypress -> hub answer: until that request's result is back from the hub;
* keys -> approval view: from posting `a`, `enter` until the approval view is
  the screen (polled every 5 ms).

Both instants are taken by the client itself (futures, no polling). Alongside:
event-loop lag (a 50 ms sleep's overshoot, sampled throughout), the app's
event backlog (hub events received but not yet applied, and the client's
queue in front of it), hub events received per second, and the CPU this
process used. Every figure is reported pooled (p50/p95/p99/max over all
samples) and per window (median of the per-window values and min-max spread),
so one unlucky window is visible as such. The hub and the load share the same
cores, and so may other work on the machine: the cores each used during the
measurement are recorded (TUI, hub, load, and everything else, from /proc),
with the load average at start and end. ``--burn N`` adds N busy loops
during the measurement, to measure under other work reproducibly.

Prints a table and writes bench/results/tui.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events

from bench.harness import machine_busy_s, proc_cpu_s, start_hub, summary, windowed
from bench.tui_instruments import Pacer, Samplers, TimedClient
from towerctl.tui.app import TowerApp
from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.widgets.pending_queue import PendingQueue

#: First guess of the operator events the hub sends per allowed action of a load agent
#: (the action as allowed and as finished, plus the session's update, which the hub
#: coalesces): only the starting pace; the calibration measures the real figure.
EVENTS_PER_ACTION_GUESS = 3.0


def press(app: TowerApp, *keys: str) -> None:
    """Post key events the way the terminal driver does (not awaited, not via Pilot)."""
    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else None))


async def stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def until(cond: Callable[[], bool], timeout: float) -> bool:
    """Wait for ``cond``, checking every 5 ms (this shares the app's event loop: keep it light)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.005)
    return True


def load_env(home: Path) -> dict[str, str]:
    """The load's environment: the hub's key pinned, as a deployment would (no first-use warnings)."""
    env = dict(os.environ)
    key = home / "hub-key.pub"
    if key.exists():
        env["TOWER_HUB_KEY"] = key.read_text().strip()
    return env


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    hub = await start_hub()
    actions_per_s = args.events_per_s / EVENTS_PER_ACTION_GUESS
    load = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("load_agents.py")), hub.url, hub.token("agent"),
        "--sessions", str(args.sessions), "--actions-per-s", f"{actions_per_s:.1f}",
        "--duration", str(args.duration + 120), "--control",
        "--askers", str(args.askers), "--ask-every", str(args.ask_every),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=load_env(hub.home),
    )
    pacer = Pacer(load, args.events_per_s, actions_per_s)
    calibrated = 0.0
    received = 0
    to_sent: list[tuple[float, float]] = []
    to_answer: list[tuple[float, float]] = []
    to_view: list[tuple[float, float]] = []
    missed = {"view": 0, "sent": 0, "answer": 0}
    width, height = (int(x) for x in args.size.split("x"))
    cores: dict[str, float] = {}
    burners: list[asyncio.subprocess.Process] = []
    app = TowerApp(
        hub.url,
        hub.token("admin"),
        operator_client_factory=lambda url, token: TimedClient(url, token, client="towerctl-tui"),
    )
    cpu = wall = 0.0
    hold: asyncio.Task[None] | None = None
    try:
        async with app.run_test(size=(width, height)) as pilot:
            deadline = time.monotonic() + 60
            while len(app.state.sessions) < args.sessions + args.askers and time.monotonic() < deadline:
                await pilot.pause(0.2)
            print(
                f"fleet attached: {len(app.state.sessions)} sessions, link {app.state.link.status}",
                file=sys.stderr,
            )
            await pilot.pause(1.0)  # the first rows and the first events settle
            calibrated = await pacer.calibrate()
            # Other work on the machine, on demand: busy loops, one core's worth each.
            for _ in range(args.burn):
                burners.append(await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass"))
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            pids = {"hub": hub.proc.pid, "load": load.pid}
            others0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            busy0 = machine_busy_s()
            received0 = TimedClient.received
            samplers = Samplers(app, t0)
            probes = [asyncio.create_task(probe()) for probe in (samplers.lag_probe, samplers.backlog_probe)]
            hold = asyncio.create_task(pacer.hold())
            loop = asyncio.get_running_loop()
            queue = app.screen.query_one(PendingQueue)
            while time.perf_counter() - t0 < args.duration:
                # What the operator sees: a row in the queue (not just the state behind it).
                if not await until(lambda: queue.row_count > 0, 2):
                    continue
                t_open = time.perf_counter()
                press(app, "a", "enter")
                if not await until(lambda: isinstance(app.screen, ApprovalScreen), 5):
                    missed["view"] += 1
                    press(app, "escape")
                    continue
                to_view.append((t_open - t0, (time.perf_counter() - t_open) * 1000))
                aid = app.screen.action_id
                await asyncio.sleep(args.think_ms / 1000)  # the operator reads the command
                sent: asyncio.Future[float] = loop.create_future()
                answered: asyncio.Future[float] = loop.create_future()
                TimedClient.waiter = (sent, answered)
                t_press = time.perf_counter()
                press(app, "y")
                try:
                    t_sent = await asyncio.wait_for(sent, 5)
                except TimeoutError:
                    missed["sent"] += 1
                    TimedClient.waiter = None
                else:
                    to_sent.append((t_press - t0, (t_sent - t_press) * 1000))
                    try:
                        t_answer = await asyncio.wait_for(answered, 10)
                        to_answer.append((t_press - t0, (t_answer - t_press) * 1000))
                    except TimeoutError:
                        missed["answer"] += 1
                # On success the approval view closes itself; back to the fleet either way,
                # and the next round starts once this approval has left the queue.
                if not await until(lambda: not isinstance(app.screen, ApprovalScreen), 5):
                    press(app, "escape")
                    await until(lambda: not isinstance(app.screen, ApprovalScreen), 5)
                await until(lambda aid=aid: not queue.has_row(aid), 5)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            received = TimedClient.received - received0
            cores = {name: (proc_cpu_s(pid) - others0[name]) / wall for name, pid in pids.items()}
            cores["tui"] = cpu / wall
            cores["everything_else"] = (machine_busy_s() - busy0) / wall - sum(cores.values())
            await stop_all(burners)
            samplers.running = False
            await asyncio.gather(*probes)
    finally:
        pacer.running = False
        if hold is not None:
            hold.cancel()
        await stop_all(burners)
        if load.returncode is None:
            load.terminate()
        if load.stdin is not None:
            load.stdin.close()
        out, _ = await load.communicate()
        await hub.stop()
    done = [json.loads(line) for line in out.decode().splitlines() if '"done"' in line]
    def win(samples: list[tuple[float, float]]) -> dict[str, object]:
        return windowed(samples, args.window_s, args.duration)

    events_per_s = win(samplers.rate)
    rate_received = received / wall if wall else 0.0
    short_windows = [w["window"] for w in events_per_s["windows"] if float(w["p50"]) < args.events_per_s]

    return {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "textual": version("textual"),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "args": vars(args),
        "sessions_seen": len(app.state.sessions),
        #: The event load as delivered: hub events/s the console received over the whole
        #: measurement, against the target; ``windows_below_target`` are the windows
        #: whose median per-second rate fell short.
        "events_per_s": {
            "target": args.events_per_s,
            "received": round(rate_received, 1),
            "target_met": rate_received >= args.events_per_s,
            "windows_below_target": short_windows,
            "received_at_calibration": round(calibrated, 1),
            "events_per_action": round(pacer.events_per_action, 2),
            "load_actions_per_s_last": round(pacer.actions_per_s, 1),
            #: [seconds since start, actions/s asked, events/s received at that pace]
            "pace_history": pacer.history,
        },
        "decisions": len(to_sent),
        "decisions_missed": missed,
        "load_agents": done[-1] if done else None,
        "tui_process_cpu_share": round(cpu / wall, 3) if wall else None,
        #: Cores in use during the measurement, by process; "everything_else" is the
        #: rest of the machine (other work competing for the same cores).
        "cores_used": {name: round(value, 2) for name, value in cores.items()},
        "keypress_to_decision_sent_ms": win(to_sent),
        "keypress_to_hub_answer_ms": win(to_answer),
        "keys_to_approval_view_ms": win(to_view),
        "event_loop_lag_ms": win(samplers.lag),
        "hub_events_per_s": events_per_s,
        "backlog_events": win(samplers.backlog),
        "client_queue_events": win(samplers.client_queue),
        "pooled": {
            "keypress_to_decision_sent_ms": summary([v for _, v in to_sent]),
            "keypress_to_hub_answer_ms": summary([v for _, v in to_answer]),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--events-per-s", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=30, help="measured seconds (after the fleet attached)")
    ap.add_argument("--askers", type=int, default=3, help="prod agents asking for approvals")
    ap.add_argument(
        "--ask-every", type=float, default=0.3, help="each asker asks again this long after a decision"
    )
    ap.add_argument(
        "--think-ms", type=float, default=250, help="time between the approval view opening and `y`"
    )
    ap.add_argument("--window-s", type=float, default=5, help="window length for the per-window spread")
    ap.add_argument("--size", default="120x40", help="terminal size, COLSxROWS")
    ap.add_argument("--burn", type=int, default=0, help="busy-loop processes competing for the cores")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "tui.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    m = result["machine"]
    print(
        f"TUI bench: {args.sessions} sessions, target {args.events_per_s:.0f} events/s, {args.size}, "
        f"think {args.think_ms:.0f} ms; {m['nproc']} cores, Python {m['python']}, textual {m['textual']}, "
        f"load avg {m['loadavg_at_start'][0]:.1f} -> {m['loadavg_at_end'][0]:.1f}"
    )
    print(
        f"decisions: {result['decisions']} (missed {result['decisions_missed']}); "
        f"load agents: {result['load_agents']}"
    )
    ev = result["events_per_s"]
    verdict = "ok" if ev["target_met"] else "SHORTFALL"
    below = f", windows below target: {ev['windows_below_target']}" if ev["windows_below_target"] else ""
    print(
        f"hub events/s received: {ev['received']:.0f} (target {ev['target']:.0f}) {verdict}; "
        f"load {ev['load_actions_per_s_last']:.0f} actions/s, {ev['events_per_action']:.2f} events per action"
        f"{below}"
    )
    used = ", ".join(f"{name} {value:.2f}" for name, value in result["cores_used"].items())
    print(f"cores used during the measurement: {used} (of {m['nproc']})")
    head = f"{'figure':<30} {'n':>5} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"
    print(f"{head}   per-window p50 | p99: median (min-max)")
    for key in (
        "keypress_to_decision_sent_ms",
        "keypress_to_hub_answer_ms",
        "keys_to_approval_view_ms",
        "event_loop_lag_ms",
        "hub_events_per_s",
        "backlog_events",
        "client_queue_events",
    ):
        s = result[key]
        a, wp50, wp99 = s["all"], s["window_p50"], s["window_p99"]
        print(
            f"{key:<30} {a['n']:>5.0f} {a['p50']:>8.1f} {a['p95']:>8.1f} {a['p99']:>8.1f} {a['max']:>8.1f}   "
            f"{wp50['median']:.1f} ({wp50['min']:.1f}-{wp50['max']:.1f}) | "
            f"{wp99['median']:.1f} ({wp99['min']:.1f}-{wp99['max']:.1f})"
        )
    if not ev["target_met"]:
        message = (
            f"SHORTFALL: the console received {ev['received']:.0f} hub events/s, "
            f"under the target {ev['target']:.0f}: the figures above are not for the asked load"
        )
        print(message)
        print(message, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
