"""Properties of the classifier that no table can pin: floors, totality, purity.

The contract is "never lower than declared", "unknown is never read", "adding a
destructive step can only make things worse", and "no I/O": these are checked
over generated inputs with hypothesis and over the package's own source.
"""

from __future__ import annotations

import ast
import timeit
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent_shim.risk as risk_pkg
from agent_shim.risk import Assessment, classify
from agent_shim.risk.shell import KNOWN_COMMANDS
from agent_shim.types import KINDS, RISKS, Kind, Risk, risk_rank

SAFE_WORD = st.from_regex(r"[a-z][a-z0-9_-]{0,14}", fullmatch=True)
ARG = st.from_regex(r"[A-Za-z0-9_./=-]{1,12}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=SAFE_WORD, args=st.lists(ARG, max_size=5))
def test_unknown_commands_are_never_read(name: str, args: list[str]) -> None:
    if name in KNOWN_COMMANDS or name in ("for", "case", "select", "if", "while", "until",
                                          "do", "done", "fi", "then", "else", "elif", "esac",
                                          "time", "function", "coproc", "test"):
        return
    got = classify("shell", " ".join([name, *args]))
    assert got.risk != "read", got


@settings(max_examples=200, deadline=None)
@given(name=SAFE_WORD)
def test_unknown_tools_are_never_read_unless_named_like_readers(name: str) -> None:
    if name in KNOWN_COMMANDS:  # a tool called "kubectl"/"git" is read as that CLI
        return
    got = classify("tool", name)
    if got.risk == "read":
        assert any(r.startswith("tool ") and "only reads" in r for r in got.reasons)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(KINDS), text=st.text(max_size=200))
def test_total_on_arbitrary_text(kind: Kind, text: str) -> None:
    got = classify(kind, text)
    assert isinstance(got, Assessment)
    assert got.risk in RISKS
    assert got.reasons and all(isinstance(r, str) and r for r in got.reasons)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(KINDS), text=st.text(max_size=80),
       declared=st.sampled_from(RISKS))
def test_never_lower_than_declared(kind: Kind, text: str, declared: Risk) -> None:
    got = classify(kind, text, declared=declared)
    assert risk_rank(got.risk) >= risk_rank(declared)
    plain = classify(kind, text)
    assert risk_rank(got.risk) == max(risk_rank(plain.risk), risk_rank(declared))


def test_declared_raise_is_explained() -> None:
    got = classify("shell", "ls -la", declared="destructive")
    assert got.risk == "destructive"
    assert "agent declared destructive" in got.reasons
    assert classify("shell", "rm -rf /", declared="read").risk == "destructive"
    assert "agent declared" not in " ".join(classify("shell", "rm -rf x",
                                                     declared="write").reasons)
    assert classify("shell", "git status", declared="write").risk == "write"


def test_bad_declared_and_kind_fail_closed() -> None:
    assert classify("shell", "ls", declared="harmless").risk == "destructive"  # type: ignore[arg-type]
    assert classify("teleport", "ls").risk == "destructive"  # type: ignore[arg-type]
    assert classify("shell", None).risk == "destructive"  # type: ignore[arg-type]


SAFE_PREFIXES = ["ls", "git status", "kubectl get pods", "echo hi", "cat README.md | head",
                 "psql -c 'SELECT 1'", "terraform plan", "aws s3 ls"]
DESTRUCTIVE_SUFFIXES = ["rm -rf /srv", "kubectl delete ns prod", "terraform destroy",
                        "psql -c 'DROP TABLE users'", "git push -f", "reboot"]


@pytest.mark.parametrize("prefix", SAFE_PREFIXES)
@pytest.mark.parametrize("sep", [" && ", " || ", "; ", " & ", "\n", " | "])
@pytest.mark.parametrize("suffix", DESTRUCTIVE_SUFFIXES)
def test_a_destructive_step_anywhere_wins(prefix: str, sep: str, suffix: str) -> None:
    assert classify("shell", prefix + sep + suffix).risk == "destructive"
    assert classify("shell", suffix + sep + prefix).risk == "destructive"


WRAPPERS = ["sudo", "sudo -u root", "env A=1", "nice -n 5", "timeout 10", "nohup", "time",
            "command", "exec", "stdbuf -oL", "ionice -c3", "setsid", "bash -c", "sh -c",
            "ssh host", "xargs", "watch", "doas", "builtin", "flock /tmp/l", "chrt 5",
            "taskset 1", "unbuffer", "strace -f", "eval"]


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("inner", ["rm -rf /data", "kubectl delete ns prod", "reboot",
                                   "terraform destroy -auto-approve"])
def test_wrappers_never_launder(wrapper: str, inner: str) -> None:
    quoted = f"'{inner}'" if wrapper.endswith((" -c", "watch", "eval")) else inner
    assert classify("shell", f"{wrapper} {quoted}").risk == "destructive"


@pytest.mark.parametrize("kind", ["shell", "k8s", "cloud"])
def test_cli_kinds_share_shell_semantics(kind: Kind) -> None:
    assert classify(kind, "kubectl get pods").risk == "read"
    assert classify(kind, "aws s3 rm s3://b --recursive").risk == "destructive"


def test_reasons_are_deduplicated_and_worst_first() -> None:
    got = classify("shell", "git add . && rm -rf build && rm -rf build && git status")
    assert got.risk == "destructive"
    assert len(got.reasons) == len(set(got.reasons))
    assert got.reasons[0].startswith("rm")
    assert not any("only reads" in r for r in got.reasons)


_ALLOWED_IMPORTS = {"__future__", "collections", "collections.abc", "dataclasses", "functools",
                    "json", "posixpath", "re", "shlex", "typing"}
_FORBIDDEN_NAMES = {"open", "exec", "eval", "compile", "__import__", "input", "breakpoint"}


def _sources() -> list[Path]:
    root = Path(risk_pkg.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    return files


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_package_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""]
        else:
            mods = []
        for mod in mods:
            assert mod in _ALLOWED_IMPORTS or mod.startswith("agent_shim."), (path.name, mod)
            assert not mod.startswith(("agent_shim.client", "agent_shim.sync")), mod
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in _FORBIDDEN_NAMES, (path.name, node.func.id)
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("environ", "getenv", "system", "popen"), path.name


def test_classify_is_fast() -> None:
    """A typical command classifies in well under 100 µs (generous bound for slow CI)."""
    commands = ["git status", "kubectl get pods -n prod -o wide", "ls -la | grep foo",
                "psql -c 'SELECT * FROM users WHERE id = 1'", "rm -rf build && make"]
    from agent_shim.risk import _classify

    per_call = min(timeit.repeat(lambda: [_classify("shell", c, None) for c in commands],
                                 number=50, repeat=3)) / (50 * len(commands))
    assert per_call < 500e-6, f"{per_call * 1e6:.1f} µs per uncached classify"


@pytest.mark.parametrize(
    ("kind", "command", "segment"),
    [
        ("shell", "cd infra && sudo terraform destroy", "terraform destroy"),
        ("shell", "ls $(rm -rf /)", "rm -rf /"),
        ("shell", "bash -c 'kubectl delete ns prod' && echo ok", "kubectl delete ns prod"),
        ("shell", "env A=1 timeout 5 nice -n 3 rm -rf /srv", "rm -rf /srv"),
        ("shell", "ssh db1 'sudo systemctl stop postgresql'", "systemctl stop postgresql"),
        ("shell", "find . | xargs -0 rm -f", "rm -f"),
        ("k8s", "delete ns prod", "kubectl delete ns prod"),
        ("cloud", "destroy -auto-approve", "terraform destroy -auto-approve"),
        ("sql", "SELECT 1; /* hidden */ DROP DATABASE prod", "DROP DATABASE prod"),
    ],
)
def test_segments_expose_inner_commands_for_policy(kind: Kind, command: str, segment: str) -> None:
    got = classify(kind, command)
    assert segment in got.segments, got.segments


def test_segments_do_not_change_equality_or_repr() -> None:
    got = classify("shell", "git status && ls")
    assert got == Assessment(got.risk, got.reasons)
    assert "segments" not in repr(got)
    assert classify("http", "GET https://x").segments == ()
