"""Infrastructure as code: terraform/tofu/terragrunt, pulumi, cdk, serverless, config management.

These tools apply a diff the command line does not show. The rule from the design:
applying without a saved plan is destructive (it may replace or delete whatever
the code now says), planning and previewing are reads, applying a saved plan file
is a write (the plan was shown when it was made), and explicit destroy commands,
state surgery that forgets resources, and taints are destructive.
"""

from __future__ import annotations

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

_TF_VALUES: Final = frozenset({"var", "var-file", "target", "replace", "out", "state",
                               "state-out", "backup", "lock-timeout", "parallelism", "chdir",
                               "config", "backend-config", "plugin-dir", "from-module",
                               "provider", "filter", "test-directory"})
_TF_READ: Final = frozenset({"plan", "show", "validate", "output", "graph", "console",
                             "version", "providers", "modules", "metadata", "help",
                             "render-json", "output-module-groups", "graph-dependencies",
                             "hclfmt", "info", "validate-inputs", "find"})
_TF_WRITE: Final = frozenset({"init", "get", "login", "logout", "refresh", "import", "untaint",
                              "force-unlock", "test"})


def terraform(call: Call) -> Assessment:
    tool = call.name
    args = list(call.args)
    o = getopt(args, "", _TF_VALUES, single_dash_long=True)
    pos = list(o.pos)
    if wants_help(args, short_h=True, value_opts=_TF_VALUES) or (o.has("version", "v") and not pos):
        return read(f"{tool} --help/-version only prints")
    if not pos:
        return read(f"{tool} without a subcommand only prints usage")
    scope = ""
    if tool == "terragrunt":
        if pos[0] in ("run-all", "run") or o.has("all"):
            scope = " across all modules" if pos[0] == "run-all" or o.has("all") else ""
            pos = pos[1:] if pos[0] in ("run-all", "run") else pos
        elif pos[0].endswith("-all"):
            pos[0] = pos[0][:-4]
            scope = " across all modules"
    if not pos:
        return write(f"{tool} run without a command")
    verb, sub = pos[0], (pos[1] if len(pos) > 1 else "")
    label = f"{tool} {verb}"
    if verb == "destroy":
        return destructive(f"{label} destroys managed infrastructure{scope}")
    if verb == "apply":
        if o.has("destroy"):
            return destructive(f"{label} -destroy destroys managed infrastructure{scope}")
        if o.has("replace"):
            return destructive(f"{label} -replace forces resources to be recreated{scope}")
        if len(pos) > 1:
            return write(f"{label} applies saved plan {pos[1]}{scope}")
        notes = [f"{label} without a saved plan applies changes that are not visible{scope}"]
        if o.has("auto-approve"):
            notes.append("-auto-approve skips the confirmation prompt")
        return Assessment("destructive", tuple(notes))
    if verb == "state":
        if sub in ("rm", "push"):
            return destructive(f"{label} {sub} makes terraform forget or overwrite state")
        if sub in ("list", "show", "pull"):
            return read(f"{label} {sub} only reads")
        return write(f"{label} {sub} changes state")
    if verb == "taint":
        return destructive(f"{label} forces the resource to be destroyed and recreated")
    if verb == "workspace":
        if sub == "delete":
            return destructive(f"{label} delete deletes a workspace and its state")
        if sub in ("list", "show", ""):
            return read(f"{label} {sub} only reads")
        return write(f"{label} {sub} switches or creates a workspace")
    if verb == "fmt":
        if o.has("check") or (o.values.get("write") or [""])[-1] == "false":
            return read(f"{label} -check only reports")
        return write(f"{label} rewrites .tf files")
    if verb == "providers" and sub in ("lock", "mirror"):
        return write(f"{label} {sub} writes provider files")
    if verb in _TF_READ:
        return read(f"{label} only reads{' (plan previews, it changes nothing)' * (verb == 'plan')}")
    if verb in _TF_WRITE:
        return write(f"{label} changes local or remote state")
    return write(f"{label}: unknown subcommand; assumed write")


def pulumi(call: Call) -> Assessment:
    o = getopt(call.args, "sCy", {"stack", "cwd", "target", "plan", "message", "config",
                                  "config-file", "parallel", "refresh", "replace", "exclude"})
    pos = o.pos
    if wants_help(call.args, short_h=True) or not pos:
        return read("pulumi --help only prints usage")
    verb, sub = pos[0], (pos[1] if len(pos) > 1 else "")
    if verb in ("up", "update", "watch"):
        if o.value("plan"):
            return write(f"pulumi {verb} --plan applies a saved plan")
        notes = [f"pulumi {verb} applies changes that are not visible (no saved plan)"]
        if o.has("y", "yes", "skip-preview"):
            notes.append("--yes skips the confirmation prompt")
        return Assessment("destructive", tuple(notes))
    if verb == "destroy":
        return destructive("pulumi destroy destroys the stack's resources")
    if verb == "preview":
        return read("pulumi preview only previews")
    if verb == "stack":
        if sub in ("rm", "remove"):
            return destructive("pulumi stack rm deletes a stack and its state")
        if sub in ("ls", "output", "export", "history", "graph", ""):
            return read(f"pulumi stack {sub} only reads")
        return write(f"pulumi stack {sub} changes stacks")
    if verb == "state":
        if sub in ("delete", "rm"):
            return destructive("pulumi state delete makes pulumi forget resources")
        return write(f"pulumi state {sub} edits state")
    if verb == "config":
        if sub in ("get", "ls", ""):
            return read("pulumi config only reads")
        return write(f"pulumi config {sub} changes configuration")
    if verb in ("whoami", "version", "about", "logs", "schema", "help", "console"):
        return read(f"pulumi {verb} only reads")
    if verb == "plugin" and sub in ("ls", "list"):
        return read("pulumi plugin ls only lists")
    return write(f"pulumi {verb} changes stacks or local state")


def cdk(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    if verb in ("diff", "synth", "synthesize", "ls", "list", "doctor", "docs", "metadata",
                "context", "notices", "acknowledge", ""):
        return read(f"cdk {verb} only reads")
    if verb in ("deploy", "watch"):
        if any(a.startswith("--method=prepare") for a in call.args):
            return write("cdk deploy --method=prepare-change-set only prepares a change set")
        return destructive(f"cdk {verb} applies a CloudFormation change set that is not visible")
    if verb in ("destroy", "gc"):
        return destructive(f"cdk {verb} deletes stacks or assets")
    return write(f"cdk {verb} changes local or cloud state")


def serverless(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    if verb == "remove":
        return destructive(f"{call.name} remove deletes the deployed service")
    if verb == "deploy":
        if pos[1:2] == ["list"]:
            return read(f"{call.name} deploy list only lists deployments")
        if pos[1:2] == ["function"]:
            return write(f"{call.name} deploy function updates one function's code")
        return destructive(f"{call.name} deploy applies a CloudFormation stack that is not "
                           "visible")
    if verb in ("info", "print", "logs", "metrics", "help", ""):
        return read(f"{call.name} {verb} only reads")
    return write(f"{call.name} {verb} changes the service")


_ANSIBLE_READ_MODULES: Final = frozenset({"ping", "setup", "gather_facts", "debug", "stat",
                                          "command_info", "service_facts", "package_facts",
                                          "find", "slurp", "uri", "wait_for"})


def ansible(call: Call) -> Assessment:
    o = getopt(call.args, "maiuMkKbeftlB", {"module-name", "args", "inventory", "user",
                                            "extra-vars", "forks", "limit", "become-user",
                                            "private-key", "tags", "skip-tags", "vault-id"})
    if o.has("C", "check", "syntax-check", "list-tasks", "list-hosts", "list-tags"):
        return read(f"{call.name} --check / --list-* changes nothing")
    if call.name == "ansible-playbook":
        return destructive("ansible-playbook runs tasks across hosts; what they do is not "
                           "visible here")
    module = (o.value("m", "module-name") or "command").removeprefix("ansible.builtin.")
    margs = o.value("a", "args") or ""
    hosts = o.pos[0] if o.pos else "hosts"
    if module in ("shell", "command", "raw", "script"):
        inner = call.shell(margs) if module != "script" else write("ansible script runs a file")
        return at_least(inner, "write", f"ansible {module} runs commands on {hosts}")
    if module in _ANSIBLE_READ_MODULES:
        return read(f"ansible -m {module} only gathers information")
    if any(s in margs for s in ("state=absent", "state=stopped", "state=removed")):
        return destructive(f"ansible -m {module} {margs}: removes or stops things on {hosts}")
    return write(f"ansible -m {module} changes {hosts}")


def config_mgmt(call: Call) -> Assessment:
    if any(a in ("--noop", "--why-run", "-W", "test=True", "--test") for a in call.args):
        return read(f"{call.name} --noop only reports what would change")
    if call.name == "salt":
        pos = [a for a in call.args if not a.startswith("-")]
        fn = pos[1] if len(pos) > 1 else ""
        if fn == "cmd.run" and len(pos) > 2:
            return at_least(call.shell(pos[2]), "write", "salt cmd.run runs a command on minions")
        if fn.startswith("test.") or fn.endswith((".items", ".get", ".list", ".ls")):
            return read(f"salt {fn} only reads")
    return combine([destructive(f"{call.name} applies configuration that is not visible here")])


HANDLERS: Final[dict[str, Handler]] = {
    "terraform": terraform, "tofu": terraform, "opentofu": terraform, "terragrunt": terraform,
    "pulumi": pulumi, "cdk": cdk, "cdktf": cdk, "serverless": serverless, "sls": serverless,
    "ansible": ansible, "ansible-playbook": ansible, "puppet": config_mgmt,
    "chef-client": config_mgmt, "salt": config_mgmt, "salt-call": config_mgmt,
}  # fmt: skip
OWN_HELP: Final = frozenset({"terraform", "tofu", "opentofu", "terragrunt", "pulumi"})
