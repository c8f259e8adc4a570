"""The two questions the console asks: "are you sure?" and "why?".

Both are modal so that nothing else can be triggered while one is open (a
stray ``k`` must not kill a second session behind a confirmation), and both
answer through ``dismiss`` so the caller decides what happens next.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y`` confirms, ``n`` or escape cancels (the safe default)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, title: str, body: Text, *, danger: bool = True) -> None:
        super().__init__(classes="-danger" if danger else "")
        self._title = title
        self._body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self._title), id="dialog-title")
            yield Static(self._body, id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="default")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ReasonScreen(ModalScreen[str | None]):
    """Asks for a reason (sent to the agent verbatim); escape cancels, enter sends."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: Text, *, placeholder: str = "reason for the agent") -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self._title), id="dialog-title")
            yield Static(self._body, id="dialog-body")
            yield Input(placeholder=self._placeholder, id="reason", max_length=4000)
            with Horizontal(id="dialog-buttons"):
                yield Button("Send (enter)", id="send", variant="error")
                yield Button("Cancel (esc)", id="cancel", variant="default")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self.dismiss(self.query_one(Input).value.strip())
        else:
            self.dismiss(None)
