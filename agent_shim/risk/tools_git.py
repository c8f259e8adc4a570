"""git: history rewrites, force pushes, discarded work, and config that runs programs.

Local commits are cheap to undo, so most of git is a write. Destructive is kept
for what loses work or someone else's history: force and delete pushes, hard
resets, ``clean -f``, forced branch deletion, checkouts/restores that overwrite
uncommitted changes, history rewriting and object pruning. ``git -c`` with a key
that names a program (``core.pager``, ``core.sshCommand``, ``alias.x=!…``) runs
that program, so it is destructive unless the value is a known-harmless one.
"""

from __future__ import annotations

import re
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    clip,
    combine,
    destructive,
    is_dynamic,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import Opts, getopt, wants_help
from agent_shim.risk.paths import write_to
from agent_shim.risk.tools_net import safe_ssh_command

_PROGRAM_KEYS: Final = re.compile(
    r"^(core\.(pager|editor|sshcommand|fsmonitor|hookspath|askpass|gitproxy|worktree"
    r"|alternaterefscommand)|diff\.external|diff\..+\.(textconv|command)|merge\..+\.driver"
    r"|filter\..+|credential\..*|sequence\.editor|pager\..+|gpg\.(.+\.)?program|alias\..+"
    r"|uploadpack\..+|receive\..+|protocol\..+|remote\..+\.(receivepack|uploadpack|vcs)"
    r"|include\..+|includeif\..+|init\.templatedir|(diff|merge)tool\..+|web\.browser"
    r"|browser\..+|man\..+|sendemail\..+|instaweb\..+|ssh\.variant|core\.sshcommand)$",
    re.I,
)
_HARMLESS_PROGRAMS: Final = frozenset(
    {"", "cat", "less", "more", "less -r", "less -fr", "less -frx", "less -frsx", "head", "tail",
     "true", "false", "vi", "vim", "nano", "emacs", "code --wait", "delta", "diff-so-fancy"}
)  # fmt: skip


def config_risk(key: str, value: str, how: str) -> Assessment | None:
    """A config entry that makes git run a program; None when it cannot."""
    k = key.lower()
    if not _PROGRAM_KEYS.match(k):
        return None
    v = value.strip()
    if not is_dynamic(value):
        if v.lower() in _HARMLESS_PROGRAMS and not k.startswith(("alias.", "include")):
            return None
        if k.startswith("alias.") and not v.startswith("!"):
            return None
        if k.endswith("sshcommand") and safe_ssh_command(v):
            return None
    return destructive(f"{how} {key}={clip(value, 40)} makes git run another program")


_GLOBAL_VALUES: Final = frozenset({"C", "c", "git-dir", "work-tree", "namespace", "config-env",
                                   "super-prefix", "list-cmds", "attr-source"})


def _globals(args: list[str]) -> tuple[list[Assessment], list[str]]:
    parts: list[Assessment] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        a = args[i]
        name, eq, val = a.lstrip("-").partition("=")
        if (a.startswith("--") and name in _GLOBAL_VALUES and not eq and i + 1 < len(args)) or (
            a in ("-c", "-C") and i + 1 < len(args)
        ):
            val = args[i + 1]
            i += 1
        if name in ("c", "config-env"):
            key, _, v = val.partition("=")
            hit = config_risk(key, v if name == "c" else "$" + v, "git -c")
            if hit:
                parts.append(hit)
        if name == "exec-path" and eq:
            parts.append(destructive("git --exec-path=DIR runs git commands from DIR"))
        i += 1
    return parts, args[i:]


def _push(o: Opts) -> Assessment:
    if o.has("n", "dry-run"):
        return read("git push --dry-run only reports")
    notes: list[str] = []
    if o.has("f", "force") or o.prefix("force"):
        notes.append("git push --force overwrites remote history")
    if any(f.startswith("force-with") or f == "force-if-includes" for f in o.flags):
        notes.append("git push --force-with-lease can still overwrite remote history")
    if o.has("d", "delete") or o.prefix("delete"):
        notes.append("git push --delete deletes remote branches or tags")
    if o.has("mirror") or o.prefix("mirror"):
        notes.append("git push --mirror overwrites and deletes remote refs")
    if o.has("prune") or o.prefix("prune"):
        notes.append("git push --prune deletes remote branches")
    for spec in o.args[1:]:
        if spec.startswith("+"):
            notes.append(f"git push {spec}: a + refspec force-updates the remote")
        elif spec.startswith(":") and len(spec) > 1:
            notes.append(f"git push {spec}: an empty source deletes the remote ref")
    if notes:
        return Assessment("destructive", tuple(dict.fromkeys(notes)))
    return write("git push publishes commits to a remote")


def _branch(o: Opts) -> Assessment:
    force = o.has("f", "force")
    if o.has("D") or (o.has("d", "delete") and force):
        return destructive("git branch -D deletes a branch even if unmerged")
    if o.has("M", "C") or (force and o.args):
        return destructive("git branch -M/-C/-f overwrites an existing branch")
    if o.has("d", "delete"):
        return write("git branch -d deletes a merged branch")
    if o.has("m", "move", "c", "copy", "u", "set-upstream-to", "unset-upstream",
             "edit-description", "t", "track"):
        return write("git branch changes branches")
    listing = o.has("l", "list", "a", "all", "r", "remotes", "contains", "merged", "no-merged",
                    "show-current", "points-at")
    if o.args and not listing:
        return write("git branch creates a branch")
    return read("git branch only lists branches")


_READ: Final = wordset("""status log diff show blame annotate shortlog describe rev-parse rev-list
ls-files ls-tree ls-remote cat-file grep name-rev merge-base count-objects fsck var version
check-ignore check-attr check-ref-format check-mailmap for-each-ref show-ref show-branch cherry
range-diff diff-tree diff-files diff-index verify-commit verify-tag verify-pack whatchanged
get-tar-commit-id column request-pull help""")
_WRITE: Final = wordset("""add commit merge rebase cherry-pick revert am init clone mv fetch pull
notes bisect stash gc repack update-index read-tree write-tree commit-tree pack-refs rerere
sparse-checkout maintenance format-patch send-email difftool mergetool daemon instaweb
symbolic-ref replace svn p4 submodule worktree lfs hook credential citool gui bundle
prune-packed""")
_DESTROY: Final = {"filter-branch": "git filter-branch rewrites history",
                   "filter-repo": "git filter-repo rewrites history",
                   "prune": "git prune permanently deletes unreachable objects"}

_SHORT_VALUES: Final = {
    "push": "o", "commit": "mFCct", "branch": "u", "tag": "muF", "checkout": "bB",
    "switch": "cC", "restore": "s", "clean": "e", "stash": "m", "rebase": "xsX",
    "log": "nGSOL", "diff": "GSOl", "show": "nGSO", "format-patch": "ov", "archive": "o",
    "config": "f", "clone": "bcoju", "fetch": "j", "pull": "j", "merge": "msX", "worktree": "bB",
}
_SUB_LONG: Final = frozenset({"message", "output", "upload-pack", "receive-pack", "exec",
                              "push-option", "repo", "set-upstream-to", "format", "sort",
                              "author", "date", "file", "template", "onto", "strategy",
                              "contains", "merged", "no-merged", "points-at", "depth", "branch",
                              "origin", "reference", "config", "separate-git-dir", "source",
                              "orphan", "type", "default", "pretty", "since", "until",
                              "grep", "max-count", "skip", "glob", "exclude"})
_DRY_RUN_SHORT: Final = frozenset({"add", "mv", "clean", "push", "rm"})


def _sub(sub: str, rest: list[str], call: Call) -> Assessment:
    o = getopt(rest, _SHORT_VALUES.get(sub, ""), _SUB_LONG,
               optional_short="uS" if sub == "commit" else "")
    if sub == "push":
        return _push(o)
    if sub == "branch":
        return _branch(o)
    if sub == "reset":
        if o.has("hard", "merge"):
            return destructive(f"git reset --{'hard' if o.has('hard') else 'merge'} "
                               "discards uncommitted changes")
        return write("git reset moves HEAD / unstages changes")
    if sub == "clean":
        if o.has("n", "dry-run"):
            return read("git clean -n only lists what would be deleted")
        x = " including ignored files" if o.has("x", "X") else ""
        return destructive(f"git clean -f deletes untracked files{x}")
    if sub in ("checkout", "switch"):
        if o.has("f", "force", "discard-changes") or (sub == "checkout" and (
                o.dashdash or "." in o.pos or o.has("ours", "theirs", "p", "patch"))):
            return destructive(f"git {sub} overwrites files, discarding uncommitted changes")
        return write(f"git {sub} changes the working tree")
    if sub == "restore":
        if o.has("S", "staged") and not o.has("W", "worktree"):
            return write("git restore --staged unstages changes")
        return destructive("git restore overwrites working-tree files, discarding changes")
    if sub == "stash":
        verb = o.pos[0] if o.pos else "push"
        if verb in ("drop", "clear"):
            return destructive(f"git stash {verb} deletes stashed changes")
        return read(f"git stash {verb} only reads") if verb in ("list", "show") else write(
            f"git stash {verb} changes the working tree")
    if sub == "tag":
        if o.has("d", "delete"):
            return destructive("git tag -d deletes tags")
        if o.has("l", "list", "n", "v", "verify", "contains", "points-at") or not o.args:
            return read("git tag only lists tags")
        return write("git tag creates a tag" + (" (forced)" if o.has("f") else ""))
    if sub == "remote":
        verb = o.pos[0] if o.pos else ""
        if verb in ("", "show", "get-url", "-v"):
            return read("git remote only lists remotes")
        return write(f"git remote {verb} changes remotes")
    if sub == "config":
        return _config(o)
    if sub == "reflog":
        verb = o.pos[0] if o.pos else "show"
        if verb in ("expire", "delete", "drop"):
            return destructive(f"git reflog {verb} drops recovery points")
        return read("git reflog only reads")
    if sub == "gc" and any(v in ("now", "all") for v in o.all("prune")):
        return destructive("git gc --prune=now permanently deletes unreachable commits")
    if sub == "update-ref" and o.has("d"):
        return destructive("git update-ref -d deletes a ref")
    if sub == "worktree" and o.pos[:1] == ["remove"]:
        if o.has("f", "force"):
            return destructive("git worktree remove --force deletes a worktree with its changes")
        return write("git worktree remove deletes a clean worktree")
    if sub in ("rm",):
        if o.has("cached"):
            return write("git rm --cached untracks files")
        if o.has("f", "force"):
            return destructive("git rm -f deletes files with uncommitted changes")
        return write("git rm removes tracked files (recoverable from history)")
    if sub == "rebase" and o.all("x", "exec"):
        return combine([write("git rebase rewrites commits"),
                        *(call.shell(c) for c in o.all("x", "exec"))])
    if sub == "submodule" and o.pos[:1] == ["foreach"]:
        return combine([write("git submodule foreach runs a command in every submodule"),
                        call.shell(" ".join(o.pos[1:]))])
    if sub == "bisect" and o.pos[:1] == ["run"]:
        return combine([write("git bisect run runs a command"), call.argv(o.pos[1:])])
    if sub == "lfs" and o.pos[:1] == ["migrate"]:
        return destructive("git lfs migrate rewrites history")
    if o.has("dry-run", "check") or (sub in _DRY_RUN_SHORT and o.has("n")):
        return read(f"git {sub} --dry-run only reports")
    if sub == "apply" and o.has("stat", "numstat", "summary") and not o.has("apply"):
        return read("git apply --stat only reports")
    outputs = o.all("o", "output") if sub in ("format-patch", "archive") else o.all("output")
    if outputs:
        hits = [write_to(f"git {sub} --output", f) for f in outputs]
        return combine([h for h in hits if h] or [write(f"git {sub} writes a file")])
    if sub == "format-patch" and o.has("stdout"):
        return read("git format-patch --stdout only prints")
    if sub in _DESTROY:
        return destructive(_DESTROY[sub])
    if sub in _READ:
        return read(f"git {sub} only reads")
    if sub == "apply":
        return write("git apply changes files")
    if sub == "commit" and o.has("amend"):
        return write("git commit --amend rewrites the last commit")
    if sub in _WRITE:
        return write(f"git {sub} changes the repository")
    return write(f"git {sub}: unknown subcommand (maybe an alias); assumed write")


def _config(o: Opts) -> Assessment:
    reading = {"get", "get-all", "get-regexp", "get-urlmatch", "list", "l", "show-origin",
               "show-scope", "name-only", "get-color", "get-colorbool"}
    if o.has(*reading) or (o.pos and o.pos[0] in ("get", "list")):
        return read("git config only reads settings")
    if o.has("unset", "unset-all", "remove-section", "rename-section", "e", "edit"):
        return write("git config changes settings")
    pos = [p for p in o.pos if p != "set"]
    if len(pos) < 2:
        return read("git config only reads a setting")
    hit = config_risk(pos[0], pos[1], "git config")
    return hit or write(f"git config sets {pos[0]}")


def git(call: Call) -> Assessment:
    parts, rest = _globals(list(call.args))
    if not rest or rest[0] == "--":
        return combine([*parts, read("git without a subcommand only prints usage")])
    sub, tail = rest[0], rest[1:]
    if sub == "help" or wants_help(tail, short_h=True):
        return combine([*parts, read("git help only prints documentation")])
    if sub == "clone":
        for i, a in enumerate(tail):
            if a in ("-c", "--config") and i + 1 < len(tail):
                k, _, v = tail[i + 1].partition("=")
                hit = config_risk(k, v, "git clone -c")
                if hit:
                    parts.append(hit)
        if any(a.startswith("ext::") for a in tail):
            parts.append(destructive("git clone ext:: runs a command as the transport"))
    parts.append(_sub(sub, tail, call))
    return combine(parts)


HANDLERS: Final[dict[str, Handler]] = {"git": git}
OWN_HELP: Final = frozenset({"git"})
