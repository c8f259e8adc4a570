"""The vocabulary of verbs shared by subcommand-style CLIs and opaque tool names.

Cloud CLIs (gcloud, az, doctl, gh, vault, heroku…) and agent tool names
(``github__delete_repository``) all say what they do with a verb. Reading that
verb is far more robust than listing every command they have, and it errs the
right way: an unknown verb is a write, a verb that smells of deletion anywhere in
the words is destructive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from agent_shim.risk.model import Assessment, destructive, read, wordset, write
from agent_shim.risk.opts import numeric_zero
from agent_shim.types import Risk

READ_VERBS: Final = wordset(
    """list ls get describe show status info version help view inspect search logs log
    read tail diff plan preview whoami print cat history check validate lint outputs
    output stat du exists wait top explain browse find lookup query head fetch count
    dump export-template what-if watch verify test-iam-permissions scan display
    select peek list-all ps tree graph doctor env config-get compare checks""")
DESTRUCTIVE_VERBS: Final = wordset(
    """delete del destroy remove rm rmi rb purge terminate wipe erase drop truncate
    uninstall deallocate stop kill prune reset flush deregister unregister shred
    nuke teardown down evict abandon disable-deletion-protection unpublish
    force-delete hard-delete poweroff halt shutdown""")
WRITE_VERBS: Final = wordset(
    """create update set put post write edit add insert upsert send run exec execute
    apply deploy merge push commit move rename upload publish patch modify start
    restart invoke call trigger approve close open assign comment enable disable
    install upgrade scale resize import attach detach associate connect login logout
    tag label annotate rollback restore copy cp mv sync submit replace rotate revoke
    grant allow deny reboot cancel suspend resume promote failover""")

_SPLIT: Final = re.compile(r"[-_:./]+|(?<=[a-z0-9])(?=[A-Z])")


def parts_of(word: str) -> list[str]:
    """``batch-delete-image`` / ``deleteUser`` / ``pg:reset`` → lower-case parts."""
    return [p.lower() for p in _SPLIT.split(word) if p]


def verb_risk(word: str) -> Risk | None:
    """The risk a verb implies; None when the word is not a verb we know."""
    w = word.lower()
    if w in DESTRUCTIVE_VERBS:
        return "destructive"
    if w in READ_VERBS:
        return "read"
    if w in WRITE_VERBS:
        return "write"
    parts = parts_of(word)
    if len(parts) < 2:
        return None
    if any(p in DESTRUCTIVE_VERBS or p.startswith("delet") for p in parts):
        return "destructive"
    if parts[0] in READ_VERBS:
        return "read"
    if parts[0] in WRITE_VERBS:
        return "write"
    return None


def scan(tool: str, positionals: Sequence[str], what: str = "resources") -> Assessment:
    """Judge a subcommand-style CLI by its first verb, and by any later deletion verb.

    A later destructive word (``gcloud … describe x; … delete``) can only raise the
    verdict; resource names that happen to look like verbs cost a false alarm at
    worst, never a missed deletion.
    """
    first: tuple[str, Risk] | None = None
    worse: str | None = None
    for p in positionals:
        if p.startswith("-"):
            continue
        r = verb_risk(p)
        if r is None:
            continue
        if first is None:
            first = (p, r)
        elif p.lower() in DESTRUCTIVE_VERBS:
            worse = p
    if first is None:
        return write(f"{tool}: no known verb in {' '.join(positionals[:4]) or 'arguments'}; "
                     "assumed write")
    verb, risk = first
    if worse and risk != "destructive":
        return destructive(f"{tool} … {worse} deletes or stops {what}")
    if risk == "destructive":
        return destructive(f"{tool} {verb} deletes or stops {what}")
    if risk == "read":
        return read(f"{tool} {verb} only reads")
    return write(f"{tool} {verb} changes {what}")


_ZERO_FLAGS: Final = (
    "--replicas", "--num-nodes", "--size", "--desired-count", "--desired-capacity",
    "--max-size", "--nodes", "--nodes-max", "--min-instances", "--max-instances",
    "--instance-count", "--count", "--scale",
)  # fmt: skip


def scales_to_zero(args: Sequence[str]) -> str | None:
    """Scaling something to zero is an outage, whatever the tool calls it."""
    for idx, a in enumerate(args):
        name, eq, val = a.partition("=")
        if name in _ZERO_FLAGS:
            value = val if eq else (args[idx + 1] if idx + 1 < len(args) else None)
            if numeric_zero(value):
                return f"{name}=0 scales to zero"
    return None
