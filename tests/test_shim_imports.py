"""agent_shim runs inside agents: it must not drag in the operator side."""

from __future__ import annotations

import json
import subprocess
import sys

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
