"""Render the real console with demo data into ``screenshots/*.svg``.

Usage (from the repository root, in the project's venv)::

    python scripts/screenshots.py [--out screenshots]

Nothing here is a mock-up: an embedded hub (the code ``towerctl up`` runs) on
127.0.0.1 and a temporary data directory, the demo agents on real shims, and
``TowerApp`` connected to that hub as an operator, driven by the same key
presses a person would use (``a`` ``enter`` for the approval view, ``2`` the
policies, ``3`` the audit log, the theme set on the app). The agents run with
a fixed seed and a fixed number of actions each, so every run shows the same
sessions, commands, decisions and queue; only wall-clock times and countdowns
differ between runs (they come from the real clock, as on a real screen).

Written: fleet, approval, policy, audit, and fleet-<theme> for each shipped theme.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]  # run from a checkout without installing

from textual.pilot import Pilot  # noqa: E402

from agent_shim.protocol import ActionInfo  # noqa: E402
from towerctl.cli.up import Embedded, start_embedded  # noqa: E402
from towerctl.demo import demo_policy, run_demo_agents  # noqa: E402
from towerctl.operator import OperatorClient  # noqa: E402
from towerctl.tui.app import TowerApp  # noqa: E402
from towerctl.tui.screens.approval import ApprovalScreen  # noqa: E402
from towerctl.tui.screens.audit import AuditScreen  # noqa: E402
from towerctl.tui.screens.policy import PolicyScreen  # noqa: E402
from towerctl.tui.themes import SHIPPED_THEMES  # noqa: E402
from towerctl.tui.widgets.fleet_table import FleetTable  # noqa: E402

SIZE: Final = (120, 36)
#: Chosen for the picture: approvals waiting in prod, staging and dev, and a
#: helm upgrade with a dry-run diff and a rollback plan at the head of prod's.
SEED: Final = 22
#: The session whose live feed the fleet screenshot shows.
FEED_AGENT: Final = "deploy-bot"
AGENTS: Final = 6
#: Each agent goes quiet after this many proposals (or when blocked on an approval).
ACTIONS_PER_AGENT: Final = 7
#: Quick, yet slow enough that simulated runs take a visible tenth of a second.
PACE: Final = (0.1, 0.4)
TIMEOUT_S: Final = 30.0
TERMINAL: Final = frozenset({"succeeded", "failed", "denied", "expired", "cancelled"})


async def until(what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Wait for ``predicate`` (polling the event loop), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.02)


def settled(op: OperatorClient) -> bool:
    """Every agent is done: out of actions or blocked on an approval; nothing in flight."""
    if len(op.sessions) < AGENTS:
        return False
    if any(a.state not in TERMINAL and a.state != "pending" for a in op.actions.values()):
        return False
    for sid in op.sessions:
        mine = [a for a in op.actions.values() if a.session_id == sid]
        if len(mine) < ACTIONS_PER_AGENT and not any(a.state == "pending" for a in mine):
            return False
    return any(a.env == "prod" for a in op.pending.values())


def richest(pending: list[ActionInfo]) -> int:
    """Index of the approval worth showing: prod first, then rollback plan and dry run."""

    def score(info: ActionInfo) -> tuple[bool, bool, bool, int]:
        a = info.action
        return (info.env == "prod", bool(a.dry_run), bool(a.rollback), -info.created_at)

    return max(range(len(pending)), key=lambda i: score(pending[i]))


async def snap(app: TowerApp, pilot: Pilot[int], out: Path, name: str) -> None:
    await pilot.pause()
    app.clear_notifications()  # toasts would cover the view; they are not what is being shown
    await pilot.pause()
    path = app.save_screenshot(filename=f"{name}.svg", path=str(out))
    print(f"wrote {Path(path).relative_to(REPO) if Path(path).is_relative_to(REPO) else path}")


async def drive(emb: Embedded, out: Path) -> None:
    app = TowerApp(emb.url, emb.admin_token, theme="tower-dark", db_path=emb.db, key_path=emb.key)
    async with app.run_test(size=SIZE) as pilot:
        await until("the console to connect", lambda: app.state.link.status == "connected")
        await until("every session on screen", lambda: len(app.state.sessions) >= AGENTS)
        await until("the audit log", lambda: bool(app.state.audit_records))
        # The header counts records as they land and verifies behind the count;
        # the pictures show a log verified up to its last record.
        await until("the audit log verified", lambda: not app.state.audit_unverified())
        fleet = app.screen.query_one(FleetTable)
        for _ in range(len(app.state.sessions)):
            selected = app.state.sessions.get(fleet.selected_key or "")
            if selected is not None and selected.agent == FEED_AGENT:
                break
            await pilot.press("down")
        await snap(app, pilot, out, "fleet")

        pending = app.state.pending_oldest_first()
        await pilot.press("a", *["down"] * richest(pending), "enter")
        await until("the approval view", lambda: isinstance(app.screen, ApprovalScreen))
        await snap(app, pilot, out, "approval")
        await pilot.press("escape")
        await until("the fleet again", lambda: not isinstance(app.screen, ApprovalScreen))

        await pilot.press("2")
        await until("the policy view", lambda: isinstance(app.screen, PolicyScreen))
        await snap(app, pilot, out, "policy")

        await pilot.press("3")
        await until("the audit view", lambda: isinstance(app.screen, AuditScreen))
        await snap(app, pilot, out, "audit")

        await pilot.press("1")
        await until("the fleet", lambda: app.current_mode == "fleet")
        await pilot.press("s")  # back to the session table, where the fleet shot had its cursor
        for theme in SHIPPED_THEMES:
            app.theme = theme
            await snap(app, pilot, out, f"fleet-{theme}")
        app.theme = "tower-dark"


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="towerctl-shots-") as home:
        os.environ["TOWER_HOME"] = home  # tokens, URL file and database stay in the temp dir
        emb = await start_embedded(port=0, demo=True, policy=demo_policy())
        stop = asyncio.Event()
        demo = asyncio.create_task(
            run_demo_agents(
                emb.url,
                emb.agent_token,
                count=AGENTS,
                stop=stop,
                seed=SEED,
                pace=PACE,
                max_actions=ACTIONS_PER_AGENT,
            )
        )
        try:
            async with OperatorClient(emb.url, emb.admin_token, client="screenshots") as op:
                await until("the demo agents to settle", lambda: settled(op))
            await drive(emb, out)
        finally:
            stop.set()
            await demo
            await emb.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "screenshots", help="folder for the SVG files")
    folder = parser.parse_args().out.resolve()
    folder.mkdir(parents=True, exist_ok=True)  # save_screenshot does not create it
    asyncio.run(main(folder))
