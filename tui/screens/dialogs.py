"""Modal dialogs: text entry (edit a sentence, give a reason), sign confirmation, help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class TextDialog(ModalScreen[str | None]):
    """One line of text: Enter saves, Escape cancels. Empty input is refused with a message
    when ``required`` (a reason must be given in words)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#dialog-input"

    error: reactive[str] = reactive("", init=False)
    """Why the text was refused (shown under the field)."""

    def __init__(self, title: str, *, value: str = "", placeholder: str = "", hint: str = "",
                 required: bool = True, id: str | None = None):
        super().__init__(id=id)
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.hint = hint
        self.required = required
        self._error = Static("", id="dialog-error", classes="dialog-error")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.hint:
                yield Static(self.hint, classes="dialog-hint")
            yield Input(value=self.value, placeholder=self.placeholder, id="dialog-input")
            yield self._error
            yield Static("Enter to save · Esc to cancel", classes="dialog-keys")

    def watch_error(self, error: str) -> None:
        self._error.update(error)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if self.required and not text:
            self.error = "Please type something, or press Esc to cancel."
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no with the consequences spelled out; ``y`` confirms, ``n``/Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes"),
        Binding("n,escape", "cancel", "No"),
    ]
    AUTO_FOCUS = "#cancel"
    """Cancel has the focus: Enter alone never signs."""

    def __init__(self, title: str, body: Text | str, *, confirm_label: str = "Sign", id: str | None = None):
        super().__init__(id=id)
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm_label} (y)", variant="success", id="confirm")
                yield Button("Cancel (n)", variant="default", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class HelpScreen(ModalScreen[None]):
    """Every key binding of the screen underneath and of the app, in one list."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]):
        super().__init__(id="help")
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text()
        for title, rows in self.sections:
            text.append(f"{title}\n", style="bold underline")
            for keys, what in rows:
                text.append(f"  {keys:<16}", style="bold #87d7ff")
                text.append(f"{what}\n")
            text.append("\n")
        text.append("Flagged sentences are marked ⚑ and must be edited, accepted with a reason, or deleted "
                    "before the note can be signed. ✎ marks sentences written or edited by the clinician.",
                    style="dim")
        with Vertical(classes="dialog help-dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(text)
            yield Static("Esc or ? to close", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)


def binding_rows(bindings: Sequence[BindingType]) -> list[tuple[str, str]]:
    rows = []
    for b in bindings:
        if not isinstance(b, Binding) or not b.description:
            continue
        keys = ", ".join(_key_name(k) for k in b.key.split(","))
        rows.append((keys, b.description))
    return rows


_NAMES = {"question_mark": "?", "escape": "Esc", "enter": "Enter", "slash": "/", "up": "↑", "down": "↓",
          "tab": "Tab", "shift+tab": "Shift+Tab", "right_square_bracket": "]", "left_square_bracket": "["}


def _key_name(key: str) -> str:
    key = key.strip()
    if key in _NAMES:
        return _NAMES[key]
    if len(key) == 1 and key.isupper():
        return f"Shift+{key.lower()}"
    return key
