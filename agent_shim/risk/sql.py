"""SQL statements: reads, writes, and the ones that lose data.

Each statement is judged alone and the worst wins. Reads are only what provably
reads (SELECT without INTO / FOR UPDATE / side-effect functions, SHOW, EXPLAIN
without ANALYZE). DELETE and UPDATE need a WHERE at the top level that is not
trivially true; DROP, TRUNCATE and ``ALTER … DROP`` are destructive. What the
text cannot show — a SQL file (``\\i``), ``\\gexec``, dynamic ``EXECUTE`` — is
destructive, like a script piped into a shell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    at_least,
    clip,
    combine,
    destructive,
    is_dynamic,
    read,
    write,
)
from agent_shim.risk.sqlclauses import always_true, closing, depth0, name_after, where_clause
from agent_shim.risk.sqlescapes import function_risks, procedure_risk, psql_meta, sqlite_dot
from agent_shim.risk.sqllex import SqlParseError, Tok, dialects_differ, split_statements

ShellFn = Callable[[str], Assessment]
_MAX_DEPTH: Final = 8


@dataclass(slots=True)
class _Ctx:
    shell: ShellFn | None
    depth: int = 0
    prepared: dict[str, Assessment] = field(default_factory=dict)


def classify_sql(text: str, *, origin: str = "SQL", shell: ShellFn | None = None) -> Assessment:
    """Classify SQL text; ``shell`` classifies ``\\!`` commands (else they are destructive)."""
    if is_dynamic(text):
        return destructive(f"{origin}: SQL built from a shell expansion ({clip(text, 50)}); "
                           "the final statement is not visible")
    if not text.strip():
        return write(f"{origin}: empty SQL")
    return _text(text, _Ctx(shell))


def _text(text: str, ctx: _Ctx) -> Assessment:
    if ctx.depth > _MAX_DEPTH:
        return destructive("SQL nested too deeply to follow")
    readings: list[Assessment] = []
    errors: list[str] = []
    for mysql in (False, True) if dialects_differ(text) else (False,):
        try:
            stmts = split_statements(text, mysql)
        except SqlParseError as exc:
            errors.append(str(exc))
            continue
        parts = [statement(s, ctx) for s in stmts]
        readings.append(combine(parts) if parts else read("no SQL statements (only comments)"))
    if not readings:
        return destructive(f"cannot parse SQL ({errors[0]}); what runs is not visible")
    return combine(readings)


def _sub(text: str, ctx: _Ctx) -> Assessment:
    return _text(text, _Ctx(ctx.shell, ctx.depth + 1, ctx.prepared))


# -- statements ------------------------------------------------------------------

_DML_SKIP: Final = frozenset({"FROM", "ONLY", "LOW_PRIORITY", "QUICK", "IGNORE", "TOP"})


def _dml(toks: list[Tok], verb: str) -> Assessment:
    table = name_after(toks[1:], _DML_SKIP)
    where = where_clause(toks)
    what = "removes every row" if verb == "DELETE" else "changes every row"
    if where is None:
        return destructive(f"{verb} without WHERE {what} of {table}")
    if not where or always_true(where):
        return destructive(f"{verb} … WHERE is always true: {what} of {table}")
    return write(f"{verb} changes rows of {table} (with WHERE)")


def _select(toks: list[Tok]) -> Assessment:
    parts: list[Assessment] = []
    top = [t for _, t in depth0(toks)]
    ups = [t.up for t in top]
    if "INTO" in ups:
        parts.append(write("SELECT … INTO writes a table or a file"))
    for k, u in enumerate(ups[:-1]):
        if u == "FOR" and ups[k + 1] in ("UPDATE", "SHARE", "NO", "KEY"):
            parts.append(write("SELECT … FOR UPDATE/SHARE locks rows"))
            break
    return combine(parts) if parts else read(f"{toks[0].up} only reads")


def _with(toks: list[Tok], ctx: _Ctx) -> Assessment:
    parts: list[Assessment] = []
    i, n = 1, len(toks)
    if i < n and toks[i].up == "RECURSIVE":
        i += 1
    while i + 1 < n:
        i += 1  # the CTE name
        if toks[i].text == "(":
            i = closing(toks, i) + 1
        if i >= n or toks[i].up != "AS":
            return _scan_any(toks, ctx)
        i += 1
        while i < n and toks[i].up in ("NOT", "MATERIALIZED"):
            i += 1
        if i >= n or toks[i].text != "(":
            return _scan_any(toks, ctx)
        j = closing(toks, i)
        parts.append(statement(toks[i + 1 : j], ctx))
        i = j + 1
        if i < n and toks[i].text == ",":
            continue
        break
    parts.append(statement(toks[i:], ctx) if toks[i:] else read("WITH only reads"))
    return combine(parts)


_STMT_KW: Final = frozenset({"INSERT", "UPDATE", "DELETE", "DROP", "TRUNCATE", "ALTER", "CREATE",
                             "GRANT", "REVOKE", "COPY", "MERGE", "CALL", "PERFORM", "VACUUM",
                             "SELECT", "EXECUTE"})
_NOT_A_START: Final = frozenset({"GRANT", "REVOKE", ",", "ON", "FOR", "BEFORE", "AFTER", "OF",
                                 "OR", "INSTEAD", "DO", "(", "INTO", "AS"})


def _scan_any(toks: list[Tok], ctx: _Ctx) -> Assessment:
    """Classify every statement-like keyword: for procedural bodies and odd syntax."""
    parts: list[Assessment] = []
    for i, t in enumerate(toks):
        u = t.up
        if u not in _STMT_KW or (i and (toks[i - 1].up or toks[i - 1].text) in _NOT_A_START):
            continue
        if u == "EXECUTE":
            nxt = toks[i + 1 : i + 3]
            if nxt and nxt[0].kind == "s" and (len(nxt) == 1 or nxt[1].up in ("USING", "INTO")):
                parts.append(_sub(nxt[0].text, ctx))
            else:
                parts.append(destructive("EXECUTE runs dynamic SQL that is not visible"))
            continue
        slice_ = toks[i:] if u != "PERFORM" else [Tok("w", "SELECT"), *toks[i + 1 :]]
        parts.append(statement(slice_, ctx))
    return combine(parts) if parts else read("no statements found")


def _explain(toks: list[Tok], ctx: _Ctx) -> Assessment:
    i, n = 1, len(toks)
    analyze = False
    if i < n and toks[i].text == "(":
        j = closing(toks, i)
        opts = toks[i + 1 : j]
        for k, t in enumerate(opts):
            if t.up in ("ANALYZE", "ANALYSE"):
                nxt = opts[k + 1] if k + 1 < len(opts) else None
                off = nxt is not None and (nxt.up in ("FALSE", "OFF") or nxt.text == "0")
                analyze = analyze or not off
        i = j + 1
    while i < n and (toks[i].up in ("ANALYZE", "ANALYSE", "VERBOSE", "EXTENDED", "PARTITIONS",
                                    "FORMAT", "QUERY", "PLAN", "COSTS", "BUFFERS", "PIPELINE",
                                    "SYNTAX", "AST", "ESTIMATE", "TREE", "JSON", "TRADITIONAL",
                                    "TEXT", "XML", "YAML", "CODEGEN", "COST", "FORMATTED",
                                    "LOGICAL", "IO", "DISTRIBUTED", "VALIDATE", "TYPE")
                     or toks[i].text == "="):
        analyze = analyze or toks[i].up in ("ANALYZE", "ANALYSE")
        i += 1
    inner = toks[i:]
    if not analyze or not inner:
        return read("EXPLAIN only shows the plan")
    a = statement(inner, ctx)
    if a.risk == "read":
        return read("EXPLAIN ANALYZE of a read-only statement")
    return Assessment(a.risk, ("EXPLAIN ANALYZE executes the statement", *a.reasons))


def _alter(toks: list[Tok], ctx: _Ctx) -> Assessment:
    obj = toks[1].up if len(toks) > 1 else ""
    top = depth0(toks)
    for k, (i, t) in enumerate(top):
        u = t.up
        nxt = top[k + 1][1].up if k + 1 < len(top) else ""
        if u == "DROP" and nxt not in ("NOT", "DEFAULT", "IDENTITY", "EXPRESSION"):
            return destructive(f"ALTER {obj} … DROP {nxt} removes part of the schema; its "
                               "data is lost")
        if u in ("TRUNCATE", "CLEAR", "DISCARD"):
            return destructive(f"ALTER {obj} … {u} discards data")
        if u in ("DELETE", "UPDATE") and obj == "TABLE":
            return _dml([Tok("w", u), *toks[2:3], *toks[i + 1 :]], u)
    if obj == "SYSTEM":
        return write("ALTER SYSTEM changes server configuration")
    return write(f"ALTER {obj} changes the schema")


def _begin(toks: list[Tok], ctx: _Ctx) -> Assessment:
    rest = toks[1:]
    if not rest or rest[0].up in ("TRANSACTION", "WORK", "ISOLATION", "READ", "DEFERRED",
                                  "IMMEDIATE", "EXCLUSIVE", "NOT", "TRAN", "DISTRIBUTED"):
        return read(f"{toks[0].up} only controls the transaction")
    return _scan_any(rest, ctx)


def _prepare(toks: list[Tok], ctx: _Ctx) -> Assessment:
    if len(toks) < 3 or toks[1].up == "TRANSACTION":
        return write("PREPARE TRANSACTION prepares a commit")
    name = toks[1].text.lower()
    k = 2
    if toks[k].text == "(":
        k = closing(toks, k) + 1
    body = toks[k + 1 :] if k < len(toks) and toks[k].up in ("AS", "FROM") else toks[k:]
    a = _sub(body[0].text, ctx) if body and body[0].kind == "s" else statement(body, ctx)
    ctx.prepared[name] = a
    return read(f"PREPARE {name} only prepares (classified where it is executed)")


def _execute(toks: list[Tok], ctx: _Ctx) -> Assessment:
    rest = toks[1:]
    if rest and rest[0].up == "IMMEDIATE" and len(rest) > 1 and rest[1].kind == "s":
        return _sub(rest[1].text, ctx)
    if rest and rest[0].text == "(" and len(rest) > 1 and rest[1].kind == "s":
        return _sub(rest[1].text, ctx)
    name = rest[0].text.lower() if rest else ""
    if name in ctx.prepared:
        return ctx.prepared[name]
    return procedure_risk(toks[0].up, name)


def _simple(risk: str, text: str) -> Callable[[list[Tok], _Ctx], Assessment]:
    def handler(toks: list[Tok], ctx: _Ctx) -> Assessment:
        msg = text.replace("{0}", toks[0].up).replace("{1}", toks[1].up if len(toks) > 1 else "")
        return {"read": read, "write": write, "destructive": destructive}[risk](msg)

    return handler


def _copy(toks: list[Tok], ctx: _Ctx) -> Assessment:
    ups = [t.up for _, t in depth0(toks)]
    if "PROGRAM" in ups:
        return destructive("COPY … PROGRAM runs a shell command on the database server")
    if "FROM" in ups:
        return write("COPY … FROM loads rows")
    if "STDOUT" in ups or "STDERR" in ups:
        return read("COPY … TO STDOUT only reads")
    return write("COPY … TO writes a file on the database server")


def _set(toks: list[Tok], ctx: _Ctx) -> Assessment:
    w = toks[1].up if len(toks) > 1 else ""
    if w in ("GLOBAL", "PERSIST", "PERSIST_ONLY", "PASSWORD") or (
            len(toks) > 1 and toks[1].text.lower().startswith(("@@global", "@@persist"))):
        return write(f"SET {w or toks[1].text} changes server-wide settings")
    return read("SET changes only this session's settings")


def _reset(toks: list[Tok], ctx: _Ctx) -> Assessment:
    w = toks[1].up if len(toks) > 1 else ""
    if w in ("MASTER", "SLAVE", "REPLICA", "BINARY", "PERSIST"):
        return destructive(f"RESET {w} discards replication state or binary logs")
    return read("RESET restores a session setting")


def _pragma(toks: list[Tok], ctx: _Ctx) -> Assessment:
    name = toks[1].text.lower() if len(toks) > 1 else ""
    if any(t.text == "=" for t in toks) or name in ("optimize", "wal_checkpoint",
                                                    "incremental_vacuum", "shrink_memory"):
        return write(f"PRAGMA {name} changes the database")
    return read(f"PRAGMA {name} only reads")


def _do(toks: list[Tok], ctx: _Ctx) -> Assessment:
    body = next((t.text for t in toks if t.kind in ("body", "s")), None)
    if body is None:
        return destructive("DO block whose body is not visible")
    try:
        stmts = split_statements(body, mysql=False)
    except SqlParseError:
        return destructive("DO block that cannot be parsed")
    inner = combine(_scan_any(s, _Ctx(ctx.shell, ctx.depth + 1, ctx.prepared)) for s in stmts)
    return at_least(inner, "write", "DO runs a procedural block")


Handler = Callable[[list[Tok], _Ctx], Assessment]
_HEADS: Final[dict[str, Handler]] = {
    "SELECT": lambda t, c: _select(t), "VALUES": lambda t, c: _select(t),
    "TABLE": lambda t, c: _select(t), "WITH": _with, "EXPLAIN": _explain,
    "UPDATE": lambda t, c: _dml(t, "UPDATE"), "DELETE": lambda t, c: _dml(t, "DELETE"),
    "ALTER": _alter, "BEGIN": _begin, "PREPARE": _prepare, "EXECUTE": _execute,
    "EXEC": _execute, "CALL": _execute, "COPY": _copy, "SET": _set, "RESET": _reset,
    "PRAGMA": _pragma, "DO": _do,
    "DROP": _simple("destructive", "DROP {1} destroys the object and its data"),
    "TRUNCATE": _simple("destructive", "TRUNCATE removes every row"),
    "SHUTDOWN": _simple("destructive", "SHUTDOWN stops the database server"),
    "PURGE": _simple("destructive", "PURGE permanently deletes logs or recycled objects"),
    "STOP": _simple("destructive", "STOP {1} stops replication"),
    "RESTORE": _simple("destructive", "RESTORE overwrites a database"),
    "UNDROP": _simple("write", "UNDROP restores a dropped object"),
    "INSERT": lambda t, c: destructive("INSERT OVERWRITE replaces the table's contents")
    if len(t) > 1 and t[1].up == "OVERWRITE" else write("INSERT adds rows"),
    **{k: _simple("read", "{0} only reads") for k in (
        "SHOW", "DESCRIBE", "DESC", "USE", "HELP", "LISTEN", "UNLISTEN", "FETCH", "MOVE", "CLOSE",
        "DECLARE", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT",
        "DISCARD", "DEALLOCATE", "LIST", "GO", "CHECK", "CHECKSUM", "WAIT")},
    **{k: _simple("write", "{0} changes the database") for k in (
        "REPLACE", "UPSERT", "MERGE", "LOAD", "IMPORT", "CREATE", "GRANT", "REVOKE", "VACUUM",
        "ANALYZE", "ANALYSE", "REINDEX", "CLUSTER", "REFRESH", "OPTIMIZE", "CHECKPOINT", "LOCK",
        "COMMENT", "SECURITY", "REASSIGN", "FLUSH", "KILL", "INSTALL", "UNINSTALL", "RENAME",
        "ATTACH", "DETACH", "SYSTEM", "EXCHANGE", "BACKUP", "NOTIFY", "CHANGE", "REPAIR",
        "HANDLER", "CACHE", "UNCACHE", "MSCK", "PUT", "REMOVE", "UNLOAD", "UNLOCK", "XA")},
    "SOURCE": _simple("destructive", "SOURCE runs a SQL file whose content is not visible"),
}  # fmt: skip
_NO_FUNC_CHECK: Final = frozenset({"CREATE", "DROP", "ALTER", "GRANT", "REVOKE", "COMMENT",
                                   "DO", "PREPARE", "EXECUTE", "EXEC", "CALL"})


def statement(toks: list[Tok], ctx: _Ctx) -> Assessment:
    """Classify one statement's tokens."""
    while toks and toks[0].kind == "p" and toks[0].text == "(":
        toks = toks[1:]
    if not toks:
        return read("empty statement")
    t0 = toks[0]
    if t0.kind == "meta":
        return psql_meta(t0.text, ctx.shell)
    if t0.kind == "dot":
        return sqlite_dot(t0.text, ctx.shell)
    head = t0.up
    if head == "START" and len(toks) > 1 and toks[1].up in ("SLAVE", "REPLICA", "GROUP_REPLICATION"):
        return write(f"START {toks[1].up} starts replication")
    handler = _HEADS.get(head)
    if handler is None:
        return write(f"unknown SQL statement {t0.text}; assumed write")
    result = handler(toks, ctx)
    if head in _NO_FUNC_CHECK:
        return result
    funcs = function_risks(toks, lambda s: _sub(s, ctx))
    return combine([result, *funcs]) if funcs else result
