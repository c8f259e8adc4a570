"""A DataTable updated by row key, touching only the cells whose text changed.

A full DataTable repaint costs 40-95 ms and ``update_cell`` about 13 µs, so
every live table in the console is updated through ``upsert``/``drop``:
rows are never cleared and refilled on an event, and a cell is rewritten only
when its text or style differs, which also keeps the cursor where the
operator left it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey


@dataclass(frozen=True, slots=True)
class Col:
    """A column: its preferred width, the narrowest it may get, and whether it takes the rest.

    One column per table may ``fill``: it gets whatever width the others leave,
    so that the most useful text (a command) uses the whole terminal and the
    table fits 80 columns without horizontal scrolling.
    """

    key: str
    label: str
    width: int = 10
    min_width: int | None = None
    fill: bool = False

    @property
    def narrowest(self) -> int:
        return self.width if self.min_width is None else self.min_width


def fit_widths(cols: tuple[Col, ...], available: int, padding: int) -> dict[str, int]:
    """Column widths for ``available`` cells: preferred widths if they fit, else shrunk in order."""
    widths = {c.key: c.width for c in cols}
    fillers = [c for c in cols if c.fill]
    used = sum(c.width for c in cols if not c.fill) + 2 * padding * len(cols)
    need = used + sum(c.narrowest for c in fillers)
    for col in reversed(cols):  # the leftmost columns identify a row: they shrink last
        if need <= available:
            break
        if col.fill:
            continue
        cut = min(col.width - col.narrowest, need - available)
        widths[col.key] -= cut
        need -= cut
        used -= cut
    for col in fillers:
        widths[col.key] = max(col.narrowest, (available - used) // len(fillers))
    return widths


class KeyedTable(DataTable[Text]):
    """Rows keyed by a hub id (session, action, environment)."""

    COLUMNS: tuple[Col, ...] = ()

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        for col in self.COLUMNS:
            self.add_column(Text(col.label), width=col.width, key=col.key)
        self._fitted_for = -1

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Re-divide the width among the columns (on resize only: widths never follow content)."""
        available = self.scrollable_content_region.width
        if available <= 0 or available == self._fitted_for:
            return
        self._fitted_for = available
        widths = fit_widths(self.COLUMNS, available, self.cell_padding)
        for key, column in self.columns.items():
            column.width = widths.get(str(key.value), column.width)
            column.auto_width = False
        # DataTable recomputes its virtual size and drops cached lines on this flag.
        self._require_update_dimensions = True
        self._clear_caches()
        self.refresh()

    def has_row(self, key: str) -> bool:
        return RowKey(key) in self.rows

    def row_keys(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]

    def upsert(self, key: str, cells: Mapping[str, Text]) -> bool:
        """Add the row, or update the cells that differ; True when the row is new."""
        if not self.has_row(key):
            self.add_row(*(cells.get(col.key, Text("")) for col in self.COLUMNS), key=key)
            return True
        for col_key, value in cells.items():
            try:
                current = self.get_cell(key, col_key)
            except CellDoesNotExist:
                continue
            if current != value:
                self.update_cell(key, col_key, value)
        return False

    def drop(self, key: str) -> None:
        if self.has_row(key):
            self.remove_row(key)

    def drop_missing(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        for key in self.row_keys():
            if key not in wanted:
                self.remove_row(key)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if there is one."""
        if self.row_count == 0:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return None if row_key.value is None else str(row_key.value)

    def follow_tail(self, was_at_end: bool) -> None:
        """Keep the cursor on the newest row if it was there (like ``tail -f``)."""
        if was_at_end and self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    @property
    def at_end(self) -> bool:
        return self.cursor_row >= self.row_count - 1

    def select_key(self, key: str) -> None:
        if self.has_row(key):
            self.move_cursor(row=self.get_row_index(key))
