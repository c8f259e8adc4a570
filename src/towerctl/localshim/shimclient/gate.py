"""``fastclient.py gate``: what a gate wrapper runs for one invocation.

What it does is what :mod:`towerctl.integrations.gate_wrapper` does (that
module stays as the in-process slow path, used with ``TOWER_NO_DAEMON=1``):
drop the gate's directory from PATH, find the real tool, resolve the
``TOWER_*`` settings, ask the daemon (starting it when none runs), then
``execve`` the real tool, or in wait mode run it, wait and report its exit
code. Everything that goes wrong fails closed: exit 126 with the reason on
stderr, and the real tool never starts.
"""

from __future__ import annotations

import os
import sys

from .connect import converse
from .runner import EXIT_DENIED, EXIT_NOT_FOUND, execve_tool, join, plain_tool_name, run_and_report
from .settings import connect_timeout, no_daemon, resolve, username
from .wire import PROTOCOL, Refused, say

MARKER = "# towerctl-gate-wrapper v1"


# Mirrors of towerctl.integrations.gate_lookup (it must not import towerctl; a test keeps them equal).
KINDS: dict[str, str] = {
    **dict.fromkeys(("kubectl", "helm", "kustomize", "oc", "kubectl-argo-rollouts", "argocd", "flux"), "k8s"),
    **dict.fromkeys(
        (
            "terraform",
            "tofu",
            "terragrunt",
            "pulumi",
            "aws",
            "gcloud",
            "gsutil",
            "bq",
            "az",
            "eksctl",
            "doctl",
            "cdk",
            "sam",
            "ansible-playbook",
        ),
        "cloud",
    ),
}
TARGET_VARS: dict[str, tuple[str, ...]] = {
    "k8s": ("KUBECONFIG", "HELM_KUBECONTEXT", "HELM_NAMESPACE"),
    "aws": ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "gcloud": ("CLOUDSDK_CORE_PROJECT", "CLOUDSDK_ACTIVE_CONFIG_NAME"),
    "az": ("AZURE_SUBSCRIPTION_ID", "AZURE_CONFIG_DIR"),
    "terraform": ("TF_WORKSPACE", "AWS_PROFILE"),
    "tofu": ("TF_WORKSPACE", "AWS_PROFILE"),
    "pulumi": ("PULUMI_STACK", "AWS_PROFILE"),
    "psql": ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"),
    "mysql": ("MYSQL_HOST", "MYSQL_TCP_PORT"),
}


def kind_for(tool: str) -> str:
    return KINDS.get(tool, "shell")


def target_for(tool: str, environ: dict[str, str] | os._Environ[str]) -> str:
    names = TARGET_VARS.get(tool) or (TARGET_VARS["k8s"] if kind_for(tool) == "k8s" else ())
    return " ".join(f"{n}={environ[n]}" for n in names if environ.get(n))[:512]


def is_wrapper(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a wrapper ``towerctl gate install`` wrote (also used there)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return MARKER.encode() in head


def find_real(tool: str, gate_dir: str, path_env: str) -> tuple[str | None, str, bool]:
    """(real binary, PATH without the gate's directory, found only wrappers)."""
    own = os.path.realpath(gate_dir) if gate_dir else None
    kept: list[str] = []
    saw_wrapper = False
    for entry in path_env.split(os.pathsep):
        if own is not None and os.path.realpath(entry or ".") == own:
            saw_wrapper = True
            continue
        kept.append(entry)
    for entry in kept:
        candidate = os.path.join(entry or ".", tool)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if is_wrapper(candidate):
                saw_wrapper = True
                continue
            return os.path.abspath(candidate), os.pathsep.join(kept), False
    return None, os.pathsep.join(kept), saw_wrapper


def gate_main(args: list[str]) -> int:
    """``GATE_DIR exec|wait TOOL [ARGS…]``: gate one invocation."""
    prefix = "towerctl gate"
    if len(args) < 3 or args[1] not in ("exec", "wait"):
        say(prefix, "usage: fastclient.py gate GATE_DIR exec|wait TOOL [ARGS...]")
        return EXIT_DENIED
    gate_dir, mode, tool, rest = args[0], args[1], args[2], args[3:]
    if no_daemon():
        slow = [sys.executable, "-E", "-P", "-m", "towerctl.integrations.gate_wrapper", *args]
        try:
            os.execv(sys.executable, slow)
        except OSError as exc:
            say(prefix, f"{tool}: denied: cannot start the gate ({exc.strerror}); failing closed")
            return EXIT_DENIED
    if not plain_tool_name(tool):
        say(prefix, f"{tool!r} is not a plain command name")
        return EXIT_DENIED
    real, path, only_wrappers = find_real(tool, gate_dir, os.environ.get("PATH", os.defpath))
    if real is None:
        if only_wrappers:
            say(
                prefix,
                f"{tool}: refused: the only {tool} on PATH is the towerctl wrapper itself "
                f"(install the real {tool} or put its directory after {gate_dir or 'the gate directory'})",
            )
            return EXIT_DENIED
        say(prefix, f"{tool}: command not found on PATH")
        return EXIT_NOT_FOUND
    argv = [tool, *rest]
    try:
        settings = resolve(default_agent=f"{username()}-gate")
        if not settings["token"]:
            raise Refused("no agent token (set TOWER_TOKEN or agent_token in the towerctl config)")
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        request: dict[str, object] = {
            "v": PROTOCOL,
            "op": "admit",
            "mode": mode,
            **settings,
            "connect_timeout": connect_timeout(),
            "kind": kind_for(tool),
            "command": join(argv),
            "argv": argv,
            "shape": "argv",
            "target": target_for(tool, os.environ),
            "cwd": cwd[:4096],
        }
        conn, verdict = converse(request, prefix)
    except Refused as exc:
        say(prefix, f"{tool}: denied: {exc}; failing closed")
        return EXIT_DENIED
    except OSError as exc:
        say(prefix, f"{tool}: denied: the local shim daemon failed ({exc}); failing closed")
        return EXIT_DENIED
    except KeyboardInterrupt:
        say(prefix, f"{tool}: interrupted before it ran")
        return 130
    if verdict.get("verdict") != "allow":
        conn.close()
        say(prefix, f"{tool}: {verdict.get('message') or 'denied'}")
        return EXIT_DENIED
    env = dict(os.environ)
    env["PATH"] = path
    if mode == "exec":
        conn.close()
        return execve_tool(real, argv, env, prefix)
    try:
        return run_and_report(conn, argv, env, prefix, real=real)
    finally:
        conn.close()
