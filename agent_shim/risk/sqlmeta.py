"""Client commands inside SQL text: psql backslash commands and sqlite dot-commands.

They are where a "SQL" string escapes SQL: ``\\! rm -rf /`` and ``.shell`` run a
shell, ``\\i file.sql`` and ``.read`` run SQL nobody can see, ``\\gexec`` runs the
query's output as SQL, ``\\o`` and ``.output`` write files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from agent_shim.risk.model import Assessment, at_least, destructive, read, wordset, write

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
