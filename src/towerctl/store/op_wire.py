"""How the two writes of every allowed action cross the pipe to the writer process.

The serve process pickles each batch for the writer process (see
:mod:`towerctl.store.writer_proc`), and the writer process unpickles it. An
operation is a ``functools.partial`` over a function of :mod:`towerctl.store.ops`
with a keyword dict and a row dataclass, and pickle walks all of that per
operation, the row through a Python-level ``__reduce__``. The proposal and the
outcome of an allowed action are the two operations of every action, so they
cross as plain tuples of the row's values and the keywords instead. Measured on
the writer bench's batches, per operation: 1.31 -> 0.72 us to convert and pickle
in the serve process, 1.69 -> 1.43 us to unpickle and rebuild in the writer
process (the frozen row's constructor is most of what is left). Every other
operation crosses as it is.

Both ends are in this module, so the tuple's layout has one definition; a test
holds the round trip equal to the operation for every field.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from typing import Any, Final

from towerctl.store import ops
from towerctl.store.models import ActionRow, OutcomeRow, StoreError
from towerctl.store.tx import Tx

#: The tuple's first item: which operation it is.
PROPOSED: Final = 1
FINISHED: Final = 2

_PROPOSED_KEYS: Final = frozenset({"row", "actor", "ts_ms", "started"})
_FINISHED_KEYS: Final = frozenset({"outcome", "actor", "ts_ms", "expect"})
_row_values: Final = operator.attrgetter(*(f.name for f in fields(ActionRow)))
_outcome_values: Final = operator.attrgetter(*(f.name for f in fields(OutcomeRow)))

Op = Callable[[Tx], object]


def to_wire(op: Op) -> object:
    """What to pickle for ``op``: a tuple for an action's proposal or outcome
    queued by the store (keywords exactly as ``StoreWrites`` passes them), else
    ``op`` itself."""
    if type(op) is partial and not op.args:
        kw: dict[str, Any] = op.keywords
        if op.func is ops.action_proposed and kw.keys() == _PROPOSED_KEYS:
            return (PROPOSED, _row_values(kw["row"]), kw["actor"], kw["ts_ms"], kw["started"])
        if op.func is ops.action_finished and kw.keys() == _FINISHED_KEYS:
            return (FINISHED, _outcome_values(kw["outcome"]), kw["actor"], kw["ts_ms"], kw["expect"])
    return op


def from_wire(item: object) -> Op:
    """The operation :func:`to_wire` made ``item`` from, in the writer process."""
    if type(item) is not tuple:
        if not callable(item):
            raise StoreError(f"not a write operation: {type(item).__name__}")
        return item
    try:
        code, values, actor, ts_ms, last = item
        if code == PROPOSED:
            row = ActionRow(*values)
            return partial(ops.action_proposed, row=row, actor=actor, ts_ms=ts_ms, started=last)
        if code == FINISHED:
            outcome = OutcomeRow(*values)
            return partial(ops.action_finished, outcome=outcome, actor=actor, ts_ms=ts_ms, expect=last)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"malformed write operation: {exc}") from None
    raise StoreError(f"unknown write operation {code!r}")
