"""Which paths make a write or a deletion worse than usual.

Pure string work (``posixpath.normpath`` does no lookups): the classifier cannot
and must not look at the filesystem, so ``/tmp/../etc/passwd`` is resolved by
text and a relative path is never assumed to be safe or dangerous beyond what it
says.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final, Literal

from agent_shim.risk.model import Assessment, clip, destructive, is_dynamic, write

PathClass = Literal["harmless", "device", "critical", "normal"]

HARMLESS: Final = frozenset(
    {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero", "/dev/full", "-",
     "/dev/stdin", "/dev/random", "/dev/urandom"}
)
_SYSTEM_DIRS: Final = (
    "/etc", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/var/lib", "/var/spool/cron", "/root", "/sys", "/proc", "/efi", "/var/opt",
)  # fmt: skip
_HOME_SECRETS: Final = (
    "~/.ssh", "~/.bashrc", "~/.bash_profile", "~/.profile", "~/.zshrc", "~/.zprofile",
    "~/.bash_login", "~/.aws", "~/.kube", "~/.gnupg", "~/.config/gcloud", "~/.azure",
    "~/.docker", "~/.gitconfig", "~/.netrc", "~/.pgpass", "~/.my.cnf", "~/.terraform.d",
    "~/.config/systemd", "~/.config/autostart",
)  # fmt: skip
_HOME_PREFIX: Final = re.compile(r"^(?:\$HOME|\$\{HOME\}|/root|/home/[^/]+)(?=/|$)")
_ROOTLIKE: Final = frozenset({"/", "/*", "~", "~/", "~/*", "/home", "/home/*", "/root", ".", "..",
                              "*", "./*", "../*", "/var", "/opt", "/srv", "/mnt"})


def normalise(path: str) -> str:
    """Collapse ``//``, ``.``, ``..`` and spell the home directory as ``~``."""
    p = path.strip()
    if not p:
        return p
    p = _HOME_PREFIX.sub("~", p)
    if p.startswith("/"):
        p = posixpath.normpath(p)
        if p.startswith("//"):
            p = p[1:]
    elif p.startswith("~/"):
        p = "~/" + posixpath.normpath(p[2:]).lstrip("/")
        if p == "~/.":
            p = "~"
    return p


def _tree(roots: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for "is ``p`` one of ``roots`` or below it" (hot path: every write target)."""
    return re.compile("^(?:" + "|".join(re.escape(r) for r in roots) + ")(?:/|$)")


_SYSTEM_TREE: Final = _tree(_SYSTEM_DIRS)
_SECRET_TREE: Final = _tree(_HOME_SECRETS)


def classify_path(path: str) -> PathClass:
    p = normalise(path)
    if p in HARMLESS or p.startswith(("/dev/fd/", "/proc/self/fd/")):
        return "harmless"
    if p == "/dev" or p.startswith("/dev/"):
        return "device"
    if p == "/" or _SYSTEM_TREE.match(p) or _SECRET_TREE.match(p):
        return "critical"
    return "normal"


def is_rootlike(path: str) -> bool:
    """A deletion target that takes a whole tree a human cares about with it."""
    p = path.strip()
    if p in _ROOTLIKE:
        return True
    n = normalise(p.rstrip("*").rstrip("/") or "/")
    return n in ("/", "~") or n in _SYSTEM_DIRS or (n.count("/") == 1 and n.startswith("/"))


def deletion_notes(verb: str, targets: list[str]) -> list[str]:
    """What makes a deletion worse than "some files": root-like, system or unseen targets."""
    notes: list[str] = []
    for t in targets:
        if is_dynamic(t):
            notes.append(f"{verb} target is only known at run time ({clip(t, 40)})")
        elif is_rootlike(t):
            notes.append(f"{verb} targets {t}, a root, home or top-level directory")
        elif classify_path(t) in ("critical", "device"):
            notes.append(f"{verb} targets system or credential path {t}")
    return notes


def write_to(verb: str, path: str) -> Assessment | None:
    """What writing ``path`` amounts to, or None when the write does not count."""
    kind = classify_path(path)
    if kind == "harmless":
        return None
    if kind == "device":
        return destructive(f"{verb} writes to device {path}")
    if kind == "critical":
        return destructive(f"{verb} writes to system or credential path {path}")
    return write(f"{verb} writes {path}")
