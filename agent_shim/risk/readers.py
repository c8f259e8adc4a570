"""Commands that only read, and the few readers that have a writing option.

"Read-only" must be provable, so a command lands in ``PURE`` only when no option
of it writes, deletes or runs another program; those stay read even when an
unquoted ``$x`` could add options. Readers with a writing option (``sort -o``,
``date -s``, ``journalctl --vacuum-size``) get a handler that looks for it.
"""

from __future__ import annotations

from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    Word,
    combine,
    destructive,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.paths import write_to
from agent_shim.risk.tools_wrap import assignment

_PURE_NAMES: Final = wordset("""
ls ll la dir vdir cat tac head tail most grep egrep fgrep zgrep zegrep zfgrep
zcat bzcat xzcat zstdcat lz4cat zless zmore bzgrep xzgrep wc cut tr column nl fold fmt paste
join comm diff diff3 cmp rev expand unexpand pwd echo printf true false : which type
whereis whoami id groups uname uptime ps pgrep pidof free vmstat iostat mpstat pidstat
lsof netstat ping ping6 traceroute traceroute6 tracepath mtr dig nslookup host whois
printenv locale tty basename dirname realpath readlink seq yes sleep wait cd pushd popd dirs
stat du df nproc arch lsblk blkid lscpu lsmod lspci lsusb lsns last w who getent cal
expr base64 base32 basenc md5sum sha1sum sha224sum sha256sum sha384sum sha512sum b2sum
cksum sum od hexdump hd strings exa eza lsattr getfacl numfmt mapfile readarray
read shopt unset shift exit return break continue umask jobs getopts let tput clear
nm objdump readelf size lsipc findmnt mountpoint sestatus getenforce pstree htop btop
iotop iftop nethogs bmon dstat pmap vnstat look units factor
tsort jq jless gron fx csvlook csvstat wdiff colordiff difft icdiff
ack cloc tokei scc loc sloccount file envsubst md5 shasum sha256
ssh-keyscan getconf systemd-cgls systemd-cgtop systemd-detect-virt lslocks lslogins
""")
PURE: Final = _PURE_NAMES | {"test", "[", "[[", "help", "type", "cd", "export"}


def simple(call: Call) -> Assessment:
    return read(f"{call.name} only reads")


def _files_out(call: Call, paths: list[str], verb: str) -> Assessment:
    found = [a for a in (write_to(verb, p) for p in paths) if a is not None]
    return combine(found) if found else read(f"{call.name} only reads")


def sort(call: Call) -> Assessment:
    o = getopt(call.args, "kto STT", {"output", "key", "field-separator", "temporary-directory",
                                      "buffer-size", "parallel", "files0-from", "compress-program",
                                      "random-source", "batch-size", "sort"})
    if o.has("compress-program"):
        return destructive("sort --compress-program runs another program")
    return _files_out(call, o.all("o", "output"), "sort -o")


def uniq(call: Call) -> Assessment:
    o = getopt(call.args, "fsw", {"skip-fields", "skip-chars", "check-chars", "group",
                                   "all-repeated"})
    return _files_out(call, o.args[1:2], "uniq OUTPUT")


def shuf(call: Call) -> Assessment:
    o = getopt(call.args, "oni", {"output", "head-count", "input-range", "random-source"})
    return _files_out(call, o.all("o", "output"), "shuf -o")


def date(call: Call) -> Assessment:
    o = getopt(call.args, "dfrs", {"date", "file", "reference", "set"}, optional_short="I")
    if o.has("s", "set") or any(not p.startswith("+") for p in o.pos):
        return write("date -s / date MMDDhhmm sets the system clock")
    return read("date only prints the time")


def hostname(call: Call) -> Assessment:
    o = getopt(call.args, "F", {"file"})
    if o.pos or o.has("F", "file", "b", "boot"):
        return write("hostname NAME changes the host name")
    return read("hostname only prints the host name")


def dmesg(call: Call) -> Assessment:
    o = getopt(call.args, "fFlnsS", {"facility", "file", "level", "console-level", "buffer-size"})
    if o.has("c", "C", "clear", "read-clear", "D", "E", "console-off", "console-on", "n",
             "console-level"):
        return write("dmesg -c/-C/-n changes the kernel log")
    return read("dmesg only reads the kernel log")


def journalctl(call: Call) -> Assessment:
    flags = getopt(call.args, "uptSUnoDMbkgFiIcm").flags
    if flags & {"vacuum-size", "vacuum-time", "vacuum-files"}:
        return destructive("journalctl --vacuum-* deletes journal files")
    if flags & {"rotate", "flush", "sync", "relinquish-var", "smart-relinquish-var",
                "setup-keys", "update-catalog"}:
        return write("journalctl --rotate/--flush changes journal files")
    return read("journalctl only reads logs")


_IP_READ: Final = frozenset({"show", "list", "ls", "lst", "sh", "get", "monitor", "help", "s",
                             "l", "save"})
_IP_DESTROY: Final = frozenset({"del", "delete", "flush", "d", "f"})


def ip(call: Call) -> Assessment:
    o = getopt(call.args, "fbnr", {"family", "batch", "netns", "rc", "resolve"},
               stop_at_positional=False, single_dash_long=True)
    pos = o.pos
    if o.has("b", "batch", "force"):
        return write("ip -batch runs commands from a file")
    if len(pos) >= 2 and pos[0] == "netns" and pos[1] == "exec" and len(pos) > 3:
        return call.argv(call.args[call.args.index(pos[2]) + 1 :])
    verb = pos[1] if len(pos) > 1 else "show"
    if verb in _IP_READ:
        return read(f"ip {pos[0] if pos else ''} {verb} only reads".replace("  ", " "))
    if verb in _IP_DESTROY:
        return destructive(f"ip {pos[0]} {verb} removes network configuration")
    if "down" in pos:
        return destructive(f"ip {pos[0]} … down takes a network link down")
    return write(f"ip {pos[0]} {verb} changes network configuration")


def ifconfig(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    if "down" in pos:
        return destructive("ifconfig … down takes a network interface down")
    if len(pos) > 1:
        return write("ifconfig changes network interface settings")
    return read("ifconfig only prints interfaces")


def route(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    if pos and pos[0] in ("del", "delete", "flush"):
        return destructive("route del removes a network route")
    if pos and pos[0] in ("add", "change", "replace"):
        return write("route add changes routing")
    return read("route only prints the routing table")


def xxd(call: Call) -> Assessment:
    o = getopt(call.args, "cglsnoC", {"cols", "groupsize", "len", "seek", "name", "offset"},
               single_dash_long=False)
    return _files_out(call, o.args[1:2], "xxd OUTFILE")


def yq(call: Call) -> Assessment:
    o = getopt(call.args, "pIo", {"input-format", "output-format", "indent", "from-file",
                                   "expression"})
    if o.has("i", "inplace") or o.prefix("inplace"):
        return write("yq -i edits files in place")
    return read("yq only reads")


def history(call: Call) -> Assessment:
    if any(a.startswith(("-c", "-d", "-w", "-a", "-n", "-r", "-s")) for a in call.args):
        return write("history -c/-d/-w changes shell history")
    return read("history only prints shell history")


def rg(call: Call) -> Assessment:
    o = getopt(call.args, "efgtTmABCjMErd", {"pre", "regexp", "file", "glob", "type",
                                              "replace", "max-count", "threads", "pre-glob"})
    pre = o.value("pre")
    if pre:
        return combine([write("rg --pre runs a program on every file"),
                        call.argv([pre, Word("<file>")])])
    return read("rg only reads")


def fd(call: Call) -> Assessment:
    args = list(call.args)
    for flag in ("-x", "--exec", "-X", "--exec-batch"):
        if flag in args:
            inner = args[args.index(flag) + 1 :]
            if ";" in inner:
                inner = inner[: inner.index(";")]
            return combine([read("fd lists files"), call.argv([*inner, Word("<path>")])])
    return read("fd only lists files")


def declare(call: Call) -> Assessment:
    found = [a for a in (assignment(x) for x in call.args if "=" in x) if a is not None]
    return combine(found) if found else read(f"{call.name} only sets shell variables")


def openssl(call: Call) -> Assessment:
    args = call.args
    if any(a in ("-out", "-keyout", "-writerand") for a in args):
        target = args[args.index("-out") + 1] if "-out" in args[:-1] else ""
        hit = write_to("openssl -out", target) if target else None
        return hit or write("openssl writes an output file")
    if args and args[0] in ("genrsa", "genpkey", "ca", "req") and "-text" not in args:
        return write(f"openssl {args[0]} creates keys or certificates")
    return read("openssl only inspects")


def gpg(call: Call) -> Assessment:
    flags = getopt(call.args, "ourf").flags
    if any(f.startswith("delete") for f in flags):
        return destructive("gpg --delete-key removes keys")
    if flags & {"list-keys", "list-secret-keys", "k", "K", "fingerprint", "verify",
                "list-sigs", "check-sigs", "list-packets", "version"}:
        return read("gpg only lists or verifies")
    return write("gpg changes a keyring or writes output")


def ssh_keygen(call: Call) -> Assessment:
    flags = getopt(call.args, "bCfFEmNnOrsSIVtwYzZaDPR").flags
    if flags & {"l", "F", "y", "B", "L", "Q"} and not flags & {"R"}:
        return read("ssh-keygen only inspects keys")
    return write("ssh-keygen creates or changes keys / known_hosts")


def nvidia_smi(call: Call) -> Assessment:
    bad = ("-r", "--gpu-reset", "-pm", "-pl", "-c", "-e", "-ac", "-rac", "-lgc", "-rgc", "-mig")
    if any(a.split("=", 1)[0] in bad for a in call.args):
        return write("nvidia-smi changes GPU settings")
    return read("nvidia-smi only reads")


def _pager_option(call: Call, *names: str) -> Assessment:
    """``bat --pager CMD`` / ``man -P CMD`` run CMD: see through it unless it is a pager."""
    args = list(call.args)
    for k, a in enumerate(args):
        name, eq, val = a.partition("=")
        if name in names and (eq or k + 1 < len(args)):
            prog = val if eq else args[k + 1]
            if prog.split(" ", 1)[0] in ("less", "more", "cat", "most", ""):
                continue
            return combine([write(f"{call.name} {name} runs another program"), call.shell(prog)])
    return read(f"{call.name} only reads")


def _flag_writes(flags: tuple[str, ...], risk: str, what: str) -> Handler:
    """A reader that writes (or worse) only when given one of ``flags``."""

    def handler(call: Call) -> Assessment:
        args = list(call.args)
        k = next((k for k, a in enumerate(args) if a.split("=", 1)[0] in flags), None)
        if k is None:
            return read(f"{call.name} only reads")
        if risk == "destructive":
            return destructive(f"{call.name} {args[k]} {what}")
        name, eq, val = args[k].partition("=")
        target = val if eq else (args[k + 1] if k + 1 < len(args) else "")
        hit = write_to(f"{call.name} {name}", target) if target else None
        return hit if hit is not None and hit.risk == "destructive" else write(
            f"{call.name} {name} {what}")

    return handler


HANDLERS: Final[dict[str, Handler]] = {name: simple for name in PURE}
HANDLERS.update({
    "sort": sort, "uniq": uniq, "shuf": shuf, "date": date, "hostname": hostname,
    "dmesg": dmesg, "journalctl": journalctl, "ip": ip, "ifconfig": ifconfig, "route": route,
    "xxd": xxd, "yq": yq, "history": history, "rg": rg, "fd": fd, "fdfind": fd,
    "declare": declare, "typeset": declare, "local": declare, "readonly": declare,
    "export": declare, "openssl": openssl, "gpg": gpg, "gpg2": gpg, "ssh-keygen": ssh_keygen,
    "nvidia-smi": nvidia_smi, "stty": lambda c: write("stty changes terminal settings"),
    "ldd": lambda c: write("ldd may execute the inspected program"),
    "set": lambda c: read("set changes shell options only"),
    "bat": lambda c: _pager_option(c, "--pager"), "batcat": lambda c: _pager_option(c, "--pager"),
    "ag": lambda c: _pager_option(c, "--pager"), "delta": lambda c: _pager_option(c, "--pager"),
    "man": lambda c: _pager_option(c, "-P", "--pager", "-H", "--html"),
    "less": _flag_writes(("-o", "-O", "--log-file", "--LOG-FILE"), "write", "writes a log file"),
    "more": simple, "tree": _flag_writes(("-o",), "write", "writes its output to a file"),
    "sar": _flag_writes(("-o",), "write", "writes its data to a file"),
    "sdiff": _flag_writes(("-o", "--output"), "write", "writes the merged file"),
    "ss": _flag_writes(("-K", "--kill"), "destructive", "closes matching sockets"),
    "fuser": _flag_writes(("-k", "--kill"), "destructive", "kills processes using the file"),
    "hash": _flag_writes(("-p",), "destructive", "maps a command name to another program"),
    "test": simple, "[": simple, "[[": simple,
})  # fmt: skip
