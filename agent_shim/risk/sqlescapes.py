"""How SQL text reaches past its own statement: side-effect functions and client commands.

``SELECT pg_terminate_backend(pid)`` kills sessions, ``SELECT setval(…)`` moves a
sequence, ``SELECT dblink_exec('…', 'DROP TABLE x')`` runs SQL elsewhere and
``SELECT purge_old_orders()`` does whatever its author wrote. Built-ins with side
effects are listed; user functions and procedures are judged by their names (a
name that says delete/drop/purge is destructive, any other call is a write because
its body is not visible). Client commands are where a "SQL" string escapes SQL
altogether: ``\\! rm -rf /`` and ``.shell`` run a shell, ``\\i file.sql`` and ``.read``
run SQL nobody can see, ``\\gexec`` runs the query's output as SQL, ``\\o`` and
``.output`` write files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from agent_shim.risk.model import Assessment, at_least, destructive, read, wordset, write
from agent_shim.risk.sqllex import Tok
from agent_shim.risk.verbs import parts_of

_WRITE_FUNCS: Final = {
    "pg_terminate_backend": "terminates other database sessions",
    "pg_cancel_backend": "cancels running queries",
    "pg_reload_conf": "reloads the server configuration",
    "pg_rotate_logfile": "rotates server logs",
    "pg_switch_wal": "forces a WAL switch", "pg_switch_xlog": "forces a WAL switch",
    "pg_create_restore_point": "creates a restore point",
    "pg_stat_reset": "resets statistics", "pg_stat_reset_shared": "resets statistics",
    "pg_stat_statements_reset": "resets statistics",
    "nextval": "advances a sequence", "setval": "moves a sequence",
    "lo_import": "reads a server file into the database",
    "lo_export": "writes a file on the database server",
    "lo_create": "creates a large object", "lo_from_bytea": "creates a large object",
    "pg_file_write": "writes a file on the database server",
    "pg_file_rename": "renames a file on the database server",
    "pg_advisory_lock": "takes a lock", "pg_advisory_xact_lock": "takes a lock",
    "get_lock": "takes a lock", "release_lock": "releases a lock",
    "pg_logical_slot_get_changes": "consumes replication changes",
    "pg_replication_slot_advance": "advances a replication slot",
    "pg_create_physical_replication_slot": "creates a replication slot",
    "pg_create_logical_replication_slot": "creates a replication slot",
    "pg_backup_start": "starts a backup", "pg_start_backup": "starts a backup",
    "pg_backup_stop": "stops a backup", "pg_stop_backup": "stops a backup",
    "pg_wal_replay_pause": "pauses replication replay",
    "pg_wal_replay_resume": "resumes replication replay",
    "dblink_connect": "opens a connection to another database",
    "txid_current": "assigns a transaction id",
}  # fmt: skip
_DESTROY_FUNCS: Final = {
    "pg_drop_replication_slot": "drops a replication slot",
    "lo_unlink": "deletes a large object", "pg_file_unlink": "deletes a server file",
    "pg_promote": "promotes a standby (failover)",
    "sys_exec": "runs a shell command on the database server",
    "sys_eval": "runs a shell command on the database server",
    "xp_cmdshell": "runs a shell command on the database server",
}  # fmt: skip
_REMOTE_SQL: Final = frozenset({"dblink_exec", "dblink", "query_to_xml", "dblink_send_query"})
_PURE_PREFIXES: Final = ("json", "jsonb", "array", "regexp", "str", "string", "hstore", "list_",
                         "map_", "bitmap", "arr", "trim", "replace", "ts_", "xml")
_DESTROY_WORDS: Final = frozenset({"drop", "delete", "truncate", "purge", "destroy", "wipe",
                                   "kill", "terminate", "erase", "remove", "nuke", "cleanup",
                                   "clean", "reset"})
_NOT_CALL_PREV: Final = frozenset({"INTO", "TABLE", "FROM", "JOIN", "UPDATE", "REFERENCES", "ON",
                                   "INDEX", "VIEW", "FUNCTION", "PROCEDURE", "TYPE", "USING",
                                   "TRIGGER", "EXISTS", "DOMAIN", "SEQUENCE"})


def function_risks(toks: list[Tok], sub: Callable[[str], Assessment]) -> list[Assessment]:
    """Assessments for function calls with side effects; empty when there are none."""
    found: list[Assessment] = []
    for i, t in enumerate(toks[:-1]):
        if t.kind not in ("w", "q") or toks[i + 1].text != "(" or toks[i + 1].kind != "p":
            continue
        prev = toks[i - 1] if i else None
        if prev is not None and (prev.up in _NOT_CALL_PREV):
            continue
        name = t.text.lower()
        if name in _WRITE_FUNCS:
            found.append(write(f"{name}() {_WRITE_FUNCS[name]}"))
        elif name in _DESTROY_FUNCS:
            found.append(destructive(f"{name}() {_DESTROY_FUNCS[name]}"))
        elif name in _REMOTE_SQL:
            depth = 0
            strings: list[str] = []
            for u in toks[i + 1 :]:
                depth += (u.text == "(") - (u.text == ")") if u.kind == "p" else 0
                if u.kind == "s":
                    strings.append(u.text)
                if depth == 0:
                    break
            inner = sub(strings[-1]) if strings else destructive(f"{name}() runs SQL that is "
                                                                 "not visible")
            found.append(at_least(inner, "write", f"{name}() runs SQL on another database"))
        elif not name.startswith(_PURE_PREFIXES) and _DESTROY_WORDS & set(parts_of(name)):
            found.append(destructive(f"{name}() is named like it deletes data; its body is "
                                     "not visible"))
    return found


def procedure_risk(verb: str, name: str) -> Assessment:
    """``CALL p()`` / ``EXEC p``: judged by name, since the body is not visible."""
    if name in _DESTROY_FUNCS:
        return destructive(f"{verb} {name} {_DESTROY_FUNCS[name]}")
    if _DESTROY_WORDS & set(parts_of(name)):
        return destructive(f"{verb} {name}: a procedure named like it deletes data")
    return write(f"{verb} {name or 'procedure'} runs code whose body is not visible")


# -- client commands (psql backslash, sqlite dot) ----------------------------

ShellFn = Callable[[str], Assessment]

_PSQL_READ: Final = wordset("""c connect conninfo cd echo encoding errverbose f g gx gdesc gset
h help H html l list pset q quit qecho r reset s set unset t T timing x watch ? a C copyright
crosstabview if elif else endif warn getenv bind sf sv z""")
_PSQL_HIDDEN: Final = frozenset({"i", "ir", "include", "include_relative", "gexec", "e", "edit",
                                 "ef", "ev", "."})
_PSQL_WRITE: Final = frozenset({"o", "out", "w", "write", "lo_import", "lo_export", "password",
                                "setenv", "prompt", "s"})


def _shell(rest: str, shell: ShellFn | None, what: str) -> Assessment:
    if not rest.strip():
        return destructive(f"{what} opens an interactive shell; what runs is not visible")
    if shell is None:
        return destructive(f"{what} runs a shell command ({rest.strip()[:40]})")
    return at_least(shell(rest), "write", f"{what} runs a shell command")


def psql_meta(text: str, shell: ShellFn | None) -> Assessment:
    """One ``\\command args`` line (psql, or mysql's ``\\.``)."""
    body = text[1:]
    name = body.split(None, 1)[0] if body.strip() else ""
    if name.startswith("!"):
        return _shell(body[1:], shell, "psql \\!")
    rest = body[len(name) :].strip()
    if name.startswith("d"):
        return read(f"psql \\{name} only describes objects")
    if name in _PSQL_HIDDEN:
        what = {"gexec": "runs each result row as SQL", "e": "runs an edited buffer",
                "edit": "runs an edited buffer"}.get(name, f"runs SQL from {rest or 'a file'}")
        return destructive(f"psql \\{name} {what}; its content is not visible")
    if name == "lo_unlink":
        return destructive("psql \\lo_unlink deletes a large object")
    if name == "copy":
        low = rest.lower()
        if " from " in f" {low} ":
            if " program " in f" {low} ":
                return destructive("psql \\copy … from program runs a shell command")
            return write("psql \\copy … from loads rows")
        if "program" in low:
            return destructive("psql \\copy … to program runs a shell command")
        return read("psql \\copy … to stdout only reads") if "stdout" in low else write(
            "psql \\copy … to writes a file")
    if name in _PSQL_WRITE:
        return write(f"psql \\{name} writes a file or a setting")
    if name in _PSQL_READ or not name:
        return read(f"psql \\{name} only changes the client display or connection")
    return write(f"psql \\{name}: unknown client command; assumed write")


_DOT_READ: Final = wordset("""tables schema indexes indices headers header mode dump show
databases help width timer eqp explain print quit exit nullvalue separator stats fullschema
lint dbinfo expert open recover cd bail changes echo prompt scanstats timeout trace vfsinfo
vfslist vfsname version parameter limit log""")
_DOT_WRITE: Final = wordset("output once save backup import excel clone archive ar")


def sqlite_dot(text: str, shell: ShellFn | None) -> Assessment:
    """One sqlite3 ``.command`` line."""
    name, _, rest = text[1:].partition(" ")
    if name in ("shell", "system"):
        return _shell(rest, shell, f"sqlite3 .{name}")
    if name == "read":
        return destructive(f"sqlite3 .read runs SQL from {rest.strip() or 'a file'}; not visible")
    if name in ("restore", "load"):
        return destructive(f"sqlite3 .{name} overwrites the database or loads native code")
    if name in ("output", "once") and rest.strip().startswith("|"):
        return _shell(rest.strip()[1:], shell, f"sqlite3 .{name} |")
    if name in _DOT_WRITE:
        return write(f"sqlite3 .{name} writes a file")
    if name in _DOT_READ:
        return read(f"sqlite3 .{name} only reads or changes display")
    return write(f"sqlite3 .{name}: unknown dot-command; assumed write")
