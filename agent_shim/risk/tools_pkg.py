"""Package managers, language and system.

Installing runs the package's install scripts, so it is a write at least; listing
and showing are reads; ``--dry-run``/``--simulate`` are reads. Removing a system
package (``apt purge``, ``yum remove``, ``rpm -e``) is destructive because it can take
a service with it; removing a dependency from a project manifest is a write.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    at_least,
    destructive,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.verbs import DESTRUCTIVE_VERBS, parts_of


def verbs(
    tool: str,
    reads: Collection[str],
    destroys: Collection[str] = (),
    *,
    dry_run: Collection[str] = ("dry-run",),
    default_empty: str = "read",
    what: str = "packages",
    short_values: str = "",
) -> Handler:
    """A handler for ``tool SUBCOMMAND …`` package managers."""

    def handler(call: Call) -> Assessment:
        o = getopt(call.args, short_values)
        verb = o.pos[0] if o.pos else ""
        if o.has(*dry_run):
            return read(f"{tool} {verb} --dry-run changes nothing")
        if not verb:
            if default_empty == "read":
                return read(f"{tool} without a subcommand only prints usage")
            return write(f"{tool} installs {what}")
        if verb in destroys:
            return destructive(f"{tool} {verb} removes {what}")
        if verb in reads:
            return read(f"{tool} {verb} only reads")
        return write(f"{tool} {verb} changes {what}")

    return handler


def script_name_risk(tool: str, name: str) -> Assessment:
    """``npm run db:drop`` / ``make destroy``: the script's name is all we can see of it."""
    if any(p in DESTRUCTIVE_VERBS for p in parts_of(name)):
        return destructive(f"{tool} {name}: a script named like it deletes or stops things; "
                           "its content is not visible")
    return write(f"{tool} {name} runs a project script; its content is not visible")


_NPM_READ: Final = wordset("""ls list la ll view info show v outdated why explain audit
search help root prefix bin whoami ping doctor fund query config get docs repo bugs
diff pack-dry-run licenses dedupe-dry-run""")
_NPM_WRITE: Final = wordset("""install i ci add update up upgrade remove rm uninstall un r
unlink link prune dedupe rebuild init create pack version set publish login logout adduser
cache shrinkwrap import patch audit-fix""")
_NPM_RUNNERS: Final = frozenset({"exec", "x", "dlx", "npx"})


def npm(call: Call) -> Assessment:
    tool = call.name
    o = getopt(call.args, "wC", {"workspace", "prefix", "filter", "dir", "cwd"},
               stop_at_positional=True)
    if o.has("v", "version") and not o.pos:
        return read(f"{tool} --version only prints")
    verb = o.pos[0] if o.pos else ("install" if tool in ("yarn", "pnpm", "bun") else "")
    rest = list(o.rest)
    if not verb:
        return read(f"{tool} without a command only prints usage")
    if any(a in ("--dry-run", "--dryrun") for a in rest):
        return read(f"{tool} {verb} --dry-run changes nothing")
    if verb in ("run", "run-script", "rum", "urn"):
        sub = next((a for a in rest if not a.startswith("-")), "")
        return script_name_risk(f"{tool} run", sub) if sub else read(f"{tool} run lists scripts")
    if verb in ("test", "t", "tst", "start", "stop", "restart"):
        return write(f"{tool} {verb} runs the project's {verb} script")
    if verb in _NPM_RUNNERS:
        inner = [a for a in rest if a != "--"]
        while inner and inner[0].startswith("-"):
            inner.pop(0)
        floor = f"{tool} {verb} may download and run a package"
        return at_least(call.argv(inner), "write", floor) if inner else write(floor)
    if verb == "unpublish":
        return destructive(f"{tool} unpublish removes a published package")
    if verb in ("config", "cache", "audit", "pkg"):
        sub = rest[0] if rest else ""
        if sub in ("get", "list", "ls", "verify", "") and "fix" not in rest:
            return read(f"{tool} {verb} {sub} only reads")
        return write(f"{tool} {verb} {sub} changes configuration or the cache")
    if verb in _NPM_READ:
        return read(f"{tool} {verb} only reads")
    if verb in _NPM_WRITE:
        return write(f"{tool} {verb} changes dependencies (install scripts may run)")
    if tool in ("yarn", "pnpm", "bun"):
        return script_name_risk(tool, verb)
    return write(f"{tool} {verb}: unknown command; assumed write")


def runner(call: Call) -> Assessment:
    """npx / bunx / uvx / pipx run: run a package's binary, maybe downloading it first."""
    o = getopt(call.args, "p", {"package", "from", "with", "python", "spec"},
               stop_at_positional=True)
    inner = list(o.pos[:1]) + list(o.rest)
    if call.name == "pipx" and inner[:1] == ["run"]:
        inner = inner[1:]
    floor = f"{call.name} may download and run a package"
    return at_least(call.argv(inner), "write", floor) if inner else write(floor)


def pip(call: Call) -> Assessment:
    o = getopt(call.args, "rcei", {"requirement", "constraint", "index-url", "extra-index-url",
                                   "target", "prefix", "python", "editable", "find-links"})
    verb = o.pos[0] if o.pos else ""
    if o.has("dry-run") or (o.has("V", "version") and not verb):
        return read(f"{call.name} --dry-run/--version changes nothing")
    if verb in ("list", "show", "freeze", "check", "search", "index", "inspect", "debug",
                "help", "hash", "") or (verb in ("config", "cache") and o.pos[1:2] in (
                    ["list"], ["get"], ["dir"], ["info"])):
        return read(f"{call.name} {verb} only reads")
    if verb in ("install", "download", "wheel"):
        return write(f"{call.name} {verb} installs packages (their build scripts run)")
    return write(f"{call.name} {verb} changes installed packages")


def uv(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    if verb == "pip":
        return call.argv(["pip", *call.args[call.args.index("pip") + 1 :]])
    if verb in ("run", "tool") and (verb == "run" or pos[1:2] == ["run"]):
        idx = call.args.index(verb) + (2 if verb == "tool" else 1)
        return runner(call.with_args("uv run", call.args[idx:]))
    if verb in ("tree", "version", "help", "") or (verb == "python" and pos[1:2] in (["list"],
                                                                                 ["find"])):
        return read(f"uv {verb} only reads")
    return write(f"uv {verb} changes the environment or project")


def cargo(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    if verb in ("tree", "metadata", "search", "version", "locate-project", "pkgid", "help",
                "verify-project", "read-manifest", "") or "--list" in call.args:
        return read(f"cargo {verb} only reads")
    if verb == "fmt" and "--check" in call.args:
        return read("cargo fmt --check only reports")
    if verb in ("test", "bench", "run", "nextest"):
        return write(f"cargo {verb} builds and runs the project's code")
    return write(f"cargo {verb} builds or changes the project (build scripts run)")


def go(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else ""
    sub = pos[1] if len(pos) > 1 else ""
    if verb in ("version", "doc", "help", "list", "vet", "") or (verb == "env" and "-w" not in
                                                                   call.args):
        return read(f"go {verb} only reads")
    if verb == "mod" and sub in ("graph", "why", "verify"):
        return read(f"go mod {sub} only reads")
    if verb in ("test", "run", "generate"):
        return write(f"go {verb} runs the project's code")
    return write(f"go {verb} builds or changes the module")


def _letters(call: Call, *modes: str) -> str:
    for a in call.args:
        if a.startswith("-") and not a.startswith("--"):
            for m in modes:
                if m in a[1:2]:
                    return m
        elif a.startswith("--"):
            return a[2:]
    return ""


def pacman(call: Call) -> Assessment:
    mode = _letters(call, "S", "R", "Q", "U", "F", "D", "T", "V")
    flags = "".join(a[1:] for a in call.args if a.startswith("-") and not a.startswith("--"))
    if mode in ("R", "remove"):
        return destructive("pacman -R removes system packages")
    if mode in ("Q", "F", "T", "V", "query", "files") or (mode == "S" and set(flags) & set("sig")
                                                          and "u" not in flags):
        return read("pacman -Q/-Ss/-Si only reads")
    return write("pacman installs or upgrades system packages")


def dpkg_rpm(call: Call) -> Assessment:
    o = getopt(call.args)
    if o.has("r", "remove", "P", "purge", "e", "erase"):
        return destructive(f"{call.name} -r/-e removes system packages")
    if o.has("i", "install", "U", "upgrade", "F", "freshen", "unpack", "configure",
             "import") and not o.has("q", "query"):
        return write(f"{call.name} -i installs system packages")
    return read(f"{call.name} only queries packages")


_SYS_READ: Final = wordset("""list show search policy depends rdepends changelog madison
showpkg info provides repolist check-update history deplist repoquery whatprovides
find services changes logs connections interfaces version remotes outdated deps uses doctor
config leaves desc home cat stats audit help""")
_SYS_DESTROY: Final = frozenset({"remove", "purge", "autoremove", "autopurge", "erase",
                                 "groupremove", "del", "uninstall", "disable"})
_SIMULATE: Final = ("dry-run", "s", "simulate", "just-print", "no-act", "recon", "assumeno")


def _system(tool: str) -> Handler:
    return verbs(tool, _SYS_READ, _SYS_DESTROY, dry_run=_SIMULATE, what="system packages",
                 short_values="otc")


HANDLERS: Final[dict[str, Handler]] = {
    "npm": npm, "yarn": npm, "pnpm": npm, "bun-pm": npm,
    "npx": runner, "pnpx": runner, "bunx": runner, "uvx": runner, "pipx": runner,
    "pip": pip, "pip3": pip, "uv": uv, "cargo": cargo, "go": go,
    **{n: _system(n) for n in ("apt", "apt-get", "aptitude", "yum", "dnf", "microdnf", "zypper",
                               "tdnf", "apk", "snap", "flatpak", "port", "pkg", "choco", "winget",
                               "brew")},
    "apt-cache": lambda c: read("apt-cache only reads"),
    "apt-file": lambda c: read("apt-file only searches"),
    "apt-mark": lambda c: read("apt-mark only lists") if any(
        a.startswith("show") for a in c.args) else write("apt-mark changes package marks"),
    "add-apt-repository": lambda c: write("add-apt-repository adds a package source"),
    "pacman": pacman, "yay": pacman, "paru": pacman, "dpkg": dpkg_rpm, "rpm": dpkg_rpm,
    "poetry": verbs("poetry", {"show", "check", "search", "about", "list", "env", "config"},
                    what="the project"),
    "pdm": verbs("pdm", {"list", "show", "info", "search", "config"}, what="the project"),
    "conda": verbs("conda", {"list", "info", "search", "config", "env"}, what="environments"),
    "mamba": verbs("mamba", {"list", "info", "search", "repoquery"}, what="environments"),
    "micromamba": verbs("micromamba", {"list", "info", "search"}, what="environments"),
    "gem": verbs("gem", {"list", "search", "info", "query", "env", "contents", "which",
                         "specification", "help", "outdated"}, what="gems"),
    "composer": verbs("composer", {"show", "info", "outdated", "validate", "diagnose",
                                   "licenses", "search", "depends", "why", "why-not", "audit"},
                      what="PHP dependencies"),
    "rustup": verbs("rustup", {"show", "which", "help", "check"}, what="toolchains"),
    "nix-collect-garbage": lambda c: destructive("nix-collect-garbage -d deletes old "
                                                 "generations") if "-d" in c.args
    else write("nix-collect-garbage deletes unreachable store paths"),
    "nix-env": lambda c: read("nix-env -q only lists") if any(
        a.startswith(("-q", "--query")) for a in c.args) else write("nix-env changes profiles"),
}  # fmt: skip
OWN_HELP: Final = frozenset({"npm", "yarn", "pnpm", "npx", "pnpx", "bunx", "uvx", "pipx", "uv",
                             "cargo", "go", "poetry", "pdm", "conda"})
