"""The fast client of the local shim daemon: what a gate wrapper runs.

Standard library only, and no import of the ``towerctl`` package: the
wrappers run ``python -I -S -c "…import fastclient…" DIR gate GATE_DIR MODE
TOOL ARGS…`` with this directory appended to ``sys.path``, so that a gated
``kubectl get`` costs an interpreter start (~15 ms) and one round trip to the
daemon instead of importing pydantic, websockets and click (~0.45 s) and
opening a new tower session. Importing it by name, rather than running it by
path, keeps its bytecode cached.

The code lives in the :mod:`.shimclient` package (the wire protocol, the
settings, the daemon connection, the gate / ``exec`` / hook front ends); this
module is the wrappers' entry point, :func:`main`, and keeps the names other
code and the tests have always imported from here.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING or __package__:
    from towerctl.localshim.shimclient import connect, gate, runner, settings, wire
else:  # imported by name by a gate wrapper: this directory is on sys.path
    from shimclient import connect, gate, runner, settings, wire

# The names this module has always offered.
PROTOCOL = wire.PROTOCOL
MAX_LINE = wire.MAX_LINE
Refused = wire.Refused
Conn = wire.Conn
loads = wire.loads
dumps = wire.dumps
say = wire.say
CONNECT_TIMEOUT_S = settings.CONNECT_TIMEOUT_S
START_TIMEOUT_S = settings.START_TIMEOUT_S
NO_DAEMON_ENV = settings.NO_DAEMON_ENV
IDLE_ENV = settings.IDLE_ENV
RUNTIME_DIR_ENV = settings.RUNTIME_DIR_ENV
no_daemon = settings.no_daemon
connect_timeout = settings.connect_timeout
start_timeout = settings.start_timeout
data_dir = settings.data_dir
config_path = settings.config_path
load_file = settings.load_file
resolve = settings.resolve
resolve_hub_key = settings.resolve_hub_key
private_dir = connect.private_dir
install_key = connect.install_key
socket_path = connect.socket_path
daemon_env = connect.daemon_env
open_daemon = connect.open_daemon
converse = connect.converse
EXIT_DENIED = runner.EXIT_DENIED
EXIT_NOT_FOUND = runner.EXIT_NOT_FOUND
plain_tool_name = runner.plain_tool_name
quote = runner.quote
join = runner.join
run_and_report = runner.run_and_report
leave = runner.leave
MARKER = gate.MARKER
KINDS = gate.KINDS
TARGET_VARS = gate.TARGET_VARS
kind_for = gate.kind_for
target_for = gate.target_for
find_real = gate.find_real
gate_main = gate.gate_main
#: Loaded when first asked for: a gate does not need them.
_EXEC_NAMES = frozenset({"EXEC_OPTIONS", "SHELL_CHARS", "parse_exec", "exec_command", "exec_main"})


def __getattr__(name: str) -> object:
    if name in _EXEC_NAMES:
        if TYPE_CHECKING or __package__:
            from towerctl.localshim.shimclient import execcmd
        else:
            from shimclient import execcmd
        return getattr(execcmd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "gate":
        try:
            return gate.gate_main(args[1:])
        except Exception as exc:  # fail closed on anything unforeseen
            say("towerctl gate", f"denied: the gate failed ({type(exc).__name__}: {exc}); failing closed")
            return EXIT_DENIED
    say("towerctl fastclient", "usage: fastclient.py gate GATE_DIR exec|wait TOOL [ARGS...]")
    return EXIT_DENIED


if __name__ == "__main__":
    leave(main())
