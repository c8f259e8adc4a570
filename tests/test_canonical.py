"""canonical_json: the one encoding digests and the audit chain hash over.

Its validity walk was rewritten for speed (it runs over every audit record);
it must accept and refuse exactly what the plain definition does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_shim.canonical import CanonicalError, canonical_json


def reference_check(value: Any, depth: int = 0) -> None:
    """The definition: every node at most 64 deep; str keys; no floats or other types."""
    if depth > 64:
        raise CanonicalError("deep")
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        raise CanonicalError("float")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalError("key")
            reference_check(v, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            reference_check(v, depth + 1)
        return
    raise CanonicalError("type")


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=30,
)


def _verdict(fn: Any, value: Any) -> bool:
    try:
        fn(value)
    except CanonicalError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_accepts_and_refuses_exactly_what_the_definition_does(value: Any) -> None:
    ok = _verdict(reference_check, value)
    assert _verdict(canonical_json, value) is ok
    if ok:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize("wrap", [lambda v: [v], lambda v: {"k": v}, lambda v: (v,)])
@pytest.mark.parametrize("leaf", [1, "s", None, True, [], {}])
def test_depth_limit_is_the_same_at_the_edge(wrap: Any, leaf: Any) -> None:
    for depth in (63, 64, 65, 66):
        value = leaf
        for _ in range(depth):
            value = wrap(value)
        assert _verdict(canonical_json, value) is _verdict(reference_check, value), depth


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_the_reused_c_encoder_and_the_plain_encoder_agree(value: Any) -> None:
    """canonical_text calls one C encoder made at import (JSONEncoder.encode
    makes one per call); without the accelerator it falls back to the plain
    encoder. Both give the same text for everything they accept."""
    from agent_shim import canonical

    assert canonical._C_ENCODE is not None  # CPython: the fast path is the one under test
    if not _verdict(reference_check, value):
        return
    fast = canonical.canonical_text(value)
    saved = canonical._C_ENCODE
    try:
        canonical._C_ENCODE = None  # type: ignore[misc]
        assert canonical.canonical_text(value) == fast
    finally:
        canonical._C_ENCODE = saved  # type: ignore[misc]


def test_a_cycle_is_refused_not_looped_over() -> None:
    """The reused encoder keeps no cycle marks: the checked walk's depth bound refuses a cycle first."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CanonicalError):
        canonical_json(loop)
    with pytest.raises(CanonicalError):
        canonical_json({"a": {"b": loop}})
