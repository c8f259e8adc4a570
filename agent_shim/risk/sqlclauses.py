"""Clause-level SQL analysis: parenthesis depth, WHERE clauses and tautologies.

"Has a WHERE" is only meaningful at the statement's own level (a WHERE inside a
subquery or CTE does not limit the outer DELETE), and a WHERE that is always true
(``1=1``, ``true``, ``… OR 1=1``, ``x = x``, ``LIKE '%'``) limits nothing. Kept apart from
statement dispatch so that both the rules and their tests stay small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from agent_shim.risk.sqllex import Tok


def depth0(toks: list[Tok]) -> list[tuple[int, Tok]]:
    out: list[tuple[int, Tok]] = []
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == "p" and t.text in ("(", "[", "{"):
            depth += 1
        elif t.kind == "p" and t.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0:
            out.append((i, t))
    return out


def closing(toks: list[Tok], i: int) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].text == "(" and toks[j].kind == "p":
            depth += 1
        elif toks[j].text == ")" and toks[j].kind == "p":
            depth -= 1
            if depth == 0:
                return j
    return len(toks)


def split0(toks: list[Tok], word: str) -> list[list[Tok]]:
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.kind == "p" and t.text == "(":
            depth += 1
        elif t.kind == "p" and t.text == ")":
            depth -= 1
        if depth == 0 and t.up == word:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _strip_parens(toks: list[Tok]) -> list[Tok]:
    while len(toks) >= 2 and toks[0].text == "(" and closing(toks, 0) == len(toks) - 1:
        toks = toks[1:-1]
    return toks


def _num(t: Tok) -> float | None:
    try:
        return float(t.text) if t.kind == "n" else None
    except ValueError:
        return None


_CMP: Final[dict[str, Callable[[float, float], bool]]] = {
    "=": lambda a, b: a == b, "==": lambda a, b: a == b, "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}  # fmt: skip


def _atom_true(t: list[Tok]) -> bool:
    t = _strip_parens(t)
    if len(t) == 1:
        n = _num(t[0])
        return t[0].up == "TRUE" or (n is not None and n != 0)
    if len(t) == 2 and t[0].up == "NOT":
        n = _num(t[1])
        return t[1].up == "FALSE" or n == 0
    if len(t) == 3:
        a, op, b = t
        if op.text in ("=", "==", "<=", ">=") and a.kind == b.kind and a.text == b.text:
            return True
        na, nb = _num(a), _num(b)
        if na is not None and nb is not None and op.text in _CMP:
            return _CMP[op.text](na, nb)
        if op.up == "LIKE" and b.kind == "s" and b.text and set(b.text) <= {"%"}:
            return True
        if a.kind == b.kind == "s" and op.text in ("<>", "!=") and a.text != b.text:
            return True
    if len(t) == 4 and t[1].up == "IS" and t[2].up == "NOT" and t[3].up == "NULL":
        return t[0].kind in ("n", "s")
    return False


def always_true(where: list[Tok]) -> bool:
    """``WHERE 1=1``, ``WHERE true``, ``… OR 1=1``: cheap tautologies that match every row."""
    return any(
        all(_atom_true(c) for c in split0(d, "AND") if c) and any(split0(d, "AND"))
        for d in split0(where, "OR")
        if d
    )


_WHERE_END: Final = frozenset({"RETURNING", "ORDER", "LIMIT", "OFFSET", "FETCH", "SETTINGS"})


def where_clause(toks: list[Tok]) -> list[Tok] | None:
    top = depth0(toks)
    for k, (i, t) in enumerate(top):
        if t.up == "WHERE":
            end = next((j for j, u in top[k + 1 :] if u.up in _WHERE_END), len(toks))
            return toks[i + 1 : end]
    return None


def name_after(toks: list[Tok], skip: frozenset[str]) -> str:
    for k, t in enumerate(toks):
        if t.kind in ("w", "q") and t.up not in skip:
            name = t.text
            while k + 2 < len(toks) and toks[k + 1].text == "." and toks[k + 2].kind in "wq":
                k += 2
                name += "." + toks[k].text
            return name
    return "the table"
