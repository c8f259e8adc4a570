"""Database clients: find the SQL (or Mongo/Redis commands) they will send, and judge it.

SQL can arrive as an option (``psql -c``, ``mysql -e``, ``--query=``), as positional
text (``sqlite3 db "…"``), through stdin (heredoc, here-string, ``echo … |``) or from
a file. Visible text is classified statement by statement; a file, an unseen pipe
or an interactive session is destructive, since a database client exists to act
on the database and nothing shows what it will do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    Word,
    combine,
    destructive,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import Opts, getopt, wants_help
from agent_shim.risk.paths import write_to
from agent_shim.risk.sql import classify_sql
from agent_shim.risk.tools_sys import table


def _stdin_sql(call: Call, tool: str) -> Assessment:
    s = call.stdin
    if s.text is not None:
        text: str = Word(s.text) if s.dynamic else s.text
        return classify_sql(text, origin=f"{tool} ({s.origin})", shell=call.shell)
    if s.source == "file":
        return destructive(f"{tool} runs SQL from {s.origin}; its content is not visible")
    if s.source == "pipe":
        return destructive(f"{tool} runs SQL piped from {s.origin}; its content is not visible")
    return destructive(f"{tool} opens an interactive session; what runs is not visible")


def _run(call: Call, tool: str, texts: Sequence[str], files: Sequence[str]) -> Assessment:
    parts = [classify_sql(t, origin=tool, shell=call.shell) for t in texts]
    for f in files:
        if f == "-":
            parts.append(_stdin_sql(call, tool))
        else:
            parts.append(destructive(f"{tool} runs SQL from {f}; its content is not visible"))
    if not parts:
        parts.append(_stdin_sql(call, tool))
    return combine(parts)


def _outputs(o: Opts, *names: str) -> list[Assessment]:
    return [a for a in (write_to("output file", f) for f in o.all(*names)) if a is not None]


def psql(call: Call) -> Assessment:
    o = getopt(call.args, "cdfhLopUvPTFR", {"command", "dbname", "file", "host", "log-file",
                                           "output", "port", "username", "set", "variable",
                                           "pset", "table-attr", "field-separator",
                                           "record-separator"})
    if wants_help(call.args) or o.has("V", "version"):
        return read("psql --help/--version only prints")
    texts = o.all("c", "command")
    files = o.all("f", "file")
    if o.has("l", "list") and not texts and not files:
        return read("psql -l only lists databases")
    return combine([_run(call, "psql", texts, files), *_outputs(o, "o", "output", "L",
                                                               "log-file")])


def mysql(call: Call) -> Assessment:
    o = getopt(call.args, "eDhPuSO", {"execute", "database", "host", "port", "user", "socket",
                                     "init-command", "defaults-file", "login-path", "tee",
                                     "pager", "default-character-set", "defaults-extra-file"},
               optional_short="p")
    if wants_help(call.args) or o.has("V", "version"):
        return read(f"{call.name} --help/--version only prints")
    parts = [classify_sql(t, origin=f"{call.name} --init-command", shell=call.shell)
             for t in o.all("init-command")]
    for pager in o.all("pager"):
        if pager.split(" ")[0] not in ("less", "more", "cat", ""):
            parts.append(call.shell(pager))
    parts += _outputs(o, "tee")
    parts.append(_run(call, call.name, o.all("e", "execute"), []))
    return combine(parts)


def sqlite3(call: Call) -> Assessment:
    o = getopt(call.args, "", {"cmd", "init", "separator", "nullvalue", "newline", "A", "mmap",
                               "vfs", "lookaside", "maxsize", "pagecache", "heap"},
               single_dash_long=True)
    if o.has("version", "help"):
        return read(f"{call.name} -version only prints")
    texts = o.all("cmd") + o.args[1:]
    files = [f for f in o.all("init") if f != "/dev/null"]
    if o.has("A"):
        return write(f"{call.name} -A changes an archive")
    return _run(call, call.name, texts, files)


def clickhouse(call: Call) -> Assessment:
    args = list(call.args)
    if call.name == "clickhouse" and args and args[0] in ("client", "local"):
        args = args[1:]
    o = getopt(args, "qhudp", {"query", "queries-file", "host", "user", "database", "password",
                               "port", "format", "config-file"})
    return _run(call, "clickhouse-client", o.all("q", "query"), o.all("queries-file"))


def _option_sql(tool: str, short: str, long: str, file_short: str, file_long: str) -> Handler:
    def handler(call: Call) -> Assessment:
        o = getopt(call.args, short + file_short + "uphHSdPUDkC",
                   {long, file_long, "username", "password", "host", "port", "database",
                    "keyspace", "server", "user"})
        if wants_help(call.args):
            return read(f"{tool} --help only prints")
        return _run(call, tool, o.all(short, long), o.all(file_short, file_long))

    return handler


_MONGO_DESTROY: Final = re.compile(
    r"\.(drop|dropDatabase|dropIndex|dropIndexes|dropUser|dropAllUsers|dropRole|shutdownServer"
    r"|deleteMany\(\s*\{\s*\}|remove\(\s*(\{\s*\}|\))|updateMany\(\s*\{\s*\}"
    r"|renameCollection)\s*\(?|\bdrop\s*:|\bdropDatabase\s*:|\bshutdown\s*:"
)
_MONGO_WRITE: Final = re.compile(
    r"\.(insert\w*|update\w*|replaceOne|delete\w*|remove|findOneAnd\w+|findAndModify|"
    r"create\w*|bulkWrite|save|runCommand|adminCommand|eval|grant\w*|revoke\w*|"
    r"setProfilingLevel|fsyncLock|compact|reIndex|convertToCapped)\s*\("
)


def classify_mongo(js: str, tool: str = "mongosh") -> Assessment:
    if isinstance(js, Word):
        return destructive(f"{tool} --eval built from a shell expansion; not visible")
    if _MONGO_DESTROY.search(js):
        return destructive(f"{tool}: drops collections/databases or deletes/updates every "
                           "document")
    if re.search(r"\$(out|merge)\b", js) or _MONGO_WRITE.search(js):
        return write(f"{tool}: changes documents or collections")
    return read(f"{tool}: only finds, counts or aggregates")


def mongo(call: Call) -> Assessment:
    o = getopt(call.args, "uphf", {"eval", "file", "username", "password", "host", "port",
                                   "authenticationDatabase", "tls", "apiVersion"})
    if wants_help(call.args) or o.has("version"):
        return read(f"{call.name} --help only prints")
    parts = [classify_mongo(js, call.name) for js in o.all("eval")]
    scripts = o.all("f", "file") + [p for p in o.pos if p.endswith(".js")]
    parts += [destructive(f"{call.name} runs script {s}; its content is not visible")
              for s in scripts]
    if not parts:
        s = call.stdin
        if s.visible and s.text is not None:
            return classify_mongo(s.text, call.name)
        return destructive(f"{call.name} opens a shell; what runs is not visible")
    return combine(parts)


_REDIS_READ: Final = wordset("""get mget keys scan hget hgetall hkeys hvals hlen hexists hscan
hmget lrange llen lindex smembers scard sismember smismember sscan zrange zrangebyscore zrevrange
zcard zscore zrank zscan zcount ttl pttl exists type strlen info ping dbsize monitor slowlog
memory object xrange xrevrange xlen xinfo xread getrange bitcount pfcount geopos geodist echo
time lastsave role command dump randomkey subscribe psubscribe hello auth select
json.get ft.search ft.info ft._list scard srandmember zrevrangebyscore expiretime""")
_REDIS_DESTROY: Final = wordset("""flushall flushdb del unlink shutdown debug swapdb replicaof
slaveof failover""")
_REDIS_SUB: Final = {
    "config": ({"get"}, set()), "client": ({"list", "getname", "info", "id"}, set()),
    "cluster": ({"info", "nodes", "slots", "shards", "myid", "keyslot", "countkeysinslot"},
                {"reset", "forget", "failover", "delslots", "flushslots"}),
    "script": ({"exists"}, {"flush"}), "function": ({"list", "dump", "stats"}, {"flush",
                                                                                "delete"}),
    "acl": ({"list", "whoami", "users", "getuser", "cat", "log"}, {"deluser"}),
    "module": ({"list"}, {"unload"}), "latency": ({"latest", "history", "doctor", "graph"},
                                                  set()),
}  # fmt: skip


def redis_command(words: Sequence[str]) -> Assessment:
    if not words:
        return read("no redis command")
    cmd = words[0].lower()
    sub = words[1].lower() if len(words) > 1 else ""
    if cmd in ("eval", "evalsha", "fcall", "eval_ro", "fcall_ro"):
        body = words[1].lower() if len(words) > 1 and cmd == "eval" else ""
        if cmd.endswith("_ro"):
            return read(f"redis {cmd} runs a read-only script")
        if any(f"'{c}'" in body or f'"{c}"' in body for c in _REDIS_DESTROY):
            return destructive(f"redis {cmd}: the script deletes or flushes keys")
        return write(f"redis {cmd} runs a script") if body else destructive(
            f"redis {cmd} runs a script that is not visible")
    if cmd in _REDIS_SUB:
        reads, destroys = _REDIS_SUB[cmd]
        if sub in destroys:
            return destructive(f"redis {cmd} {sub} removes data or cluster state")
        if sub in reads:
            return read(f"redis {cmd} {sub} only reads")
        return write(f"redis {cmd} {sub} changes server state")
    if cmd in _REDIS_DESTROY:
        return destructive(f"redis {cmd.upper()} deletes keys or stops the server")
    if cmd in _REDIS_READ:
        return read(f"redis {cmd.upper()} only reads")
    return write(f"redis {cmd.upper()} changes data")


def redis_cli(call: Call) -> Assessment:
    o = getopt(call.args, "hpaunrids", {"user", "pass", "pattern", "eval", "rdb", "cluster",
                                        "tls", "cacert", "cert", "key", "sni", "count",
                                        "functions-rdb", "memkeys-samples"},
               stop_at_positional=True)
    if wants_help(call.args) or o.has("v", "version"):
        return read("redis-cli --help only prints")
    if o.has("eval", "pipe"):
        return destructive("redis-cli --eval/--pipe runs commands that are not visible")
    if o.has("rdb", "functions-rdb"):
        return write("redis-cli --rdb writes a dump file")
    if o.has("cluster"):
        verb = (o.value("cluster") or "").lower()
        if verb in ("check", "info", "help"):
            return read(f"redis-cli --cluster {verb} only reads")
        return destructive(f"redis-cli --cluster {verb} changes cluster topology")
    if o.has("scan", "bigkeys", "memkeys", "hotkeys", "stat", "latency", "latency-history",
             "latency-dist", "intrinsic-latency", "keystats"):
        return read("redis-cli --scan/--bigkeys/--stat only reads")
    words = [*o.pos, *o.rest]
    if words:
        return redis_command(words)
    s = call.stdin
    if s.visible and s.text is not None:
        return combine(redis_command(line.split()) for line in s.text.splitlines() if line.strip())
    return destructive("redis-cli opens an interactive session; what runs is not visible")


def pg_dump(call: Call) -> Assessment:
    o = getopt(call.args, "fdhpUnNtTFZEj", {"file", "dbname", "host", "port", "username",
                                           "schema", "table", "format", "compress", "encoding",
                                           "result-file"})
    outs = _outputs(o, "f", "file", "r", "result-file")
    return combine(outs) if outs else read(f"{call.name} only reads the database")


def pg_restore(call: Call) -> Assessment:
    o = getopt(call.args, "dfhpUnNtTFLIPSj", {"dbname", "file", "host", "port", "username"})
    if o.has("l", "list"):
        return read("pg_restore -l only lists the archive")
    if o.has("c", "clean"):
        return destructive("pg_restore --clean drops objects before recreating them")
    if o.has("f", "file") and not o.has("d", "dbname"):
        return write("pg_restore -f writes a SQL script")
    return write("pg_restore loads objects into the database")


def pg_ctl(call: Call) -> Assessment:
    verb = next((a for a in call.args if not a.startswith("-")), "")
    if verb in ("stop", "kill", "promote"):
        return destructive(f"pg_ctl {verb} stops the server or forces failover")
    if verb == "status":
        return read("pg_ctl status only reads")
    return write(f"pg_ctl {verb} changes the server")


def bq(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    if any(a.startswith("--dry_run") or a == "--dry-run" for a in call.args):
        return read("bq --dry_run only validates")
    if verb == "query":
        texts = pos[1:]
        return _run(call, "bq query", texts, []) if texts else _stdin_sql(call, "bq query")
    if verb == "rm":
        return destructive("bq rm deletes datasets or tables")
    if verb in ("ls", "show", "head", "help", "version", "wait", "get-iam-policy", ""):
        return read(f"bq {verb} only reads")
    return write(f"bq {verb} changes datasets")


HANDLERS: Final[dict[str, Handler]] = {
    "psql": psql, "mysql": mysql, "mariadb": mysql, "sqlite3": sqlite3, "sqlite": sqlite3,
    "duckdb": _option_sql("duckdb", "c", "command", "", "init"),
    "clickhouse-client": clickhouse, "clickhouse": clickhouse, "clickhouse-local": clickhouse,
    "cqlsh": _option_sql("cqlsh", "e", "execute", "f", "file"),
    "sqlcmd": _option_sql("sqlcmd", "Q", "query", "i", "input-file"),
    "snowsql": _option_sql("snowsql", "q", "query", "f", "filename"),
    "usql": _option_sql("usql", "c", "command", "f", "file"),
    "mongosh": mongo, "mongo": mongo, "redis-cli": redis_cli, "valkey-cli": redis_cli,
    "pg_dump": pg_dump, "pg_dumpall": pg_dump, "mysqldump": pg_dump, "mariadb-dump": pg_dump,
    "pg_restore": pg_restore, "pg_ctl": pg_ctl, "pg_ctlcluster": pg_ctl, "bq": bq,
    "createdb": lambda c: write("createdb creates a database"),
    "createuser": lambda c: write("createuser creates a role"),
    "dropdb": lambda c: destructive("dropdb deletes a database and all its data"),
    "dropuser": lambda c: destructive("dropuser deletes a role"),
    "pg_isready": lambda c: read("pg_isready only checks the server"),
    "pg_basebackup": lambda c: write("pg_basebackup writes a backup"),
    "pgbench": lambda c: destructive("pgbench -i drops and recreates the pgbench tables")
    if any(a in ("-i", "--initialize") for a in c.args) else write("pgbench runs a workload"),
    "mysqladmin": table("mysqladmin", {"status", "ping", "processlist", "variables", "version",
                                       "extended-status"},
                        {"drop", "shutdown", "stop-replica", "stop-slave"},
                        what="the MySQL server", short_values="uphPS"),
}  # fmt: skip
OWN_HELP: Final = frozenset({"psql", "mysql", "mariadb", "mongosh", "mongo", "redis-cli"})
