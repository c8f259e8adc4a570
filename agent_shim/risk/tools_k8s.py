"""Kubernetes: kubectl (and oc), helm, kustomize and the cluster CLIs around them.

kubectl lets flags go anywhere, so the whole line is parsed before the verb is
judged. ``--dry-run`` (client or server) makes anything read-only. Applying a
manifest is a write when the manifest is a file on disk the operator can check
or a heredoc the classifier can read; from an unseen pipe or a URL the content is
not visible and it is destructive, as are ``--prune`` and ``--force``.
"""

from __future__ import annotations

import re
from typing import Final

from agent_shim.risk.model import (
    NO_STDIN,
    Assessment,
    Call,
    Handler,
    at_least,
    combine,
    destructive,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import Opts, getopt, wants_help
from agent_shim.risk.verbs import scales_to_zero, scan

_KUBECTL_LONG: Final = wordset("""namespace context cluster user server kubeconfig token as
as-group as-uid certificate-authority client-certificate client-key request-timeout cache-dir
v tls-server-name profile filename selector output container field-selector patch type replicas
image grace-period timeout kustomize from-literal from-file port target-port sort-by template
since tail overrides restart env labels limits requests serviceaccount cascade
pod-running-timeout session-affinity for patch-file subresource raw chunk-size
prune-allowlist prune-whitelist field-manager current-replicas resource-version
selector-labels max-surge max-unavailable min max cpu-percent name protocol external-ip
generator attach-file to-revision revision copy-to profile-name share-processes target
from-env-file docker-server docker-username docker-password docker-email
since-time limit-bytes pod-running-timeout max-log-requests""")
_KUBECTL_VALUES: Final = _KUBECTL_LONG | set("nsflocpkLv")
_READ: Final = wordset("""get describe logs top explain api-resources api-versions version
cluster-info diff events wait completion kustomize options help""")
_WRITE: Final = wordset("""label annotate set expose autoscale certificate cp cordon uncordon
port-forward proxy edit""")
_REPLICAS_ZERO: Final = re.compile(r'"?replicas"?\s*:\s*0\b')


def _dry_run(o: Opts) -> bool:
    if "dry-run" not in o.flags:
        return False
    vals = o.values.get("dry-run", [])
    return not vals or vals[-1] in ("client", "server", "true", "")


def _manifests(call: Call, o: Opts, verb: str) -> Assessment:
    files = o.all("f", "filename")
    parts: list[Assessment] = []
    for f in files:
        if f == "-":
            text = call.stdin.text if call.stdin.visible else None
            if text is None:
                parts.append(destructive(f"kubectl {verb} -f - applies manifests from "
                                         f"{call.stdin.origin or 'stdin'}; content not visible"))
            elif _REPLICAS_ZERO.search(text):
                parts.append(destructive(f"kubectl {verb}: manifest sets replicas: 0"))
            else:
                parts.append(write(f"kubectl {verb} changes resources from the inline manifest"))
        elif f.startswith(("http://", "https://")):
            parts.append(destructive(f"kubectl {verb} -f {f} applies a downloaded manifest"))
        else:
            parts.append(write(f"kubectl {verb} -f {f} changes resources (file content not "
                               "shown)"))
    if not parts:
        parts.append(write(f"kubectl {verb} changes cluster resources"))
    if o.has("prune"):
        parts.append(destructive(f"kubectl {verb} --prune deletes resources missing from the "
                                 "manifests"))
    if o.has("force") and verb in ("apply", "replace"):
        parts.append(destructive(f"kubectl {verb} --force deletes and recreates resources"))
    return combine(parts)


def _delete(o: Opts) -> Assessment:
    notes = ["kubectl delete removes cluster resources"]
    kind = o.pos[1].lower() if len(o.pos) > 1 else ""
    if kind.split("/", 1)[0] in ("ns", "namespace", "namespaces"):
        notes.append("deleting a namespace deletes everything in it")
    if kind.split("/", 1)[0] in ("pv", "pvc", "persistentvolume", "persistentvolumeclaim",
                                 "persistentvolumes", "persistentvolumeclaims"):
        notes.append("deleting volumes can delete their data")
    if o.has("all", "A", "all-namespaces"):
        notes.append("--all / --all-namespaces widens the deletion")
    return Assessment("destructive", tuple(notes))


def _exec_like(call: Call, o: Opts, verb: str) -> Assessment:
    cmd = list(o.rest) if o.dashdash else list(o.pos[2:] if verb == "exec" else [])
    if verb == "run" and not cmd and o.pos[2:]:
        cmd = list(o.pos[2:])
    where = o.pos[1] if len(o.pos) > 1 else "a pod"
    if not cmd:
        if verb == "run":
            return destructive(f"kubectl run {where} runs the image's default command; what it "
                               "does is not visible")
        return destructive(f"kubectl {verb} {where} opens an interactive session; what runs is "
                           "not visible")
    stdin = call.stdin if o.has("i", "stdin") else NO_STDIN
    return combine([write(f"kubectl {verb} runs a command in {where}"), call.argv(cmd, stdin)])


def kubectl(call: Call) -> Assessment:
    tool = call.name
    o = getopt(call.args, "nsfloc pkLv".replace(" ", ""), _KUBECTL_LONG)
    if wants_help(call.args, short_h=True, value_opts=_KUBECTL_VALUES) or o.pos[:1] == ["help"]:
        return read(f"{tool} --help only prints usage")
    if not o.pos:
        return read(f"{tool} without a subcommand only prints usage")
    verb = o.pos[0]
    if _dry_run(o):
        return read(f"{tool} {verb} --dry-run changes nothing")
    sub = o.pos[1] if len(o.pos) > 1 else ""
    if verb == "delete":
        return _delete(o)
    if verb == "drain":
        return destructive("kubectl drain evicts every pod from the node")
    if verb in ("exec", "debug", "run"):
        return _exec_like(call, o, verb)
    if verb == "attach":
        return destructive("kubectl attach sends input to a running process; not visible")
    if verb in ("apply", "create", "replace"):
        if verb == "apply" and sub in ("view-last-applied",):
            return read("kubectl apply view-last-applied only reads")
        return _manifests(call, o, verb)
    if verb == "scale" or verb == "autoscale":
        zero = scales_to_zero(call.args)
        if zero:
            return destructive(f"kubectl {verb}: {zero}")
        return write(f"kubectl {verb} changes replica counts")
    if verb == "patch":
        if any(_REPLICAS_ZERO.search(p) for p in o.all("p", "patch")):
            return destructive("kubectl patch sets replicas to 0")
        return write("kubectl patch changes cluster resources")
    if verb == "taint":
        if any(a.endswith(":NoExecute") for a in o.pos):
            return destructive("kubectl taint …:NoExecute evicts running pods")
        return write("kubectl taint changes node scheduling")
    if verb == "rollout":
        if sub in ("status", "history"):
            return read(f"kubectl rollout {sub} only reads")
        return write(f"kubectl rollout {sub} changes a rollout")
    if verb == "config":
        if sub in ("view", "get-contexts", "current-context", "get-clusters", "get-users"):
            return read(f"kubectl config {sub} only reads")
        return write(f"kubectl config {sub} changes the local kubeconfig")
    if verb == "auth":
        return read("kubectl auth only checks access") if sub in ("can-i", "whoami") else write(
            "kubectl auth reconcile changes RBAC")
    if verb == "plugin":
        return read("kubectl plugin list only lists")
    if verb in _READ:
        return read(f"kubectl {verb} only reads")
    if verb in _WRITE:
        return write(f"kubectl {verb} changes cluster resources")
    return write(f"kubectl {verb}: unknown subcommand (maybe a plugin); assumed write")


_HELM_READ: Final = wordset("""list ls status get history hist show inspect template search
version env lint verify completion diff help""")
_HELM_DESTROY: Final = frozenset({"uninstall", "delete", "del", "un"})


def helm(call: Call) -> Assessment:
    o = getopt(call.args, "nfo", {"kube-context", "namespace", "kubeconfig", "registry-config",
                                  "repository-cache", "repository-config", "values", "set",
                                  "set-string", "set-file", "set-json", "version", "output",
                                  "post-renderer", "post-renderer-args", "timeout", "repo",
                                  "username", "password", "description", "max", "kube-token",
                                  "kube-as-user", "burst-limit", "kube-apiserver"})
    if wants_help(call.args, short_h=True) or not o.pos or o.pos[0] == "help":
        return read("helm --help only prints usage")
    verb = o.pos[0]
    sub = o.pos[1] if len(o.pos) > 1 else ""
    if "dry-run" in o.flags and (o.values.get("dry-run") or [""])[-1] not in ("none", "false"):
        return read(f"helm {verb} --dry-run changes nothing")
    parts: list[Assessment] = []
    for prog in o.all("post-renderer"):
        parts.append(at_least(call.argv([prog]), "write", "helm --post-renderer runs a program"))
    if verb in _HELM_DESTROY:
        parts.append(destructive(f"helm {verb} removes a release and its resources"))
    elif verb in ("repo", "dependency", "dep", "plugin"):
        if sub in ("list", "ls"):
            parts.append(read(f"helm {verb} list only reads"))
        else:
            parts.append(write(f"helm {verb} {sub} changes local helm state"))
    elif verb in _HELM_READ:
        parts.append(read(f"helm {verb} only reads"))
    elif o.has("force") and verb in ("upgrade", "rollback", "install"):
        parts.append(destructive(f"helm {verb} --force deletes and recreates resources"))
    elif verb == "rollback":
        parts.append(write("helm rollback changes a release to an earlier revision"))
    else:
        parts.append(write(f"helm {verb} changes releases in the cluster"))
    return combine(parts)


def kustomize(call: Call) -> Assessment:
    if any(a in ("--enable-exec", "--enable-alpha-plugins", "--enable-star") for a in call.args):
        return destructive("kustomize exec plugins run programs")
    verb = next((a for a in call.args if not a.startswith("-")), "")
    if verb in ("build", "cfg", "version", "docs-fn", "help", ""):
        return read(f"kustomize {verb} only renders")
    return write(f"kustomize {verb} edits kustomization files")


def k9s(call: Call) -> Assessment:
    if "--readonly" in call.args:
        return read("k9s --readonly only views the cluster")
    return destructive("k9s is an interactive cluster UI; what it does is not visible")


def kubectx(call: Call) -> Assessment:
    if not call.args or call.args[0] in ("-c", "--current"):
        return read(f"{call.name} only lists contexts")
    if call.args[0] == "-d":
        return write(f"{call.name} -d deletes a kubeconfig context")
    return write(f"{call.name} switches the kubeconfig context")


def cluster_cli(call: Call) -> Assessment:
    zero = scales_to_zero(call.args)
    if zero:
        return destructive(f"{call.name}: {zero}")
    pos = [a for a in call.args if not a.startswith("-")]
    return scan(call.name, pos, "cluster resources")


HANDLERS: Final[dict[str, Handler]] = {
    "kubectl": kubectl, "oc": kubectl, "kubecolor": kubectl, "microk8s.kubectl": kubectl,
    "k3s-kubectl": kubectl, "helm": helm, "helm3": helm, "kustomize": kustomize, "k9s": k9s,
    "kubectx": kubectx, "kubens": kubectx, "stern": lambda c: read("stern only tails logs"),
    "kubetail": lambda c: read("kubetail only tails logs"),
    **{n: cluster_cli for n in ("argocd", "flux", "eksctl", "istioctl", "linkerd", "velero",
                                "kind", "minikube", "k3d", "kops", "rke", "talosctl", "cilium",
                                "karmadactl", "vcluster", "tkn", "skaffold", "tilt")},
}  # fmt: skip
OWN_HELP: Final = frozenset({"kubectl", "oc", "kubecolor", "helm", "helm3"})
