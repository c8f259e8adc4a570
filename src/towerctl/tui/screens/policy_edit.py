"""Editing one environment's policy as TOML, checked before anything is sent.

The text is parsed with the same parser as ``towerctl policy apply``, so the
error names the key and line, shown under the editor with the cursor moved
there; nothing reaches the hub until the whole text is valid. The hub checks
again and answers; only then does the editor close. Adding a second
``[environments.NAME]`` table applies that environment too.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static, TextArea

from agent_shim.policy import PolicyError, parse_policy_toml
from towerctl.tui.messages import PolicyOp, Request
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.state import Delta
from towerctl.tui.widgets.footer import TowerFooter


class PolicyEditScreen(TowerScreen):
    """A TOML editor for ``env``'s policy; ctrl+s applies, escape discards."""

    VIEW_NAME = "policy edit"
    AUTO_FOCUS = "#policy-editor"
    DYNAMIC_ACTIONS = ("apply",)

    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply", priority=True, tooltip="Check and apply the policy"),
        Binding("escape", "cancel", "Cancel", tooltip="Discard the edit"),
    ]

    def __init__(self, env: str, version: str, text: str) -> None:
        super().__init__()
        self.env = env
        self.version = version
        self._text = text
        self._waiting: set[str] = set()
        self._applied: list[str] = []

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        yield Static(
            Text(f"Editing {self.env} (now {self.version}). ctrl+s checks and applies; escape discards."),
            id="editor-title",
        )
        yield TextArea(self._text, id="policy-editor", soft_wrap=False, show_line_numbers=True)
        yield Static(id="editor-result")
        yield TowerFooter()

    def sync(self, delta: Delta | None) -> None:
        """Nothing on this view follows the hub; the editor keeps what the operator typed."""

    def _result(self, text: Text) -> None:
        self.query_one("#editor-result", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply" and (self._waiting or self.state.role != "admin"):
            return None
        return True

    def action_apply(self) -> None:
        editor = self.query_one(TextArea)
        try:
            doc = parse_policy_toml(editor.text)
        except PolicyError as exc:
            self._result(Text(f"✖ {exc}", Style(color=self.host.palette.error, bold=True)))
            if exc.line is not None:
                editor.move_cursor((max(0, exc.line - 1), 0))
            editor.focus()
            return
        if not doc.environments:
            self._result(Text("✖ nothing to apply: the text has no [environments.NAME] table"))
            return
        self._waiting = set(doc.environments)
        self._applied = []
        self._result(Text(f"checked; applying {', '.join(doc.environments)}…", Style(italic=True)))
        self.update_bindings()
        for env, policy in doc.environments.items():
            self.submit(PolicyOp(origin=self, env=env, policy=policy))

    def action_cancel(self) -> None:
        self.dismiss()

    def request_finished(self, request: Request, ok: bool, message: str) -> None:
        if not isinstance(request, PolicyOp) or request.env not in self._waiting:
            return
        self._waiting.discard(request.env)
        self.update_bindings()
        if not ok:
            self._waiting.clear()
            style = Style(color=self.host.palette.error, bold=True)
            self._result(Text(f"✖ the hub refused {request.env}: {message}", style))
            return
        self._applied.append(request.env)
        if not self._waiting:
            self.notify(
                f"Policy applied to {', '.join(self._applied)} and pushed to its shims; "
                "the policy view shows the new version.",
                markup=False,
            )
            self.dismiss()
