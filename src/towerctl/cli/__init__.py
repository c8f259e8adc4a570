"""The ``towerctl`` command line.

Subcommands are imported only when invoked: ``towerctl exec`` sits in front
of every command an agent runs, so it must not pay for textual, aiosqlite or
cryptography, and it does not even pay for click: :func:`main` hands
``exec`` and ``hook claude-code|codex`` (one process per tool call of a
coding agent) to the local shim daemon's stdlib-only client
(:func:`towerctl.localshim.shimclient.execcmd.exec_main`,
:func:`towerctl.localshim.shimclient.hook.hook_main`) before click is imported,
unless ``TOWER_NO_DAEMON=1``. The click group itself lives in
:mod:`towerctl.cli._group` (``cli`` and ``COMMANDS`` are still importable
from here).
"""

from __future__ import annotations

import sys

# No ``typing`` import here: it alone would cost ``towerctl exec`` ~5 ms.


def __getattr__(name: str) -> object:
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from towerctl.cli import _group

        return getattr(_group, name)
    raise AttributeError(f"module 'towerctl.cli' has no attribute {name!r}")


def main(argv: list[str] | None = None) -> object:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["exec"], ["hook"]):
        from towerctl.localshim.shimclient.settings import no_daemon

        if not no_daemon():
            from towerctl.localshim.shimclient.runner import leave

            if args[0] == "exec":
                from towerctl.localshim.shimclient.execcmd import exec_main as front
            else:
                from towerctl.localshim.shimclient.hook import hook_main as front
            code = front(args[1:])
            if code is not None:
                leave(code)
    from towerctl.cli._group import main as click_main

    return click_main(argv)
