"""Per-environment policy: verdicts per risk class, rules, timeout, rate limit.

What operators need to answer "why did that agent have to ask?" and "what
would production let through?". Admins press ``e`` to edit the highlighted
environment as TOML (the same format as the policy file, so nothing new to
learn); the hub checks it, versions it and pushes it to that environment's
shims at once.
"""

from __future__ import annotations

from rich import box
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from agent_shim.policy import EnvPolicy, PolicyDoc, dump_policy_toml, format_duration
from towerctl.tui.render import Palette, agent_block, env_text, is_production, set_border_title
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.screens.policy_edit import PolicyEditScreen
from towerctl.tui.state import Delta, TowerState
from towerctl.tui.widgets.footer import TowerFooter
from towerctl.tui.widgets.keyed_table import Col, KeyedTable

_VERDICT_STYLE = {"allow": "success", "ask": "warning", "deny": "error"}


def version_label(version: int) -> str:
    """Version 0 is the built-in policy: nobody has set one for this environment yet."""
    return f"v{version}" if version else "built-in"


def verdict_text(verdict: str, palette: Palette) -> Text:
    colour = getattr(palette, _VERDICT_STYLE.get(verdict, "muted"))
    return Text(verdict, Style(color=colour, bold=verdict != "allow"))


class PolicyTable(KeyedTable):
    """One row per environment the hub has a policy for."""

    COLUMNS = (
        Col("env", "environment", 24, 12, fill=True),
        Col("read", "read", 6),
        Col("write", "write", 6),
        Col("destructive", "destr.", 6),
        Col("timeout", "timeout", 8),
        Col("rate", "max/min", 7),
        Col("rules", "rules", 5),
        Col("version", "version", 8),
        Col("sessions", "sessions", 8),
    )

    def cells(self, env: str, state: TowerState, palette: Palette) -> dict[str, Text]:
        info = state.policies[env]
        pol = info.policy
        live = sum(1 for s in state.sessions.values() if s.env == env and s.connected)
        return {
            "env": env_text(env, env in state.frozen, palette),
            "read": verdict_text(pol.read, palette),
            "write": verdict_text(pol.write, palette),
            "destructive": verdict_text(pol.destructive, palette),
            "timeout": Text(format_duration(pol.approval_timeout_s), justify="right"),
            "rate": Text(str(pol.max_actions_per_minute or "—"), justify="right"),
            "rules": Text(str(len(pol.rules)), justify="right"),
            "version": Text(version_label(info.version), justify="right"),
            "sessions": Text(str(live), justify="right"),
        }

    def sync(self, state: TowerState, palette: Palette) -> None:
        self.drop_missing(state.policies)
        order = sorted(state.policies, key=lambda e: (not is_production(e), e))
        for env in order:
            self.upsert(env, self.cells(env, state, palette))


def rules_view(env: str, policy: EnvPolicy, palette: Palette) -> Table:
    table = Table(
        title=Text(f"{env}: rules, first match wins, before the risk defaults", Style(bold=True)),
        title_justify="left",
        expand=True,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style=Style(bold=True),
    )
    table.add_column("#", justify="right", width=3)
    table.add_column("kind", width=6)
    table.add_column("match", ratio=2, overflow="fold")
    table.add_column("risk", width=11)
    table.add_column("verdict", width=7)
    table.add_column("reason", ratio=3, overflow="fold")
    for i, rule in enumerate(policy.rules, 1):
        table.add_row(
            str(i),
            rule.kind,
            agent_block(rule.match),
            rule.risk or "any",
            verdict_text(rule.verdict, palette),
            agent_block(rule.reason) if rule.reason else Text("—", Style(dim=True)),
        )
    if not policy.rules:
        table.add_row("", "", Text("no rules: the risk defaults decide", Style(dim=True)), "", "", "")
    return table


class PolicyScreen(TowerScreen):
    """Every environment's policy; ``e`` edits the highlighted one (admins)."""

    VIEW_NAME = "policy"
    AUTO_FOCUS = "#policies"
    DYNAMIC_ACTIONS = ("edit",)

    BINDINGS = [
        Binding("e", "edit", "Edit", tooltip="Edit this environment's policy as TOML (admin)"),
        Binding("escape", "app.switch_view('fleet')", "Fleet", show=False, tooltip="Back to the fleet"),
    ]

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        with Vertical(id="policy-body"):
            yield PolicyTable(id="policies")
            with VerticalScroll(id="policy-detail"):
                yield Static(id="policy-rules")
            yield Static(id="policy-note")
        yield TowerFooter()

    def sync(self, delta: Delta | None) -> None:
        if delta is not None and not (delta.full or delta.policies or delta.frozen or delta.sessions):
            return
        table = self.query_one(PolicyTable)
        table.sync(self.state, self.host.palette)
        set_border_title(table, f"Policies ({len(self.state.policies)} environments)")
        self._show_rules()
        note = Text("Unknown environments get the strictest policy. ", Style(dim=True))
        if self.state.role == "admin":
            note.append("e edits the highlighted environment; ctrl+s applies.", Style(dim=True))
        else:
            note.append(f"Editing needs the admin role (you are {self.state.role or '?'}).", Style(dim=True))
        self.query_one("#policy-note", Static).update(note)

    def _show_rules(self) -> None:
        env = self.query_one(PolicyTable).selected_key
        info = self.state.policies.get(env or "")
        rules = self.query_one("#policy-rules", Static)
        if env is None or info is None:
            rules.update(Text("No policies received yet.", Style(dim=True)))
            return
        rules.update(rules_view(env, info.policy, self.host.palette))

    @on(DataTable.RowHighlighted, "#policies")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_rules()
        self.update_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "edit":
            selected = self.query_one(PolicyTable).selected_key
            return True if self.state.role == "admin" and selected is not None else None
        return True

    def action_edit(self) -> None:
        env = self.query_one(PolicyTable).selected_key
        info = self.state.policies.get(env or "")
        if env is None or info is None:
            return
        text = dump_policy_toml(PolicyDoc(environments={env: info.policy}))
        self.app.push_screen(PolicyEditScreen(env, version_label(info.version), text))
