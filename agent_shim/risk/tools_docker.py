"""Containers: docker, podman, nerdctl, docker compose, crictl.

``docker run``/``exec`` run a program the classifier may not see: with a command
on the line, that command is classified (and the container start is a write);
without one, the image's entrypoint runs and nobody can tell what it does, so it
is destructive. Host-level access (``--privileged``, mounting ``/`` or the docker
socket) is destructive whatever runs inside.
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
from agent_shim.risk.opts import getopt, wants_help
from agent_shim.risk.verbs import scales_to_zero

_RUN_LONG: Final = wordset("""env env-file volume publish name workdir user entrypoint network
net memory cpus label mount restart hostname add-host cap-add cap-drop device dns gpus ipc pid
platform pull runtime security-opt shm-size stop-signal ulimit log-driver log-opt tmpfs
volumes-from cidfile attach expose link userns uts cgroupns label-file stop-timeout isolation
cpu-shares cpuset-cpus memory-swap mac-address ip ip6 network-alias oom-score-adj storage-opt
sysctl blkio-weight device-cgroup-rule group-add detach-keys domainname health-cmd
health-interval health-retries health-timeout health-start-period cgroup-parent pod
annotation arch os variant""")
_HOST_MOUNT: Final = re.compile(r"^(/|/etc|/root|/var/run/docker\.sock|/run/docker\.sock|/var/lib"
                                r"|/boot|/dev|/proc|/sys|/home|~)(:|$|/[^:]*:)")
_READ_SUBS: Final = wordset("""ps images inspect logs stats top version info port diff events
search history wait ls df show du events list""")
_DESTROY_SUBS: Final = wordset("rm rmi kill stop prune remove down leave disconnect")
_MGMT: Final = wordset("""container image volume network system builder buildx context plugin
secret config service stack swarm node trust manifest scout""")


def _host_access(o_values: dict[str, list[str]], flags: set[str]) -> list[str]:
    notes: list[str] = []
    if "privileged" in flags:
        notes.append("--privileged gives the container full host access")
    for v in o_values.get("v", []) + o_values.get("volume", []) + o_values.get("mount", []):
        src = v.split("source=", 1)[1].split(",")[0] + ":" if "source=" in v else v
        if _HOST_MOUNT.match(src):
            notes.append(f"mounts host path {src.rstrip(':')} into the container")
    for key in ("pid", "userns", "ipc", "uts", "cgroupns"):
        if "host" in o_values.get(key, []):
            notes.append(f"--{key}=host shares the host namespace")
    caps = {c.upper() for c in o_values.get("cap-add", [])}
    if caps & {"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO", "DAC_READ_SEARCH"}:
        notes.append("--cap-add grants host-level capabilities")
    if o_values.get("device"):
        notes.append("--device exposes a host device")
    return notes


def _run(call: Call, tool: str, sub: str, args: list[str]) -> Assessment:
    o = getopt(args, "eplvwumhacL", _RUN_LONG, stop_at_positional=True)
    notes = _host_access(o.values, o.flags)
    target = o.pos[0] if o.pos else "?"
    cmd = list(o.rest)
    entry = o.value("entrypoint")
    if entry is not None:
        cmd = [entry, *cmd] if entry else cmd
    parts: list[Assessment] = [destructive(f"{tool} {sub}: {n}") for n in notes]
    if sub == "exec" or cmd:
        where = f"in container {target}" if sub == "exec" else f"in a new {target} container"
        stdin = call.stdin if o.has("i", "interactive") else NO_STDIN
        inner = call.argv(cmd, stdin) if cmd else write(f"{tool} exec without a command")
        parts += [write(f"{tool} {sub} runs a command {where}"), inner]
    else:
        parts.append(destructive(f"{tool} {sub} {target} runs the image's default command; "
                                 "what it does is not visible"))
    return combine(parts)


def _compose(call: Call, tool: str, args: list[str]) -> Assessment:
    o = getopt(args, "fp", {"file", "project-name", "profile", "env-file", "project-directory",
                            "ansi", "parallel", "progress"}, stop_at_positional=True)
    sub = o.pos[0] if o.pos else ""
    rest = list(o.rest)
    if sub in ("run", "exec"):
        so = getopt(rest, "euwlp", {"env", "user", "workdir", "label", "publish", "name",
                                    "entrypoint", "volume", "index"}, stop_at_positional=True)
        svc = so.pos[0] if so.pos else "?"
        if not so.rest:
            return destructive(f"{tool} {sub} {svc} runs the service's default command; "
                               "what it does is not visible")
        return at_least(call.argv(list(so.rest)), "write", f"{tool} {sub} runs a command in "
                        f"service {svc}")
    if sub in ("down", "rm", "kill", "stop"):
        vol = " and its volumes" if any(a in ("-v", "--volumes") for a in rest) else ""
        return destructive(f"{tool} {sub} stops or removes the project's containers{vol}")
    if sub in ("ps", "logs", "config", "ls", "images", "top", "version", "port", "events", ""):
        return read(f"{tool} {sub or 'without a subcommand'} only reads")
    zero = scales_to_zero(rest) or (
        "scale … =0 scales to zero" if any(a.endswith("=0") for a in rest) and sub in ("scale", "up")
        else None)
    if zero:
        return destructive(f"{tool} {sub}: {zero}")
    return write(f"{tool} {sub} changes containers")


def docker(call: Call) -> Assessment:
    tool = call.name
    o = getopt(call.args, "Hcl", {"host", "context", "config", "log-level", "tlscacert",
                                  "tlscert", "tlskey", "url", "connection", "identity",
                                  "root", "runroot", "storage-driver"}, stop_at_positional=True)
    if not o.pos:
        return read(f"{tool} without a subcommand only prints usage")
    words = [o.pos[0], *o.rest]
    sub = words[0]
    if sub in _MGMT and len(words) > 1 and not words[1].startswith("-"):
        group, sub, rest = sub, words[1], words[2:]
    else:
        group, rest = "", words[1:]
    label = f"{tool} {group + ' ' if group else ''}{sub}"
    if sub in ("run", "exec", "create") and group in ("", "container"):
        if wants_help(rest):
            return read(f"{label} --help only prints usage")
        return _run(call, tool, sub, rest) if sub != "create" else write(f"{label} creates a "
                                                                           "container")
    if wants_help(rest) or sub == "help":
        return read(f"{label} --help only prints usage")
    if sub == "compose":
        return _compose(call, f"{tool} compose", rest)
    if group == "system" and sub == "prune":
        return destructive(f"{label} deletes stopped containers, unused images and networks")
    if sub in _DESTROY_SUBS:
        what = f"{group}s" if group else "containers or images"
        verb = "stops" if sub in ("stop", "kill") else "deletes"
        return destructive(f"{label} {verb} {what}")
    if group == "service" and sub == "scale" and any(a.endswith("=0") for a in rest):
        return destructive(f"{label} …=0 scales a service to zero")
    if sub in _READ_SUBS or (sub == "image" and not rest):
        return read(f"{label} only reads")
    if sub == "attach":
        return destructive(f"{label} attaches to a running process; what is sent is not visible")
    return write(f"{label} changes containers or images")


def compose_cli(call: Call) -> Assessment:
    return _compose(call, call.name, list(call.args))


def crictl(call: Call) -> Assessment:
    o = getopt(call.args, "rci", {"runtime-endpoint", "image-endpoint", "config", "timeout"},
               stop_at_positional=True)
    sub = o.pos[0] if o.pos else ""
    if sub == "exec":
        so = getopt(list(o.rest), "", set(), stop_at_positional=True)
        return at_least(call.argv(list(so.rest)), "write", "crictl exec runs a command in a "
                        "container")
    if sub in ("rm", "rmi", "rmp", "stop", "stopp"):
        return destructive(f"crictl {sub} removes or stops containers or pods")
    if sub in ("ps", "pods", "images", "img", "inspect", "inspecti", "inspectp", "logs",
               "stats", "statsp", "info", "version", "imagefsinfo", ""):
        return read(f"crictl {sub} only reads")
    return write(f"crictl {sub} changes containers")


HANDLERS: Final[dict[str, Handler]] = {
    "docker": docker, "podman": docker, "nerdctl": docker, "docker-compose": compose_cli,
    "podman-compose": compose_cli, "crictl": crictl,
}  # fmt: skip
OWN_HELP: Final = frozenset(HANDLERS)
