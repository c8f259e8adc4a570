"""File and disk commands: deleting, overwriting, re-permissioning, archiving.

Deleting files is destructive whatever the flags (nothing brings them back);
the reasons say how bad (``-r``, a root-like or system target). Copying and moving
are writes unless they land on a device or a system/credential path, where a
single overwrite can take a host down.
"""

from __future__ import annotations

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
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.paths import classify_path, deletion_notes, is_rootlike, write_to


def rm(call: Call) -> Assessment:
    o = getopt(call.args)
    targets = o.args
    if not targets:
        return read("rm without operands does nothing")
    recursive = o.has("r", "R", "recursive") or o.prefix("recursive")
    first = "rm -r deletes files recursively" if recursive else "rm deletes files"
    notes = [first, *deletion_notes("rm", targets)]
    if o.has("no-preserve-root"):
        notes.append("rm --no-preserve-root allows deleting /")
    return Assessment("destructive", tuple(dict.fromkeys(notes)))


def rmdir(call: Call) -> Assessment:
    targets = getopt(call.args).args
    notes = deletion_notes("rmdir", targets)
    if notes:
        return destructive(notes[0])
    return write("rmdir removes empty directories")


def unlink(call: Call) -> Assessment:
    return destructive("unlink deletes a file")


def shred(call: Call) -> Assessment:
    return destructive("shred overwrites files so they cannot be recovered")


def wipefs(call: Call) -> Assessment:
    o = getopt(call.args, "otpO", {"offset", "types", "output", "backup"})
    if o.has("n", "no-act") or not o.has("a", "all", "o", "offset"):
        return read("wipefs without -a only lists signatures")
    return destructive("wipefs -a erases filesystem signatures")


def mkfs(call: Call) -> Assessment:
    return destructive(f"{call.name} creates a filesystem, erasing the device")


def blkdiscard(call: Call) -> Assessment:
    return destructive("blkdiscard discards every block of the device")


def fdisk(call: Call) -> Assessment:
    flags = getopt(call.args, "bcLoSuwtOhH", {"sector-size", "compatibility", "output",
                                             "type", "wipe", "wipe-partitions"}).flags
    if flags & {"l", "list", "d", "dump", "s", "show-size", "V", "verify", "J", "json",
                "list-free", "F", "p", "print", "v"} and not flags & {"Z", "zap-all", "o",
                                                                      "clear", "delete"}:
        return read(f"{call.name} -l only lists partitions")
    return destructive(f"{call.name} rewrites partition tables")


def parted(call: Call) -> Assessment:
    o = getopt(call.args)
    cmds = [a for a in o.args[1:]]
    if o.has("l", "list") or (cmds and all(c in ("print", "p", "unit", "s", "B", "MB", "GB",
                                                       "free") for c in cmds)):
        return read("parted print only lists partitions")
    return destructive("parted changes partition tables")


def dd(call: Call) -> Assessment:
    out = next((a[3:] for a in call.args if a.startswith("of=")), None)
    if out is None:
        return read("dd without of= only copies to stdout")
    if is_dynamic(out):
        return destructive(f"dd of={out}: output device comes from an expansion")
    hit = write_to("dd of=", out)
    if hit is None:
        return read(f"dd writes only to {out}")
    if hit.risk == "destructive":
        return destructive(f"dd of={out} overwrites a device or system path")
    return write(f"dd writes {out}")


def truncate(call: Call) -> Assessment:
    o = getopt(call.args, "rs", {"reference", "size"})
    size = o.value("s", "size") or ""
    if size.startswith("+"):
        return write("truncate -s +N grows files")
    return destructive("truncate discards file contents")


def _copy_like(call: Call, verb: str) -> Assessment:
    o = getopt(call.args, "tSmog" if verb == "install" else "tS",
               {"target-directory", "suffix", "backup", "mode", "owner", "group", "reflink",
                "sparse", "preserve", "no-preserve", "context"}, optional_short="")
    paths = o.args
    if not paths:
        return write(f"{verb} with no operands")
    dest = o.value("t", "target-directory") or paths[-1]
    sources = paths if o.has("t", "target-directory") else paths[:-1]
    parts: list[Assessment] = []
    if verb == "mv" and classify_path(dest) == "harmless":
        return destructive(f"mv into {dest} destroys the moved files")
    hit = write_to(verb, dest) if not is_dynamic(dest) else None
    if hit and hit.risk == "destructive":
        parts.append(hit)
    if verb == "mv":
        for s in sources:
            if classify_path(s) in ("critical", "device") or is_rootlike(s):
                parts.append(destructive(f"mv moves away system path {s}"))
    if o.has("remove-destination", "f", "force") and verb == "cp":
        parts.append(write("cp -f overwrites the destination"))
    parts.append(write(f"{verb} writes {dest} (may overwrite it)"))
    return combine(parts)


def mv(call: Call) -> Assessment:
    return _copy_like(call, "mv")


def cp(call: Call) -> Assessment:
    return _copy_like(call, "cp")


def install(call: Call) -> Assessment:
    return _copy_like(call, "install")


def ln(call: Call) -> Assessment:
    return _copy_like(call, "ln")


def _perms(call: Call) -> Assessment:
    o = getopt(call.args, "", {"reference", "from"})
    args = o.args
    targets = args[1:] if args and not o.has("reference") else args
    notes = deletion_notes(call.name, targets)
    if o.has("R", "recursive") or o.prefix("recursive"):
        return destructive(f"{call.name} -R changes every file below "
                           f"{', '.join(targets) or 'the target'}; the old values are lost")
    if notes or any(classify_path(t) in ("critical", "device") for t in targets):
        return destructive(notes[0] if notes else f"{call.name} on a system path")
    return write(f"{call.name} changes file permissions or ownership")


def chattr(call: Call) -> Assessment:
    notes = deletion_notes("chattr", [a for a in call.args if a[:1] not in "+-="])
    if notes or "-R" in call.args:
        return destructive(notes[0] if notes else "chattr -R changes attributes recursively")
    return write("chattr changes file attributes")


def _creator(call: Call) -> Assessment:
    o = getopt(call.args, "mpdtrT", {"mode", "context", "reference", "date", "tmpdir"})
    hits = [a for a in (write_to(call.name, p) for p in o.args if not is_dynamic(p)) if a]
    bad = [h for h in hits if h.risk == "destructive"]
    return combine([write(f"{call.name} creates files or directories"), *bad])


_TAR_EXEC: Final = ("to-command", "use-compress-program", "checkpoint-action", "info-script",
                    "new-volume-script", "rsh-command", "rmt-command", "I", "F")


def tar(call: Call) -> Assessment:
    args = list(call.args)
    if args and not args[0].startswith("-") and args[0][:1].isalpha():
        args[0] = "-" + args[0]  # old style: tar xzf file
    o = getopt(args, "fCbFgHIKLNTVX", {"file", "directory", "to-command", "use-compress-program",
                                      "checkpoint-action", "info-script", "new-volume-script",
                                      "rsh-command", "exclude", "files-from", "transform",
                                      "owner", "group", "mode", "format", "rmt-command",
                                      "blocking-factor", "label", "listed-incremental",
                                      "newer", "after-date", "suffix", "xform"})
    parts: list[Assessment] = []
    for opt in _TAR_EXEC:
        for prog in o.all(opt):
            what = "tar runs another program"
            if opt == "checkpoint-action" and not prog.startswith(("exec", "sleep")):
                continue
            inner = prog.split("=", 1)[1] if opt == "checkpoint-action" else prog
            parts.append(write(f"{what} ({clip(inner, 40)})"))
            parts.append(call.shell(inner))
    if o.has("remove-files"):
        parts.append(destructive("tar --remove-files deletes the archived files"))
    if o.has("delete"):
        parts.append(write("tar --delete removes members from the archive"))
    if o.has("x", "extract", "get"):
        dest = o.value("C", "directory") or ""
        hit = write_to("tar -x into", dest) if dest else None
        parts.append(hit if hit and hit.risk == "destructive"
                     else write("tar -x extracts files (may overwrite existing ones)"))
    elif o.has("c", "create", "r", "append", "u", "update", "A", "catenate", "concatenate"):
        parts.append(write("tar -c writes an archive"))
    elif not parts:
        parts.append(read("tar -t only lists an archive"))
    return combine(parts)


def unzip(call: Call) -> Assessment:
    o = getopt(call.args, "dxZ", {})
    if o.has("l", "t", "v", "Z", "p", "z"):
        return read("unzip -l/-t/-p only lists or prints")
    hit = write_to("unzip -d", o.value("d") or "") if o.value("d") else None
    if hit and hit.risk == "destructive":
        return hit
    return write("unzip extracts files (may overwrite existing ones)")


def compressor(call: Call) -> Assessment:
    o = getopt(call.args, "S", {"suffix"})
    if o.has("c", "stdout", "to-stdout", "l", "list", "t", "test") or not o.args:
        return read(f"{call.name} -c/-l/-t only writes to stdout or tests")
    if o.has("rm") and call.name == "zstd":
        return write("zstd --rm replaces files")
    return write(f"{call.name} replaces files with (de)compressed versions")


def sevenzip(call: Call) -> Assessment:
    cmd = call.args[0] if call.args else ""
    if cmd in ("l", "t", "i", "h"):
        return read(f"{call.name} {cmd} only lists or tests")
    if cmd == "d":
        return destructive(f"{call.name} d deletes archive members")
    return write(f"{call.name} {cmd} writes files")


def fsck(call: Call) -> Assessment:
    o = getopt(call.args, "tCE", {})
    if o.has("n", "N"):
        return read(f"{call.name} -n only checks")
    return write(f"{call.name} repairs a filesystem")


def hdparm(call: Call) -> Assessment:
    text = " ".join(call.args)
    if "--security-erase" in text or "--trim-sector-ranges" in text or "--dco-restore" in text:
        return destructive("hdparm erase/trim destroys disk contents")
    if any(a.startswith("-") and a[1:2] in "tTiI" for a in call.args) and "-S" not in text:
        return read("hdparm -t/-i only reads")
    return write("hdparm changes drive settings")


HANDLERS: Final[dict[str, Handler]] = {
    "rm": rm, "rmdir": rmdir, "unlink": unlink, "shred": shred, "srm": shred,
    "wipefs": wipefs, "mkfs": mkfs, "mke2fs": mkfs, "mkswap": mkfs, "blkdiscard": blkdiscard,
    "fdisk": fdisk, "sfdisk": fdisk, "gdisk": fdisk, "sgdisk": fdisk, "cfdisk": fdisk,
    "parted": parted, "dd": dd, "truncate": truncate,
    "fallocate": lambda c: write("fallocate allocates file space"),
    "mv": mv, "cp": cp, "install": install, "ln": ln,
    "chmod": _perms, "chown": _perms, "chgrp": _perms, "setfacl": _perms, "chattr": chattr,
    "touch": _creator, "mkdir": _creator, "mktemp": _creator, "mkfifo": _creator,
    "tar": tar, "gtar": tar, "bsdtar": tar, "unzip": unzip,
    "zip": lambda c: write("zip writes an archive"),
    "gzip": compressor, "gunzip": compressor, "bzip2": compressor, "bunzip2": compressor,
    "xz": compressor, "unxz": compressor, "zstd": compressor, "unzstd": compressor,
    "lz4": compressor, "pigz": compressor, "7z": sevenzip, "7za": sevenzip,
    "fsck": fsck, "e2fsck": fsck, "xfs_repair": fsck, "hdparm": hdparm,
    "trash": lambda c: write("trash moves files to the trash (recoverable)"),
    "trash-put": lambda c: write("trash-put moves files to the trash (recoverable)"),
    "rename": lambda c: write("rename renames files"),
}  # fmt: skip
