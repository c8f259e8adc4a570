"""agent_shim runs inside agents: it must not drag in the operator side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FORBIDDEN = frozenset({"textual", "aiosqlite", "towerctl", "cryptography", "click", "rich"})
ALLOWED_THIRD_PARTY = frozenset(
    {"websockets", "pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection"}
)
_LIST = "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


def top_level_modules(imports: str) -> set[str]:
    """Top-level modules a fresh interpreter holds after ``imports``, minus those it
    holds before (site hooks such as ``sitecustomize`` are the machine's, not ours)."""

    def run(code: str) -> set[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return set(json.loads(out))

    return run(f"{imports}; {_LIST}") - run(_LIST)


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and not m.startswith("_")}


def test_agent_shim_imports_only_stdlib_websockets_pydantic() -> None:
    loaded = top_level_modules(
        "import agent_shim, agent_shim.client, agent_shim.sync, agent_shim.risk, agent_shim.policy"
    )
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
    extra = third_party(loaded) - ALLOWED_THIRD_PARTY - {"agent_shim"}
    assert not extra, extra


def test_exec_does_not_import_the_tui_or_store() -> None:
    loaded = top_level_modules("from towerctl.cli import cli; cli.get_command(None, 'exec')")
    assert not loaded & {"textual", "aiosqlite", "cryptography", "rich"}


#: What ``towerctl exec`` and ``towerctl hook`` (a process per command or tool
#: call of an agent) must not load before handing over to the local shim
#: daemon: each of these cost it 5-15 ms on the 2-core machine.
HEAVY_FOR_A_START = frozenset({"re", "enum", "typing", "click", "json", "socket", "pydantic", "websockets"})


def test_exec_and_hook_clients_load_nothing_heavy() -> None:
    loaded = top_level_modules(
        "import towerctl.cli; from towerctl.localshim.shimclient import settings, runner, execcmd, hook"
    )
    assert not loaded & HEAVY_FOR_A_START, loaded & HEAVY_FOR_A_START


def test_the_installed_towerctl_command_imports_no_re(tmp_path: Path) -> None:
    # pip's generated wrapper for [project.scripts] starts with `import re`;
    # bin/towerctl, installed as the command, does not.
    script = Path(sys.executable).with_name("towerctl")
    assert script.is_file(), "towerctl is installed next to the interpreter running the tests"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env["TOWER_HOME"] = str(tmp_path)  # no token anywhere: refused at once, after the imports
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "exec", "--env", "dev", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 126, proc.stderr[-500:]
    assert "no agent token" in proc.stderr
    imported = {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    assert "towerctl.localshim.shimclient.execcmd" in imported  # the fast path was taken
    assert not imported & HEAVY_FOR_A_START, imported & HEAVY_FOR_A_START
