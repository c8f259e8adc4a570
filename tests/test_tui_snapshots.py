"""Snapshot tests of each main view (pytest-textual-snapshot).

The app runs from the fixed sample snapshot with a frozen clock, so every
countdown, uptime and timestamp is the same on every run. Regenerate with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs
(tests/__snapshots__/test_tui_snapshots/) before committing them.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from towerctl.tui.app import TowerApp
from towerctl.tui.render import FixedClock
from towerctl.tui.sample import SAMPLE_NOW, sample_snapshot

SnapCompare = Callable[..., bool]


def sample_app(theme: str | None = None, role: str = "admin") -> TowerApp:
    return TowerApp(
        "ws://127.0.0.1:7340",
        "",
        theme=theme,
        initial_snapshot=sample_snapshot(),
        operator=("alice", role),
        clock=FixedClock(SAMPLE_NOW),
    )


async def open_first_approval(pilot: Pilot[int]) -> None:
    await pilot.press("a", "enter")
    await pilot.pause()


def test_fleet_view(snap_compare: SnapCompare) -> None:
    """Sessions (prod first, ▲PROD in red, staging ❄frozen), the queue oldest first, the feed."""
    assert snap_compare(sample_app(), terminal_size=(120, 40))


def test_fleet_view_at_80x24(snap_compare: SnapCompare) -> None:
    """The same at 80x24: columns fitted to the width, footer and header still readable."""
    assert snap_compare(sample_app(), terminal_size=(80, 24))


def test_fleet_view_light_theme(snap_compare: SnapCompare) -> None:
    assert snap_compare(sample_app(theme="tower-light"), terminal_size=(120, 40))


def test_fleet_view_high_contrast_theme(snap_compare: SnapCompare) -> None:
    assert snap_compare(sample_app(theme="tower-contrast"), terminal_size=(120, 40))


def test_approval_view(snap_compare: SnapCompare) -> None:
    """The command highlighted, risk reasons, policy, agent's reason, rollback, dry run, time left."""
    assert snap_compare(sample_app(), terminal_size=(120, 40), run_before=open_first_approval)


def test_approval_view_at_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(sample_app(), terminal_size=(80, 24), run_before=open_first_approval)


def test_policy_view(snap_compare: SnapCompare) -> None:
    """Verdicts per risk class, timeout, rate limit, version; prod's rules below."""
    assert snap_compare(sample_app(), terminal_size=(120, 40), press=["2"])


def test_audit_view(snap_compare: SnapCompare) -> None:
    """Actions seen, with who decided and why; the chain status says where to verify it."""
    assert snap_compare(sample_app(), terminal_size=(120, 40), press=["3"])
