"""Cloud CLIs: aws, gcloud/gsutil, az, and the many ``tool noun verb`` platform CLIs.

AWS names every API operation ``verb-noun`` (``describe-instances``,
``terminate-instances``), so the operation prefix decides; the high-level ``aws s3``
commands are handled one by one. gcloud, az and the rest are read by their verb
(see :mod:`agent_shim.risk.verbs`), with the few exceptions that matter: commands
that run code on machines (``ssm send-command``, ``compute ssh``, ``vm run-command``),
template deployments whose effect is not visible, and scaling to zero.
"""

from __future__ import annotations

import re
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    at_least,
    combine,
    destructive,
    read,
    write,
)
from agent_shim.risk.opts import getopt, wants_help
from agent_shim.risk.sql import classify_sql
from agent_shim.risk.tools_net import http_verdict
from agent_shim.risk.verbs import parts_of, scales_to_zero, scan

_AWS_GLOBAL: Final = frozenset({"region", "profile", "output", "endpoint-url", "query",
                                "cli-read-timeout", "cli-connect-timeout", "ca-bundle", "color",
                                "cli-binary-format", "cli-input-json", "cli-input-yaml"})
_AWS_READ_PREFIX: Final = ("describe", "list", "get", "head", "lookup", "search", "batch-get",
                           "filter", "validate", "estimate", "preview", "simulate", "test",
                           "scan", "query", "select", "view", "download", "detect", "check",
                           "generate-presigned", "tail", "wait", "help", "verify", "poll")
_AWS_DESTROY_WORDS: Final = frozenset({"delete", "terminate", "purge", "deregister", "remove",
                                       "stop", "reboot", "destroy", "disable", "revoke", "reset",
                                       "deletion", "cancel", "abort", "detach", "disassociate"})
_AWS_SOFT: Final = frozenset({"revoke", "cancel", "abort", "detach", "disassociate", "disable"})
_AWS_RUNS_CODE: Final = {
    ("ssm", "send-command"): "ssm send-command runs commands on instances",
    ("ssm", "start-session"): "ssm start-session opens an interactive shell",
    ("ecs", "execute-command"): "ecs execute-command runs a command in a container",
    ("ec2-instance-connect", "ssh"): "ec2-instance-connect ssh opens a shell",
    ("cloudformation", "deploy"): "cloudformation deploy applies a template; the change set "
                                  "is not visible",
    ("cloudformation", "update-stack"): "cloudformation update-stack applies a template; "
                                        "resources may be replaced or deleted",
    ("cloudformation", "execute-change-set"): "cloudformation execute-change-set applies "
                                              "changes that are not visible",
}
_DELETE_ACTION: Final = re.compile(r'"?Action"?\s*[:=]\s*"?DELETE', re.I)


def _aws_s3(op: str, o_flags: set[str], args: list[str]) -> Assessment:
    if op in ("ls", "presign"):
        return read(f"aws s3 {op} only reads")
    if "dryrun" in o_flags or "dry-run" in o_flags:
        return read(f"aws s3 {op} --dryrun changes nothing")
    if op == "rm":
        rec = " recursively" if "recursive" in o_flags else ""
        return destructive(f"aws s3 rm deletes objects{rec}")
    if op == "rb":
        return destructive("aws s3 rb deletes a bucket" + (" and its contents" if "force" in
                                                           o_flags else ""))
    if op == "sync" and "delete" in o_flags:
        return destructive("aws s3 sync --delete deletes files missing from the source")
    if op == "mv":
        return write("aws s3 mv moves objects (deletes the source copy)")
    return write(f"aws s3 {op} writes objects")


def aws(call: Call) -> Assessment:
    o = getopt(call.args, "", _AWS_GLOBAL | {"instance-ids", "bucket", "key", "function-name"})
    pos = o.pos
    if (wants_help(call.args) or "help" in pos or o.has("version")
            or "generate-cli-skeleton" in o.flags):
        return read("aws help only prints usage")
    if not pos:
        return read("aws without a command only prints usage")
    svc, op = pos[0], (pos[1] if len(pos) > 1 else "")
    if svc == "configure":
        return read("aws configure list/get only reads") if op in ("list", "get",
                                                                   "list-profiles") else write(
            "aws configure changes local credentials")
    if svc in ("s3",):
        return _aws_s3(op, o.flags, pos)
    if "dry-run" in o.flags:
        return read(f"aws {svc} {op} --dry-run changes nothing")
    if (svc, op) in _AWS_RUNS_CODE:
        return destructive("aws " + _AWS_RUNS_CODE[(svc, op)])
    zero = scales_to_zero(call.args)
    if zero:
        return destructive(f"aws {svc} {op}: {zero}")
    if any(_DELETE_ACTION.search(a) for a in call.args):
        return destructive(f"aws {svc} {op}: the change batch contains a DELETE action")
    words = parts_of(op)
    hit = next((w for w in words if w in _AWS_DESTROY_WORDS), None)
    if hit and not op.startswith(_AWS_READ_PREFIX):
        if hit in _AWS_SOFT:
            return write(f"aws {svc} {op} {hit}s access or a pending operation")
        return destructive(f"aws {svc} {op} deletes, terminates or stops resources")
    if op.startswith(_AWS_READ_PREFIX) or op in ("ls", "whoami"):
        return read(f"aws {svc} {op} only reads")
    if svc in ("sts", "sso") and op.startswith(("get", "login", "logout", "decode")):
        return read(f"aws {svc} {op} only reads")
    if svc == "lambda" and op == "invoke":
        return write("aws lambda invoke runs a function (effects not visible)")
    return write(f"aws {svc} {op} changes cloud resources")


_GCLOUD_CODE: Final = re.compile(r"^(ssh|scp|connect-to-serial-port|run-command|execute)$")


def gcloud(call: Call) -> Assessment:
    o = getopt(call.args, "", {"project", "account", "configuration", "format", "filter",
                               "zone", "region", "command", "flags-file", "impersonate-service-"
                               "account", "verbosity", "billing-project"})
    pos = [p for p in o.pos if p not in ("alpha", "beta", "preview")]
    if wants_help(call.args, short_h=True) or (pos and pos[0] == "help"):
        return read("gcloud help only prints usage")
    if "ssh" in pos[:4] or "scp" in pos[:4]:
        cmd = o.value("command")
        if cmd is not None:
            return at_least(call.shell(cmd), "write", "gcloud compute ssh runs a command on a VM")
        if o.rest:
            return at_least(call.argv(list(o.rest)), "write", "gcloud ssh runs a command")
        if "scp" in pos[:4]:
            return write("gcloud compute scp copies files")
        return destructive("gcloud compute ssh opens an interactive shell; not visible")
    if "get-credentials" in pos:
        return write("gcloud get-credentials writes kubeconfig")
    if "connect" in pos or "connect-to-serial-port" in pos:
        return destructive("gcloud … connect opens an interactive session; not visible")
    if pos[:3] == ["container", "clusters", "resize"] or "resize" in pos:
        zero = scales_to_zero(call.args) or scales_to_zero(
            [a.replace("--num-nodes", "--size") for a in call.args])
        if zero:
            return destructive(f"gcloud resize: {zero}")
    zero = scales_to_zero(call.args)
    if zero:
        return destructive(f"gcloud: {zero}")
    if pos[:1] == ["storage"] and len(pos) > 1 and pos[1] == "rsync" and (
            o.has("delete-unmatched-destination-objects")):
        return destructive("gcloud storage rsync --delete-unmatched-destination-objects deletes")
    if "reset" in pos and "compute" in pos:
        return destructive("gcloud compute instances reset hard-resets VMs")
    return scan("gcloud", pos, "cloud resources")


def gsutil(call: Call) -> Assessment:
    o = getopt(call.args, "hopuiD", {})
    pos = o.pos
    verb = pos[0] if pos else ""
    if verb in ("rm", "rb"):
        return destructive(f"gsutil {verb} deletes objects or buckets")
    if verb == "rsync" and any(a in ("-d", "-rd", "-dr", "-Rd", "-dR") for a in pos):
        return destructive("gsutil rsync -d deletes files missing from the source")
    if verb in ("ls", "cat", "du", "stat", "hash", "version", "help", "ver", "lifecycle-get",
                "") or (len(pos) > 1 and pos[1] == "get"):
        return read(f"gsutil {verb} only reads")
    return write(f"gsutil {verb} writes cloud storage")


def az(call: Call) -> Assessment:
    o = getopt(call.args, "gnos", {"resource-group", "name", "output", "query", "subscription",
                                   "mode", "scripts", "command-id", "method", "url", "uri",
                                   "location", "body"})
    pos = o.pos
    if wants_help(call.args, short_h=True) or not pos:
        return read("az help only prints usage")
    if "run-command" in pos and "invoke" in pos:
        return destructive("az vm run-command invoke runs a script on the VM")
    if pos[0] == "rest":
        return http_verdict(o.value("method") or "GET", o.value("url", "uri") or "", "az rest")
    if "deployment" in pos and (o.value("mode") or "").lower() == "complete":
        return destructive("az deployment --mode Complete deletes resources not in the template")
    if "what-if" in pos or pos[-1:] == ["validate"]:
        return read("az deployment what-if only previews")
    if "get-credentials" in pos:
        return write("az aks get-credentials writes kubeconfig")
    zero = scales_to_zero(call.args)
    if zero:
        return destructive(f"az: {zero}")
    if pos[0] in ("login", "logout"):
        return write(f"az {pos[0]} changes local credentials")
    return scan("az", pos, "Azure resources")


def gh(call: Call) -> Assessment:
    o = getopt(call.args, "XfFHRpqtbBlaArmTS", {"method", "field", "raw-field", "header", "repo",
                                      "jq", "template", "input", "hostname", "cache"})
    pos = o.pos
    if pos[:1] == ["api"]:
        fields = o.has("f", "F", "field", "raw-field", "input")
        method = o.value("X", "method") or ("POST" if fields else "GET")
        return http_verdict(method, pos[1] if len(pos) > 1 else "", "gh api")
    if pos[:2] in (["pr", "checkout"], ["repo", "clone"]):
        return write(f"gh {' '.join(pos[:2])} changes the local repository")
    if pos[:1] in (["run"],) and len(pos) > 1 and pos[1] in ("watch", "view", "list", "ls"):
        return read(f"gh run {pos[1]} only reads")
    if pos[:2] == ["workflow", "run"] or pos[:2] == ["run", "rerun"]:
        return write("gh workflow run starts a CI workflow")
    if pos[:1] == ["secret"] and len(pos) > 1 and pos[1] in ("set",):
        return write("gh secret set changes repository secrets")
    return scan(call.name, pos, "repository resources")


def platform_cli(call: Call) -> Assessment:
    """doctl, flyctl, heroku, vercel, vault… all say what they do with a verb."""
    zero = scales_to_zero(call.args)
    if zero:
        return destructive(f"{call.name}: {zero}")
    pos = [a for a in call.args if not a.startswith("-")]
    if wants_help(call.args, short_h=False) or pos[:1] == ["help"]:
        return read(f"{call.name} help only prints usage")
    if call.name in ("heroku", "fly", "flyctl", "railway", "render") and pos[:1] in (
            ["run"], ["ssh"], ["console"]):
        rest = pos[1:]
        if call.name in ("fly", "flyctl") and pos[:1] == ["ssh"]:
            rest = []
            for i, a in enumerate(call.args):
                if a in ("-C", "--command") and i + 1 < len(call.args):
                    rest = [call.args[i + 1]]
        if rest:
            return at_least(call.shell(" ".join(rest)), "write",
                            f"{call.name} {pos[0]} runs a command on the platform")
        return destructive(f"{call.name} {pos[0]} opens an interactive shell; not visible")
    if any("scale" in parts_of(p) for p in pos[:3]) and any(
            p == "0" or re.fullmatch(r"[\w.-]+=0", p) for p in pos):
        return destructive(f"{call.name} {' '.join(pos[:3])}: scales to zero")
    if call.name == "wrangler" and "execute" in pos:
        sql = next((call.args[i + 1] for i, a in enumerate(call.args[:-1])
                    if a == "--command"), None)
        if sql is not None:
            return classify_sql(sql, origin="wrangler d1 execute --command")
        return destructive("wrangler d1 execute --file runs SQL that is not visible")
    if call.name == "vault" and pos[:1] in (["write"], ["kv"]) and "destroy" in pos:
        return destructive("vault kv destroy permanently deletes secret versions")
    return combine([scan(call.name, pos, "platform resources")])


_PLATFORMS: Final = ("doctl", "flyctl", "fly", "heroku", "vercel", "netlify", "firebase",
                     "supabase", "wrangler", "vault", "consul", "nomad", "glab", "openstack",
                     "oci", "linode-cli", "hcloud", "scw", "ibmcloud", "aliyun", "railway",
                     "render", "pscale", "neonctl", "stripe", "gcloud-storage", "exo", "upctl",
                     "civo", "vultr-cli", "tccli", "ovhcloud", "atlas", "mongocli", "snowsql-cli",
                     "databricks", "sam", "copilot", "amplify", "eb", "cdk8s",
                     "nx", "turso", "planetscale", "convox", "cf", "juju", "ansible-galaxy")

HANDLERS: Final[dict[str, Handler]] = {
    "aws": aws, "awslocal": aws, "gcloud": gcloud, "gsutil": gsutil, "az": az, "gh": gh,
    **{n: platform_cli for n in _PLATFORMS},
}  # fmt: skip
OWN_HELP: Final = frozenset({"aws", "gcloud", "az", "gh", *_PLATFORMS})
