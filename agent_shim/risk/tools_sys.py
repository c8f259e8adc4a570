"""Host administration: services, processes, power, firewalls, cron, users, storage.

On a production host these are the commands that cause outages rather than data
loss: stopping or masking a unit, killing processes, flushing firewall rules,
unmounting or removing volumes. Each is destructive; starting and restarting are
writes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from agent_shim.risk.model import Assessment, Call, Handler, destructive, read, wordset, write
from agent_shim.risk.opts import getopt


def table(
    tool: str,
    reads: Collection[str],
    destroys: Collection[str],
    *,
    what: str = "the system",
    short_values: str = "",
    empty: str = "read",
) -> Handler:
    """A handler for ``tool VERB …`` CLIs whose verb decides everything."""

    def handler(call: Call) -> Assessment:
        pos = getopt(call.args, short_values).pos
        verb = pos[0] if pos else ""
        if not verb:
            return read(f"{tool} only shows status") if empty == "read" else write(
                f"{tool} changes {what}")
        if verb in destroys:
            return destructive(f"{tool} {verb} removes or stops {what}")
        if verb in reads:
            return read(f"{tool} {verb} only reads")
        return write(f"{tool} {verb} changes {what}")

    return handler


_SYSTEMCTL_READ: Final = wordset(
    """status show cat list-units list-unit-files list-sockets list-timers list-jobs
    list-dependencies list-machines is-active is-enabled is-failed is-system-running
    get-default show-environment help""")
_SYSTEMCTL_DESTROY: Final = wordset(
    """stop disable mask kill isolate poweroff reboot halt kexec rescue emergency suspend
    hibernate hybrid-sleep soft-reboot exit switch-root clean freeze""")


def systemctl(call: Call) -> Assessment:
    o = getopt(call.args, "tspPHMnoj", {"type", "state", "property", "host", "machine",
                                        "signal", "lines", "output", "job-mode", "root"})
    verb = o.pos[0] if o.pos else "list-units"
    units = " ".join(o.pos[1:3])
    if verb in _SYSTEMCTL_DESTROY:
        return destructive(f"systemctl {verb} {units} stops or disables services".replace(
            "  ", " "))
    if verb in _SYSTEMCTL_READ:
        return read(f"systemctl {verb} only reads")
    if o.has("now") and verb == "disable":
        return destructive("systemctl disable --now stops the service")
    return write(f"systemctl {verb} {units} changes service state".replace("  ", " "))


def service(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[1] if len(pos) > 1 else "status"
    if "--status-all" in call.args or verb in ("status", "--status-all"):
        return read("service status only reads")
    if verb in ("stop", "kill", "disable", "force-stop"):
        return destructive(f"service {pos[0]} {verb} stops a service")
    return write(f"service {pos[0] if pos else ''} {verb} changes service state")


def kill(call: Call) -> Assessment:
    args = list(call.args)
    if any(a in ("-l", "-L", "--list", "--table") for a in args):
        return read("kill -l only lists signals")
    sig = "TERM"
    targets: list[str] = []
    k = 0
    while k < len(args):
        a = args[k]
        if a in ("-s", "-n", "--signal") and k + 1 < len(args):
            sig = args[k + 1]
            k += 1
        elif a.startswith("--signal="):
            sig = a.partition("=")[2]
        elif a == "--":
            targets.extend(args[k + 1 :])
            break
        elif a.startswith("-") and len(a) > 1 and not targets and sig == "TERM":
            sig = a[1:]
        else:
            targets.append(a)
        k += 1
    sig = sig.upper().removeprefix("SIG")
    if sig == "0":
        return read("kill -0 only checks that a process exists")
    if "-1" in targets or "1" in targets:
        return destructive(f"{call.name} -1 / 1 signals every process (or init)")
    if sig in ("9", "KILL"):
        return destructive(f"{call.name} -{sig} kills processes without letting them clean up")
    return write(f"{call.name} sends SIG{sig} to processes")


def pkill(call: Call) -> Assessment:
    if call.name == "killall" and any(a in ("-l", "--list") for a in call.args):
        return read("killall -l only lists signals")
    return destructive(f"{call.name} kills every matching process")


def power(call: Call) -> Assessment:
    if call.name == "shutdown" and any(a in ("-c", "--show") for a in call.args):
        return write("shutdown -c cancels a pending shutdown")
    if call.name in ("init", "telinit") and not any(a in "0126sS" for a in call.args):
        return write(f"{call.name} changes the runlevel")
    return destructive(f"{call.name} takes the host down")


def iptables(call: Call) -> Assessment:
    if call.name.endswith("-save"):
        return read(f"{call.name} only prints rules")
    if call.name.endswith("-restore"):
        if any(a in ("-t", "--test") for a in call.args):
            return read(f"{call.name} --test only checks rules")
        return destructive(f"{call.name} replaces the whole rule set")
    flags = getopt(call.args, "tAIRNDPFXZLSCEjmpsdiovwW", {"table", "append", "insert",
                                                          "jump", "policy"}).flags
    if flags & {"F", "flush", "X", "delete-chain", "D", "delete", "P", "policy", "Z", "zero"}:
        return destructive(f"{call.name} -F/-X/-D/-P removes rules or changes default policy")
    if flags & {"A", "append", "I", "insert", "R", "replace", "N", "new-chain", "E",
                "rename-chain"}:
        return write(f"{call.name} adds or replaces firewall rules")
    if flags & {"L", "list", "S", "list-rules", "C", "check", "version", "V"}:
        return read(f"{call.name} -L only lists rules")
    return write(f"{call.name} changes firewall rules")


def nft(call: Call) -> Assessment:
    o = getopt(call.args, "fIi")
    if o.has("f", "file"):
        return destructive("nft -f loads a rule file whose content is not visible")
    verb = o.pos[0] if o.pos else ""
    if verb in ("list", "describe", "monitor") or not verb:
        return read("nft list only reads")
    if verb in ("flush", "delete", "destroy", "reset"):
        return destructive(f"nft {verb} removes firewall rules")
    return write(f"nft {verb} changes firewall rules")


def crontab(call: Call) -> Assessment:
    o = getopt(call.args, "uc")
    if o.has("r"):
        return destructive("crontab -r deletes the whole crontab")
    if o.has("l"):
        return read("crontab -l only lists jobs")
    if o.has("e"):
        return write("crontab -e edits scheduled jobs")
    return write("crontab FILE replaces the scheduled jobs")


def mount(call: Call) -> Assessment:
    if call.name == "umount":
        if any(a in ("-f", "--force", "-l", "--lazy", "-a", "--all") for a in call.args):
            return destructive("umount -f/-l/-a forcibly detaches filesystems")
        return write("umount detaches a filesystem")
    if not [a for a in call.args if not a.startswith("-")] and "-a" not in call.args:
        return read("mount without arguments only lists mounts")
    return write("mount attaches a filesystem")


def sysctl(call: Call) -> Assessment:
    o = getopt(call.args, "p", {"load"})
    if o.has("w", "write", "p", "load", "system") or any("=" in a for a in o.pos):
        return write("sysctl -w changes kernel parameters")
    return read("sysctl only reads kernel parameters")


def _always(risk: str, text: str) -> Handler:
    def handler(call: Call) -> Assessment:
        if risk == "destructive":
            return destructive(f"{call.name} {text}")
        if risk == "read":
            return read(f"{call.name} {text}")
        return write(f"{call.name} {text}")

    return handler


_LVM_READ: Final = ("lvs", "vgs", "pvs", "lvdisplay", "vgdisplay", "pvdisplay", "lvscan",
                    "vgscan", "pvscan")

HANDLERS: Final[dict[str, Handler]] = {
    "systemctl": systemctl, "service": service, "kill": kill, "pkill": pkill,
    "killall": pkill, "skill": pkill, "shutdown": power, "reboot": power, "halt": power,
    "poweroff": power, "init": power, "telinit": power,
    "iptables": iptables, "ip6tables": iptables, "iptables-save": iptables,
    "ip6tables-save": iptables, "iptables-restore": iptables, "ip6tables-restore": iptables,
    "nft": nft, "crontab": crontab, "mount": mount, "umount": mount, "sysctl": sysctl,
    "ufw": table("ufw", {"status", "show", "version", "app"}, {"disable", "reset", "delete"},
                 what="firewall rules"),
    "firewall-cmd": lambda c: read("firewall-cmd only lists")
    if all(a.startswith(("--list", "--get", "--query", "--state", "--zone")) for a in c.args)
    else write("firewall-cmd changes firewall rules"),
    "useradd": _always("write", "creates a user"), "adduser": _always("write", "creates a user"),
    "usermod": _always("write", "changes a user"), "groupadd": _always("write", "adds a group"),
    "passwd": _always("write", "changes a password"),
    "chpasswd": _always("write", "changes passwords"),
    "userdel": _always("destructive", "deletes a user"),
    "deluser": _always("destructive", "deletes a user"),
    "groupdel": _always("destructive", "deletes a group"),
    "swapoff": _always("write", "disables swap"), "swapon": _always("write", "enables swap"),
    "modprobe": lambda c: destructive("modprobe -r unloads kernel modules")
    if "-r" in c.args or "--remove" in c.args else write("modprobe loads kernel modules"),
    "rmmod": _always("destructive", "unloads kernel modules"),
    "insmod": _always("write", "loads a kernel module"),
    "lvremove": _always("destructive", "deletes logical volumes"),
    "vgremove": _always("destructive", "deletes volume groups"),
    "pvremove": _always("destructive", "wipes physical volume labels"),
    "lvreduce": _always("destructive", "shrinks a volume, cutting off data"),
    "lvcreate": _always("write", "creates a logical volume"),
    "lvextend": _always("write", "grows a logical volume"),
    "lvresize": _always("destructive", "may shrink a volume, cutting off data"),
    **{n: _always("read", "only lists volumes") for n in _LVM_READ},
    "zfs": table("zfs", {"list", "get", "help", "diff", "holds"},
                 {"destroy", "rollback", "unmount", "umount"}, what="datasets"),
    "zpool": table("zpool", {"list", "status", "get", "iostat", "history", "help"},
                   {"destroy", "labelclear", "offline", "export", "detach", "remove", "clear"},
                   what="storage pools"),
    "btrfs": lambda c: destructive("btrfs … delete removes subvolumes or devices")
    if "delete" in c.args or "remove" in c.args else write("btrfs changes filesystems")
    if any(a in ("create", "add", "balance", "resize", "set", "defrag") for a in c.args)
    else read("btrfs only shows filesystems"),
    "mdadm": lambda c: read("mdadm --detail only reads")
    if any(a in ("--detail", "-D", "--examine", "-E", "--query", "-Q") for a in c.args)
    else destructive("mdadm changes RAID arrays (--stop, --zero-superblock, --remove…)"),
    "cryptsetup": table("cryptsetup", {"status", "luksDump", "isLuks", "luksUUID", "benchmark"},
                        {"luksFormat", "erase", "luksErase", "luksKillSlot", "luksRemoveKey",
                         "close", "reencrypt"}, what="encrypted volumes"),
    "timedatectl": table("timedatectl", {"status", "show", "list-timezones",
                                         "timesync-status", "show-timesync"}, set(),
                         what="clock settings"),
    "hostnamectl": table("hostnamectl", {"status", "hostname"}, set(), what="host names"),
    "loginctl": table("loginctl", {"list-sessions", "list-users", "list-seats", "show-session",
                                   "show-user", "session-status", "user-status"},
                      {"terminate-session", "terminate-user", "kill-session", "kill-user",
                       "disable-linger"}, what="login sessions"),
    "launchctl": table("launchctl", {"list", "print", "blame", "help"},
                       {"stop", "unload", "remove", "bootout", "disable", "kill"},
                       what="launchd services"),
    "atq": _always("read", "only lists jobs"), "atrm": _always("write", "removes queued jobs"),
    "update-grub": _always("write", "rewrites the boot configuration"),
    "grub-install": _always("destructive", "rewrites the boot loader"),
    "efibootmgr": lambda c: read("efibootmgr only lists boot entries") if not c.args
    or c.args == ("-v",) else destructive("efibootmgr changes firmware boot entries"),
}  # fmt: skip
