"""The non-shell action kinds: ``file``, ``http`` and ``tool``.

These arrive as short structured strings (``"delete /srv/data"``, ``"POST https://…"``,
``"mcp__github__delete_repository {…}"``). Their verb says most of it; paths, URLs and
arguments can only make the verdict worse. A tool whose arguments carry a shell
command or SQL (``Bash {"command": …}``, ``postgres_query {"sql": …}``) is judged by
that command, since the name alone says nothing about what it runs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Final

from agent_shim.risk.model import Assessment, clip, combine, destructive, read, wordset, write
from agent_shim.risk.paths import classify_path, deletion_notes, write_to
from agent_shim.risk.tools_net import http_verdict
from agent_shim.risk.verbs import DESTRUCTIVE_VERBS, READ_VERBS, WRITE_VERBS, parts_of

ShellFn = Callable[[str], Assessment]
SqlFn = Callable[[str], Assessment]

_FILE_READ: Final = wordset("""read list ls stat cat view glob grep search find head tail exists
open get show diff lstat readdir readlink realpath info inspect watch tree""")
_FILE_WRITE: Final = wordset("""write create edit append move mv rename copy cp mkdir makedirs
touch patch replace update upload save put symlink link insert str replace multiedit notebookedit
undo set chmod chown chgrp mkfifo extract unzip compress zip untar new apply""")
_FILE_DESTROY: Final = wordset("""delete remove rm unlink truncate rmdir shred wipe destroy purge
erase rmtree clear""")


def _words(text: str) -> list[str]:
    if not any(c in text for c in "'\"\\"):
        return text.split()  # shlex is slow and only needed for quoting
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def classify_file(command: str) -> Assessment:
    text = command.strip()
    if not text:
        return write("empty file operation; assumed write")
    verb, _, rest = text.partition(" ")
    parts = [verb.lower(), *parts_of(verb)]
    words = _words(rest)
    paths = [w for w in words if not w.startswith("-")]
    recursive = any(w in ("-r", "-R", "--recursive") for w in words)
    if any(p in _FILE_DESTROY for p in parts):
        notes = [f"{verb} deletes or empties files" + (" recursively" if recursive else "")]
        notes += deletion_notes(verb, paths)
        return Assessment("destructive", tuple(notes))
    kind = "read" if any(p in _FILE_READ for p in parts) else "write"
    if any(p in _FILE_WRITE for p in parts):
        kind = "write"
    if kind == "read":
        return read(f"file {verb} only reads")
    found: list[Assessment] = []
    if any(p in ("move", "mv", "rename") for p in parts):
        found += [destructive(f"{verb} moves away system path {p}") for p in paths[:-1]
                  if classify_path(p) in ("critical", "device")]
    for p in paths:
        hit = write_to(f"file {verb}", p)
        if hit is not None and hit.risk == "destructive":
            found.append(hit)
    if recursive and any(p in ("chmod", "chown", "chgrp") for p in parts):
        found.append(destructive(f"{verb} -R changes every file below the target"))
    known = any(p in _FILE_WRITE for p in parts)
    found.append(write(f"file {verb} writes {clip(' '.join(paths), 60) or 'a file'}" if known
                       else f"unknown file operation {verb}; assumed write"))
    return combine(found)


def classify_http(command: str) -> Assessment:
    words = command.split(None, 2)
    if not words:
        return write("empty HTTP request; assumed write")
    if "://" in words[0] or words[0].startswith("/"):
        return combine([http_verdict("", words[0]),
                        write("HTTP request without a method; assumed write")])
    return http_verdict(words[0], words[1] if len(words) > 1 else "")


_SHELL_TOOL: Final = frozenset({"bash", "shell", "sh", "terminal", "command", "cmd", "exec",
                                "execute", "run", "console", "subprocess", "powershell", "zsh"})
_SQL_TOOL: Final = frozenset({"sql", "query", "psql", "mysql", "postgres", "postgresql",
                              "sqlite", "db", "database", "bigquery", "snowflake", "clickhouse",
                              "duckdb", "supabase", "neon", "planetscale"})
_CLI_TOOLS: Final = frozenset({"kubectl", "helm", "git", "aws", "gcloud", "az", "terraform",
                               "docker", "gh", "pulumi", "redis-cli", "psql"})
_DESTROY_STEMS: Final = ("delete", "drop", "destroy", "remove", "terminate", "purge", "wipe",
                         "truncate", "erase")
_SQL_HEADS: Final = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "DROP", "TRUNCATE",
                               "ALTER", "CREATE", "WITH", "MERGE", "GRANT", "REVOKE", "COPY",
                               "EXPLAIN", "SHOW", "CALL", "EXEC", "EXECUTE", "DO", "REPLACE"})
_TOOL_NAME: Final = re.compile(r"^\s*([^\s({]+)\s*(.*)$", re.S)
_TOOL_READ_EXTRA: Final = frozenset({"fetch", "grep", "glob", "ls", "cat", "websearch",
                                     "webfetch", "todoread"})


_PATH_KEYS: Final = ("file_path", "path", "filename", "target_file", "notebook_path", "file",
                     "destination", "dest")


def _string_field(args: object, keys: tuple[str, ...]) -> str | None:
    if isinstance(args, dict):
        for k in keys:
            v = args.get(k)
            if isinstance(v, str):
                return v
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                return " ".join(shlex.quote(x) for x in v) if k == "argv" else "\n".join(v)
    return None


def classify_tool(command: str, shell: ShellFn, sql: SqlFn) -> Assessment:
    m = _TOOL_NAME.match(command)
    if not m or not m.group(1):
        return write("empty tool call; assumed write")
    name, raw = m.group(1), m.group(2).strip()
    parts = parts_of(name) or [name.lower()]
    try:
        args: object = json.loads(raw) if raw[:1] in "{[" else raw
    except ValueError:
        args = raw
    found: list[Assessment] = []
    if _SQL_TOOL & set(parts):
        text = _string_field(args, ("sql", "query", "statement", "statements"))
        if text is None and isinstance(args, str) and args:
            text = args
        if text is not None:
            found.append(sql(text))
        elif isinstance(args, dict):  # {"text": "DELETE …"}: any value that reads as SQL
            found += [sql(v) for v in args.values()
                      if isinstance(v, str) and v.split(None, 1)[:1]
                      and v.split(None, 1)[0].upper() in _SQL_HEADS]
    if _SHELL_TOOL & set(parts) and not found:
        text = _string_field(args, ("command", "cmd", "script", "commands", "shell_command",
                                    "argv"))
        if text is None and isinstance(args, str) and args:
            text = args
        if text is not None:
            found.append(shell(text))
    if name.lower() in _CLI_TOOLS and isinstance(args, str):
        found.append(shell(f"{name.lower()} {args}"))
    content_seen = bool(found)
    method = _string_field(args, ("method",))
    if method:
        found.append(http_verdict(method, _string_field(args, ("url", "path", "endpoint")) or ""))
    if "*** Delete File:" in raw:
        found.append(destructive(f"tool {name}: the patch deletes a file"))
    verdict = _tool_name_verdict(name, parts)
    path = _string_field(args, _PATH_KEYS)
    if path and verdict.risk == "write" and not found:
        hit = write_to(f"tool {name}", path)
        if hit is not None and hit.risk == "destructive":
            found.append(hit)
    # When the arguments show what runs, a generic name ("execute_sql", "run_command")
    # adds nothing; only a name that itself says "delete" still counts.
    if not content_seen or verdict.risk == "destructive":
        found.append(verdict)
    return combine(found)


def _tool_name_verdict(name: str, parts: list[str]) -> Assessment:
    low = name.lower()
    hit = next((p for p in parts if p in DESTRUCTIVE_VERBS or p.startswith("delet")), None)
    hit = hit or next((w for w in _DESTROY_STEMS if w in low), None)
    if hit:
        return destructive(f"tool {name} names a destructive action ({hit})")
    if any(p in WRITE_VERBS for p in parts):
        return write(f"tool {name} changes something")
    if any(p in READ_VERBS or p in _TOOL_READ_EXTRA for p in parts):
        return read(f"tool {name} only reads")
    return write(f"unknown tool {name}; assumed write")
