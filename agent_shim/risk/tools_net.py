"""Network clients: HTTP requests, remote shells and file transfer.

``ssh host CMD`` is judged by CMD (the remote shell runs it, so it is classified as
shell text) and is at least a write because it acts on another machine; without a
command it is an interactive shell nobody can see into. HTTP is judged by method,
and by a URL that names a destructive action (``POST …/delete``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Final

from agent_shim.risk.model import (
    Assessment,
    Call,
    Handler,
    Word,
    at_least,
    clip,
    combine,
    destructive,
    is_dynamic,
    read,
    wordset,
    write,
)
from agent_shim.risk.opts import getopt
from agent_shim.risk.paths import write_to
from agent_shim.risk.verbs import DESTRUCTIVE_VERBS

READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "CONNECT", "COPY", "MKCOL", "LOCK",
                                  "UNLOCK", "PROPPATCH", "MOVE", "LINK", "UNLINK"})
_URL_WORDS: Final = re.compile(r"[/?&=._\-:;,+]+")


def http_verdict(method: str, url: str, tool: str = "HTTP") -> Assessment:
    """Judge an HTTP call by its method, then by what its URL says it does."""
    m = method.upper()
    path = url.split("://", 1)[-1]
    path = path.split("/", 1)[1] if "/" in path else ""
    words = {w.lower() for w in _URL_WORDS.split(path) if w}
    hit = next((w for w in sorted(words) if w in DESTRUCTIVE_VERBS), None)
    if m == "DELETE" or m == "PURGE":
        return destructive(f"{tool} {m} deletes a remote resource")
    if hit:
        text = f"{tool} {m} {clip(url, 50)}: the URL names a destructive action ({hit})"
        return write(text + "; some APIs act on GET") if m in READ_METHODS else destructive(text)
    if m in READ_METHODS:
        return read(f"{tool} {m} only reads")
    if m in WRITE_METHODS:
        return write(f"{tool} {m} changes a remote resource")
    return write(f"{tool} {m or 'request'} with unknown method; assumed write")


_RISKY_SSH_OPTS: Final = re.compile(
    r"(proxycommand|localcommand|permitlocalcommand|remotecommand|knownhostscommand)", re.I
)


def safe_ssh_command(value: str) -> bool:
    """True for an ``ssh …`` transport (GIT_SSH_COMMAND, rsync -e) that runs nothing else."""
    if is_dynamic(value) or re.search(r"[;|&$`()<>]", value):
        return False
    words = value.split()
    return bool(words) and posixpath.basename(words[0]) == "ssh" and not _RISKY_SSH_OPTS.search(
        value)


def ssh(call: Call) -> Assessment:
    o = getopt(call.args, "BbcDEeFIiJLlmOoPpQRSWw", stop_at_positional=True)
    parts: list[Assessment] = []
    for opt in o.all("o"):
        if _RISKY_SSH_OPTS.search(opt):
            inner = opt.split("=", 1)[1] if "=" in opt else opt
            parts.append(write(f"ssh -o {clip(opt, 40)} runs a local command"))
            parts.append(call.shell(inner))
    host = o.pos[0] if o.pos else ""
    words = o.rest
    if not host:
        return combine(parts) if parts else read("ssh without a host only prints usage")
    if words:
        text = " ".join(words)
        inner_text: str = Word(text) if any(map(is_dynamic, words)) else text
        remote = call.shell(inner_text)
        return combine([*parts, write(f"ssh runs a command on {host}"), remote])
    if o.has("N", "W", "O"):
        return combine([*parts, write(f"ssh -N/-W/-O to {host} forwards or controls a link")])
    if call.stdin.source != "none":
        if call.stdin.visible and call.stdin.text is not None:
            remote = at_least(call.shell(call.stdin.text), "write", f"ssh runs stdin on {host}")
            return combine([*parts, remote])
        return destructive(f"ssh {host} runs a script piped from {call.stdin.origin or 'stdin'}; "
                           "its content is not visible")
    return destructive(f"ssh {host} opens an interactive shell; what runs is not visible")


def scp(call: Call) -> Assessment:
    o = getopt(call.args, "cFiJlPoSDX")
    prog = o.value("S")
    if prog and not safe_ssh_command(prog):
        return destructive(f"{call.name} -S {prog} runs another program")
    if any(_RISKY_SSH_OPTS.search(x) for x in o.all("o")):
        return destructive(f"{call.name} -o ProxyCommand runs a local command")
    if call.name == "sftp":
        if o.has("b"):
            return destructive("sftp -b runs a batch file whose content is not visible")
        return destructive("sftp opens an interactive session; what runs is not visible")
    dest = o.args[-1] if o.args else ""
    hit = write_to(call.name, dest) if dest and ":" not in dest else None
    return hit if hit and hit.risk == "destructive" else write(f"{call.name} copies files")


_RSYNC_VALUES: Final = wordset("""rsh rsync-path filter exclude include exclude-from
include-from files-from temp-dir backup-dir suffix chmod chown usermap groupmap log-file
password-file bwlimit block-size max-size min-size partial-dir compare-dest copy-dest link-dest
remote-option out-format timeout contimeout port sockopts info debug iconv checksum-choice
compress-choice compress-level skip-compress modify-window outbuf stop-after stop-at
max-delete""")


def rsync(call: Call) -> Assessment:
    o = getopt(call.args, "eBfTM", _RSYNC_VALUES)
    if o.has("n", "dry-run"):
        return read("rsync -n is a dry run")
    parts: list[Assessment] = []
    for shell_opt in (*o.all("e", "rsh"), *o.all("rsync-path")):
        if safe_ssh_command(shell_opt):
            continue
        note = f"rsync -e/--rsync-path {clip(shell_opt, 40)} runs another program"
        parts.append(at_least(call.shell(shell_opt), "write", note))
    deleting = sorted(f for f in o.flags if f.startswith("del") or f == "remove-source-files")
    if deleting:
        parts.append(destructive(f"rsync --{deleting[0]} deletes files"))
    dest = o.args[-1] if o.args else ""
    hit = write_to("rsync", dest) if dest and ":" not in dest else None
    if hit and hit.risk == "destructive":
        parts.append(hit)
    parts.append(write("rsync copies files (may overwrite the destination)"))
    return combine(parts)


_CURL_VALUES: Final = "XdFToHuAebcDKxmrwECyYzUQt"
_CURL_LONG: Final = wordset("""request data data-raw data-binary data-urlencode data-ascii json
form form-string upload-file output header user user-agent referer cookie cookie-jar dump-header
config proxy max-time connect-timeout range write-out cert cacert key resolve retry continue-at
limit-rate max-filesize proxy-user unix-socket url quote interface output-dir trace trace-ascii
stderr hsts alt-svc etag-save libcurl telnet-option variable expand-url""")
_CURL_FILES: Final = ("o", "output", "D", "dump-header", "c", "cookie-jar", "trace",
                      "trace-ascii", "stderr", "libcurl", "etag-save")


def curl(call: Call) -> Assessment:
    o = getopt(call.args, _CURL_VALUES, _CURL_LONG)
    method = (o.value("X", "request") or "").upper()
    if not method:
        if o.has("T", "upload-file"):
            method = "PUT"
        elif o.has("d", "data", "data-raw", "data-binary", "data-urlencode", "data-ascii",
                   "json", "F", "form", "form-string") and not o.has("G", "get"):
            method = "POST"
        elif o.has("I", "head"):
            method = "HEAD"
        else:
            method = "GET"
    urls = o.pos + o.all("url")
    parts = [http_verdict(method, u, "curl") for u in urls] or [http_verdict(method, "", "curl")]
    for q in o.all("Q", "quote"):
        risky = q.lstrip("-*+").split(" ", 1)[0].upper() in ("DELE", "RMD", "RM", "RMDIR")
        parts.append(destructive("curl -Q sends FTP delete commands") if risky
                     else write("curl -Q sends FTP commands"))
    for f in o.all(*_CURL_FILES):
        hit = write_to("curl -o", f)
        if hit:
            parts.append(hit)
    if o.has("O", "remote-name", "remote-name-all", "J"):
        parts.append(write("curl -O saves the download to a file"))
    if o.has("K", "config"):
        parts.append(write("curl -K reads options from a file whose content is not visible"))
    return combine(parts)


def wget(call: Call) -> Assessment:
    o = getopt(call.args, "OoaPiBeUTtwQlADRIX",
               {"output-document", "output-file", "method", "post-data", "post-file",
                "body-data", "body-file", "directory-prefix", "input-file", "header", "user",
                "password", "execute", "level", "accept", "reject", "user-agent", "tries",
                "timeout", "wait", "quota", "limit-rate", "append-output"})
    method = (o.value("method") or ("POST" if o.has("post-data", "post-file") else "GET"))
    urls = o.pos or [""]
    parts = [http_verdict(method, u, "wget") for u in urls]
    if o.has("spider"):
        return combine(parts)
    out = o.value("O", "output-document")
    if out is None:
        parts.append(write("wget saves the download to a file"))
    else:
        hit = write_to("wget -O", out)
        if hit:
            parts.append(hit)
    if o.has("e", "execute"):
        parts.append(write("wget -e runs wgetrc commands"))
    return combine(parts)


def httpie(call: Call) -> Assessment:
    o = getopt(call.args, "abAvpo", {"auth", "auth-type", "print", "output", "session",
                                     "session-read-only", "verify", "cert", "cert-key",
                                     "proxy", "timeout", "pretty", "style", "format-options"})
    pos = list(o.args)
    method = ""
    if pos and pos[0].upper() in READ_METHODS | WRITE_METHODS | {"DELETE", "PURGE"}:
        method = pos.pop(0).upper()
    url = pos.pop(0) if pos else ""
    if not method:
        data = any(re.search(r"(:=|==|=|@)", p) and "==" not in p for p in pos)
        method = "POST" if data or o.has("f", "form", "raw") else "GET"
    if o.has("offline"):
        return read(f"{call.name} --offline only prints the request")
    result = http_verdict(method, url, call.name)
    if o.has("d", "download") or o.value("o", "output"):
        result = combine([result, write(f"{call.name} --download saves to a file")])
    return result


def netcat(call: Call) -> Assessment:
    o = getopt(call.args, "ecpsiwqxXOTIsS", {"exec", "sh-exec", "lua-exec", "source", "wait",
                                             "proxy", "proxy-type"})
    if o.has("e", "c", "exec", "sh-exec", "lua-exec"):
        return destructive(f"{call.name} -e runs a program wired to the network")
    if o.has("z"):
        return read(f"{call.name} -z only scans ports")
    if o.has("l", "listen"):
        return write(f"{call.name} -l listens for connections")
    return write(f"{call.name} sends data over the network")


def socat(call: Call) -> Assessment:
    if any(a.upper().startswith(("EXEC:", "SYSTEM:")) for a in call.args):
        return destructive("socat EXEC:/SYSTEM: runs a program wired to the network")
    return write("socat relays data over the network")


def lftp(call: Call) -> Assessment:
    o = getopt(call.args, "cfepuU", {"command", "file"})
    cmds = " ".join(o.all("c", "command"))
    if o.has("f", "file") or not cmds:
        return destructive("lftp runs commands that are not visible")
    if re.search(r"\b(rm|rmdir|mrm|mirror\s+-R.*--delete|glob\s+rm)\b", cmds):
        return destructive("lftp rm deletes remote files")
    return write("lftp transfers files")


HANDLERS: Final[dict[str, Handler]] = {
    "ssh": ssh, "scp": scp, "sftp": scp, "rsync": rsync, "curl": curl, "wget": wget,
    "http": httpie, "https": httpie, "xh": httpie, "xhs": httpie, "nc": netcat,
    "ncat": netcat, "netcat": netcat, "socat": socat, "lftp": lftp,
    "telnet": lambda c: write("telnet sends data over the network"),
    "ftp": lambda c: destructive("ftp opens an interactive session; what runs is not visible"),
    "mosh": ssh,
}  # fmt: skip
OWN_HELP: Final = frozenset({"ssh", "mosh"})
