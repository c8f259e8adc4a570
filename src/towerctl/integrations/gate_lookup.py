"""What a gated tool is (its kind, its target) and where the real one is.

Shared by the in-process gate (``gate_wrapper``) and ``towerctl gate
install``; the stdlib-only fast client keeps its own copy of the two tables
(it must not import towerctl), and a test holds the copies equal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agent_shim.types import Kind
from towerctl.localshim.shimclient.gate import is_wrapper

KINDS: Final[dict[str, Kind]] = {
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
#: Environment variables that say what an invocation touches, shown to the
#: approver as the target (the agent can set them, so they are a hint, and
#: they are bound into the digest like everything else).
TARGET_VARS: Final[dict[str, tuple[str, ...]]] = {
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


def kind_for(tool: str) -> Kind:
    return KINDS.get(tool, "shell")


def target_for(tool: str, environ: Mapping[str, str]) -> str:
    names = TARGET_VARS.get(tool) or (TARGET_VARS["k8s"] if kind_for(tool) == "k8s" else ())
    return " ".join(f"{n}={environ[n]}" for n in names if environ.get(n))[:512]


# ------------------------------------------------------------------- lookup


@dataclass(frozen=True, slots=True)
class Lookup:
    real: str | None
    path: str  # PATH without the gate's directory: what the real tool runs with
    only_wrappers: bool  # found nothing but towerctl wrappers (ourselves included)


def find_real(tool: str, gate_dir: str, path_env: str) -> Lookup:
    """The first executable ``tool`` on PATH that is not a towerctl wrapper.

    The gate's own directory is dropped from PATH (compared by real path, so
    ``./bin``, symlinks and trailing slashes all count); other gate directories
    are skipped by the marker in their wrappers, so two installs cannot bounce
    an invocation between them.
    """
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
            return Lookup(os.path.abspath(candidate), os.pathsep.join(kept), False)
    return Lookup(None, os.pathsep.join(kept), saw_wrapper)
