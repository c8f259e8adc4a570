"""A DataTable updated by row key, touching only the cells whose text changed.

A full DataTable repaint costs 40-95 ms, so every live table in the console is
updated through ``upsert``/``drop``: rows are never cleared and refilled on an
event, and a cell is rewritten only when its text or style differs, which also
keeps the cursor where the operator left it.

``DataTable.update_cell`` is not used for that: each call repaints the whole
widget (``refresh()`` with no region, and every render cache keyed by one
update counter), so a batch of N updates became N full-widget refreshes and
one full repaint per frame. ``upsert`` writes the changed cells of a row, bumps
the counter once and refreshes only that row's line, which the compositor
skips when the row is scrolled out of view.

Whole-table repaints still happen (the queue grows, focus moves, a view comes
back), and DataTable re-renders every visible cell then, about 0.3 ms each
through Rich, and re-assembles every line, since its caches are all keyed by
that counter. ``upsert`` replaces a changed cell's Text and never mutates one,
so a cell's identity versions its content: rendered cells and assembled row
lines are also cached by the identity of their cells, and a repaint redoes
only rows that changed. (This relies on DataTable internals; textual is
pinned exactly, and tests cover it.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from towerctl.tui.render import same_text

#: Fixed and scrollable segments of one line of a row (DataTable's own shape).
RowLines = tuple[list[list[Segment]], list[list[Segment]]]


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
        #: Rendered cells by the identity of their Text (see the module docstring).
        self._cell_lines: LRUCache[tuple[object, ...], tuple[object, list[list[Segment]]]] = LRUCache(2000)
        #: Assembled row lines by the identity of the row's cells.
        self._row_lines: LRUCache[tuple[object, ...], tuple[tuple[object, ...], RowLines]] = LRUCache(300)
        # DataTable's own caches are keyed by the update counter, which moves on
        # every batch, so at their default sizes (1,000 lines, 1,000 rows, 10,000
        # cells) they fill with dead entries: tens of thousands of small objects
        # that the garbage collector walks on every full collection. The caches
        # above serve repeats; these need to hold about a screenful.
        self._cell_render_cache = LRUCache(400)
        self._row_render_cache = LRUCache(100)
        self._row_renderable_cache = LRUCache(100)
        self._line_cache = LRUCache(100)

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

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        column_key = self._column_locations.get_key(column_index) if column_index >= 0 else None
        value: object = None
        if column_key is None:
            pass  # a row label: we have none
        elif row_index == -1:
            value = self.columns[column_key].label  # the header
        else:
            row_key = self._row_locations.get_key(row_index)
            row = None if row_key is None else self._data.get(row_key)
            value = None if row is None else row.get(column_key)
        if value is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (
            id(value),
            row_index,
            column_index,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self.show_cursor,
            self._pseudo_class_state,
        )
        hit = self._cell_lines.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._cell_lines.set(key, (value, lines))
        return lines

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # DataTable measures every cell of a new row (8 Rich measurements a row,
        # ~0.5 s for 500 sessions) to size auto-width columns; ours have fixed
        # widths, so only labelled or auto-height rows (none here) need it.
        columns_fixed = not any(column.auto_width for column in self.columns.values())
        if columns_fixed:
            rows = self.rows
            new_rows = [key for key in new_rows if key in rows and (rows[key].auto_height or rows[key].label)]
        super()._update_dimensions(new_rows)

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> RowLines:
        row_index = self._row_locations.get(row_key)
        if row_index is None:
            row_index = -1
        if row_key is self._header_row_key:
            cells: tuple[object, ...] = tuple(column.label for column in self.ordered_columns)
        else:
            row = self._data.get(row_key)
            cells = () if row is None else tuple(row.values())
        if self.cursor_type == "row":  # only whether the cursor (or hover) is on this row matters
            cursor: object = cursor_location.row == row_index
            hover: object = hover_location.row == row_index
        else:
            cursor, hover = cursor_location, hover_location
        key = (
            row_key,
            line_no,
            row_index,
            base_style,
            cursor,
            hover,
            self.cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._pseudo_class_state,
            self.size.width,
            tuple(id(cell) for cell in cells),
        )
        hit = self._row_lines.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], cells, strict=True)):
            return hit[1]
        lines = super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        self._row_lines.set(key, (cells, lines))
        return lines

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._cell_lines.clear()
        self._row_lines.clear()

    def notify_style_update(self) -> None:
        self._cell_lines.clear()
        self._row_lines.clear()
        super().notify_style_update()

    def has_row(self, key: str) -> bool:
        return RowKey(key) in self.rows

    def row_keys(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]

    def upsert(self, key: str, cells: Mapping[str, Text]) -> bool:
        """Add the row, or update the cells that differ; True when the row is new."""
        row_key = RowKey(key)
        row = self._data.get(row_key)
        if row is None:
            self.add_row(*(cells.get(col.key, Text("")) for col in self.COLUMNS), key=key)
            return True
        changed = False
        for col_key, value in cells.items():
            column_key = ColumnKey(col_key)
            current = row.get(column_key)
            if current is None:
                continue
            if not same_text(current, value):
                row[column_key] = value
                changed = True
        if changed:
            self._row_changed(row_key)
        return False

    def _row_changed(self, row_key: RowKey) -> None:
        """Invalidate the render caches and repaint one row's line (if it is on screen)."""
        self._update_count += 1  # every DataTable render cache is keyed by this
        index = self._row_locations.get(row_key)
        if index is None:
            return
        if self.rows[row_key].height != 1:
            self.refresh_row(index)  # the general (O(rows)) way; our rows are one line
            return
        y = index + (self.header_height if self.show_header else 0)
        width = max(self.size.width, self.virtual_size.width)
        self._refresh_region(Region(0, y, width, 1))

    def visible_keys(self) -> list[str]:
        """The keys of the rows in the viewport now (rows are one line high)."""
        header = self.header_height if self.show_header else 0
        height = self.scrollable_content_region.height - header
        if height <= 0:
            return []
        top = max(0, int(self.scroll_y))
        bottom = min(self.row_count, top + height + 1)
        keys: list[str] = []
        for index in range(top, bottom):
            row_key = self._row_locations.get_key(index)
            if row_key is not None and row_key.value is not None:
                keys.append(str(row_key.value))
        return keys

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


#: Where a row belongs in a :class:`LogTable`: compared as a tuple, lowest first.
Rank = tuple[int, int]


class LogTable(KeyedTable):
    """A keyed table whose rows stay in log order, oldest first, newest at the bottom.

    A live table must not move rows under the operator's eyes, so rows keep
    their place as they are updated; each row is ranked once, when it is added
    (e.g. by sequence number), and a row that belongs above others (a filter
    widened, history replayed after a reconnect) goes in at its place rather
    than at the bottom. Filtering drops and re-adds rows by key, never clears
    the table, and the cursor stays on the row it was on.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._ranks: dict[str, Rank] = {}
        self._highest: Rank | None = None
        self._out_of_order = False

    def put(self, key: str, rank: Rank, cells: Mapping[str, Text]) -> bool:
        """Add the row at its place in the order, or update its changed cells; True when new."""
        new = self.upsert(key, cells)
        if new:
            self._ranks[key] = rank
            if self._highest is not None and rank < self._highest:
                self._out_of_order = True  # put in place by settle()
            else:
                self._highest = rank
        return new

    def remove_row(self, row_key: RowKey | str) -> None:
        super().remove_row(row_key)
        self._ranks.pop(str(row_key.value if isinstance(row_key, RowKey) else row_key), None)

    def clear(self, columns: bool = False) -> Self:
        self._ranks.clear()
        self._highest, self._out_of_order = None, False
        return super().clear(columns)

    def settle(self, keep_cursor_on: str | None) -> None:
        """Move rows added out of order to their places (at most once per batch).

        ``keep_cursor_on`` is the key the cursor was on before the batch: rows
        added or dropped above it must not slide it onto another row.
        """
        if self._out_of_order:
            self._out_of_order = False
            keys = self.row_keys()
            ranks = self._ranks
            ordered = sorted(keys, key=lambda k: ranks.get(k, (0, 0)))
            if ordered != keys:
                self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(ordered)})
                self._update_count += 1  # every DataTable cache is keyed by this
                self._clear_caches()
                self.refresh()
            self._highest = ranks.get(ordered[-1]) if ordered else None
        if keep_cursor_on is not None and self.has_row(keep_cursor_on):
            index = self.get_row_index(keep_cursor_on)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)
