"""The fleet benchmark's report: the table, the ratios and the profile summary.

Apart from the phases that measure, so that the table is a function of the
run's ``fleet.json`` document alone and can be rebuilt or tested from a stored
result (tests/test_bench_tools.py checks the console's rows this way).
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from budget import budget_rows
from fleet_procs import HERE


def spread(values: list[float], nd: int = 1) -> dict[str, float]:
    vals = [v for v in values if v == v]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "median": round(statistics.median(vals), nd),
        "min": round(min(vals), nd),
        "max": round(max(vals), nd),
    }


def fmt(s: dict[str, float], unit: str = "") -> str:
    return f"{s['median']:g}{unit} ({s['min']:g}-{s['max']:g})"


# ---------------------------------------------------------------- profile


#: Frames every sample of a thread passes through: they say nothing about where time goes.
_PLUMBING = (
    "threading.py",
    "concurrent/futures/thread.py",
    "<frozen runpy>",
    "click/core.py",
    "towerctl/cli/",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "serve_forever",
)


def _thread_of(frames: list[str]) -> str:
    joined = ";".join(frames)
    if "writer_child.py" in joined:  # the forked writer process (towerctl.store.writer_child)
        return "writer process"
    if "Thread._bootstrap" not in joined:
        # The loop also runs Writer code (enqueue, settle): only a thread's
        # stack is a thread's.
        return "event loop"
    if "Applier.apply" in joined:
        return "group-commit writer thread"
    if "_connection_worker_thread" in joined:
        return "aiosqlite thread (reads)"
    return "other threads"


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Own time (leaf frame) and cumulative time (frame anywhere on the stack) from py-spy raw output.

    Percentages are of all non-idle samples (py-spy skips idle threads by
    default); C code (sqlite3, hashlib, json's C encoder) counts as own time
    of the Python frame that called it.
    """
    if not raw.exists():
        return {"error": "py-spy wrote no profile (is ptrace allowed?)"}
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            if not any(p in f for p in _PLUMBING):
                cum[f] += n
        threads[_thread_of(frames)] += n

    def table(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * v / max(1, total), 1)) for f, v in c.most_common(top)]

    return {
        "samples": total,
        "file": str(raw.relative_to(HERE.parent)),
        "threads_pct": table(threads),
        "own_pct": table(own),
        "cumulative_pct": table(cum),
    }


# ---------------------------------------------------------------- table


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def tui_rows(tui: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The console's rows of the table, from ``tui_bench.py``'s JSON."""
    ev, backlog = tui["events_per_s"], tui["backlog_events"]["all"]
    keys = tui["keypress_to_decision_sent_ms"]["all"]
    received = f"{ev['received']:.0f} ({ev['load_actions_per_s_last']:.0f} actions/s)"
    return [
        (
            f"TUI: hub events/s received ({tui['sessions_seen']} sessions)",
            received if ev["target_met"] else f"{received}, SHORTFALL",
            "—",
            "—",
            f"≥ {ev['target']:,.0f}",
        ),
        (
            "TUI: keypress → decision sent p99 (max)",
            f"{keys['p99']:.1f} ms ({keys['max']:.1f}; n {keys['n']:.0f})",
            "—",
            "—",
            "< 100 ms",
        ),
        (
            "TUI: event backlog p99 / max (TUI cores)",
            f"{backlog['p99']:.0f} / {backlog['max']:.0f} ({tui['cores_used']['tui']})",
            "—",
            "—",
            "bounded",
        ),
    ]


def _scales(figures: dict[str, Any]) -> list[str]:
    """The agent counts measured, smallest first; not the extra runs kept
    beside them ("1000-profiled", "1000-pinned") nor other keys."""
    return sorted((k for k in figures if k.isdigit()), key=int)


def build_table(out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rows: list[tuple[str, str, str, str, str]] = []
    ratios: dict[str, Any] = {}
    echo, thr = out["echo"], out["throughput"]
    for n in _scales(thr["full"]):
        t, e = thr["full"][n]["rate"], echo.get(n, {}).get("rate")
        r = ratio(t["median"], e["median"]) if e else float("nan")
        ratios[f"throughput_{n}"] = r
        target = {"100": "≥ 0.8x", "1000": "≥ 0.6x"}.get(n, "—")
        rows.append(
            (f"allowed actions/s, {n} agents (sync full)", fmt(t), fmt(e) if e else "—", f"{r:.3f}x", target)
        )
    pinned = thr["full"].get("1000-pinned")
    if pinned and "1000" in echo:
        # The same hub with its serve process alone on a CPU (writer and load on
        # the other): what the shared cores cost it. Not the target's figure.
        t, e = pinned["rate"], echo["1000"]["rate"]
        ratios["throughput_1000_pinned"] = r = ratio(t["median"], e["median"])
        waited = pinned.get("serve_wait", "?")
        rows.append(
            (
                "allowed actions/s, 1000 agents, serve alone on a CPU (sync full)",
                f"{fmt(t)}; serve busy {pinned['serve_cpu']} + waiting {waited}",
                fmt(e),
                f"{r:.3f}x",
                "—",
            )
        )
    for n in _scales(echo):
        e = echo[n]
        if "rate_after" in e:  # measured again after the hub: the limit above pools both
            ratios[f"echo_after_vs_before_{n}"] = ratio(e["rate_after"]["median"], e["rate_before"]["median"])
            rows.append(
                (
                    f"echo round trips/s before / after the hub, {n} clients",
                    "—",
                    f"{fmt(e['rate_before'])} / {fmt(e['rate_after'])}",
                    f"{ratios[f'echo_after_vs_before_{n}']:.3f}x",
                    "—",
                )
            )
    ceiling = out.get("ceiling", {})
    for n in _scales(ceiling):
        c, e = ceiling[n]["rate"], echo.get(n, {}).get("rate")
        t = thr["full"].get(n, {}).get("rate")
        r = ratio(c["median"], e["median"]) if e else float("nan")
        ratios[f"ceiling_{n}"] = r
        label = f"protocol ceiling (null hub), {n} agents"
        rows.append((label, fmt(c), fmt(e) if e else "—", f"{r:.3f}x", "—"))
        if t:
            ratios[f"towerctl_vs_ceiling_{n}"] = ratio(t["median"], c["median"])
            rows.append(
                (
                    f"towerctl / protocol ceiling, {n} agents",
                    f"{t['median']:.0f} / {c['median']:.0f}",
                    "—",
                    f"{ratios[f'towerctl_vs_ceiling_{n}']:.3f}x",
                    "—",
                )
            )
    for n in _scales(thr["full"]):
        # Noise-robust companion: work per CPU-second of the server process.
        t, e = thr["full"][n], echo.get(n)
        if not e or not t["hub_cpu"] or not e["server_cpu"]:
            continue
        hub_eff, echo_eff = t["rate"]["median"] / t["hub_cpu"], e["rate"]["median"] / e["server_cpu"]
        r = ratio(hub_eff, echo_eff)
        ratios[f"per_server_cpu_s_{n}"] = r
        rows.append(
            (
                f"per server CPU-second, {n} agents (full)",
                f"{hub_eff:.0f} actions (hub cpu {t['hub_cpu']})",
                f"{echo_eff:.0f} round trips (cpu {e['server_cpu']})",
                f"{r:.3f}x",
                "—",
            )
        )
    for n in _scales(thr["full"]):
        # Whether the serve process, one thread, is the stage that saturates.
        t = thr["full"][n]
        if "serve_cpu" in t:
            machine = t.get("machine_cpu", "?")
            wait = t.get("serve_wait")
            waited = f" + {wait} runnable, waiting for a CPU" if wait is not None else ""
            rows.append(
                (
                    f"serve process busy (one thread), {n} agents (full)",
                    f"{t['serve_cpu']} of 1 core{waited}; hub {t['hub_cpu']}, machine {machine} of 2",
                    "—",
                    "—",
                    "—",
                )
            )
    rows += budget_rows(out)
    for n in _scales(thr["normal"]):
        t, e = thr["normal"][n]["rate"], echo.get(n, {}).get("rate")
        r = ratio(t["median"], e["median"]) if e else float("nan")
        ratios[f"throughput_{n}_sync_normal"] = r
        rows.append(
            (f"allowed actions/s, {n} agents (sync normal)", fmt(t), fmt(e) if e else "—", f"{r:.3f}x", "—")
        )
        full = thr["full"].get(n, {}).get("rate")
        if full:
            ratios[f"full_vs_normal_{n}"] = ratio(full["median"], t["median"])
    for lat in out.get("latency_runs", []):
        rows.append(
            (
                "offered / achieved actions/s (1,000 agents, 5 % ask)",
                f"{lat['offered_rate']} / {fmt(lat['achieved_rate'])}",
                "—",
                "—",
                "1,000/s",
            )
        )
        if "cpu_cores" in lat:
            c = lat["cpu_cores"]
            rows.append(
                (
                    f"@{lat['offered_rate']}/s cores busy: hub / load / operator client / machine",
                    f"{c['hub']} / {c['load']} / {c['operator_client']} / {c['machine']} of {c['of']}",
                    "—",
                    "—",
                    "—",
                )
            )
        if "serve_gc" in lat:
            g = lat["serve_gc"]
            rows.append(
                (
                    f"@{lat['offered_rate']}/s serve GC: collections (over 10 ms), longest",
                    f"{g['collections']:.0f} ({g['over_10ms']:.0f}), ≤ {g['longest_le_ms']:g} ms",
                    "—",
                    "—",
                    "—",
                )
            )
        floor = ceiling.get(f"latency_{lat['offered_rate']}", {}).get("allowed_ms", {})
        for q in ("p50", "p99", "p99.9"):
            limit = floor.get(q)
            rows.append(
                (
                    f"@{lat['offered_rate']}/s allowed propose→ack {q}",
                    fmt(lat["allowed_ms"][q], " ms"),
                    f"{fmt(limit, ' ms')} (null hub)" if limit else "—",
                    f"{ratio(lat['allowed_ms'][q]['median'], limit['median']):.1f}x" if limit else "—",
                    "≤ 5 ms" if q == "p99" else "—",
                )
            )
        for key, label in (
            ("asked_to_operator_ms", "asked propose→operator"),
            ("decide_to_unblocked_ms", "decide→shim unblocked"),
        ):
            for q in ("p50", "p99", "p99.9"):
                rows.append(
                    (
                        f"@{lat['offered_rate']}/s {label} {q}",
                        fmt(lat[key][q], " ms"),
                        "—",
                        "—",
                        "≤ 10 ms" if q == "p99" else "—",
                    )
                )
    mem = out.get("memory", {})
    for n in ("10", "100", "1000"):
        if n in mem:
            limit = f"{echo['rss_per_idle_conn_kib']} KiB" if n == "1000" else "—"
            rows.append(
                (
                    f"hub RSS per idle session, {n} sessions",
                    f"{mem[n]['per_session_kib']} KiB",
                    limit,
                    f"{ratio(mem[n]['per_session_kib'], echo['rss_per_idle_conn_kib']):.2f}x"
                    if n == "1000"
                    else "—",
                    "≤ 64 KiB" if n == "1000" else "—",
                )
            )
    shim = out.get("shim")
    if shim:
        pa = shim["per_action"]["admit+report (allowed, end to end in the shim)"]
        rows.append(
            (
                "shim cost per allowed action",
                f"{pa['median_us']} µs (best {pa['best_us']})",
                "—",
                "—",
                "≤ 200 µs",
            )
        )
        st = shim["startup"]
        rows.append(
            (
                "`towerctl exec -- true` vs bare `true`",
                f"{st['`towerctl exec -- true` (allowed)']['median_ms']} ms vs "
                f"{st['bare `true`']['median_ms']} ms",
                "—",
                f"+{st['exec_added_ms']} ms",
                "≤ +50 ms",
            )
        )
        rows.append(
            ("`import agent_shim` (vs python -c pass)", f"+{st['import_agent_shim_ms']} ms", "—", "—", "—")
        )
    tui = out.get("tui")
    if tui:
        rows += tui_rows(tui)
    for key in ("audit_full", "audit_normal"):
        a = out.get(key)
        if a:
            rows.append(
                (
                    f"acked actions with rows + audit ({key[6:]})",
                    f"{a['acked'] - max(a['missing_action_row'], a['missing_proposed_audit'])}/{a['acked']}",
                    "—",
                    "—",
                    "all",
                )
            )
            rows.append(
                (f"`towerctl audit verify` ({key[6:]})", f"exit {a['audit_verify_exit']}", "—", "—", "exit 0")
            )
    widths = [
        max(len(r[i]) for r in [*rows, ("figure", "towerctl", "limit", "ratio", "target")]) for i in range(5)
    ]
    head = ("figure", "towerctl", "physical limit (echo)", "ratio", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines), ratios
