"""agent_shim runs inside agents: it must not drag in the operator side."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("textual", "aiosqlite", "towerctl", "cryptography", "click", "rich")
ALLOWED_THIRD_PARTY = {
    "websockets",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
}


def test_agent_shim_imports_only_stdlib_websockets_pydantic() -> None:
    code = (
        "import sys, json; import agent_shim, agent_shim.client, agent_shim.sync;"
        "import agent_shim.risk, agent_shim.policy;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    third_party = {m for m in loaded if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert third_party <= ALLOWED_THIRD_PARTY | {"agent_shim"}, third_party - ALLOWED_THIRD_PARTY


def test_exec_does_not_import_the_tui_or_store() -> None:
    code = (
        "import sys, json; from towerctl.cli import cli; cli.get_command(None, 'exec');"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"textual", "aiosqlite", "cryptography", "rich"}
