"""The fast client of the local shim daemon: what a gate wrapper runs.

Standard library only, and no import of the ``towerctl`` package: the
wrappers run this file by path as ``python -I -S …/fastclient.py gate DIR
MODE TOOL ARGS…`` so that a gated ``kubectl get`` costs an interpreter start
(~15 ms) and one round trip to the daemon instead of importing pydantic,
websockets and click (~0.45 s) and opening a new tower session.

What it does for one invocation is what :mod:`towerctl.integrations.gate_wrapper`
does (that module stays as the in-process slow path, used with
``TOWER_NO_DAEMON=1``): drop the gate's directory from PATH, find the real
tool, resolve the ``TOWER_*`` settings like :func:`towerctl.config.resolve`,
ask the daemon (starting it when none runs), then ``execve`` the real tool, or
in wait mode run it, wait and report its exit code.

Everything that goes wrong fails closed: exit 126 with the reason on stderr,
and the real tool never starts.

Wire protocol (one JSON object per line, each way, UTF-8, at most
:data:`MAX_LINE` bytes): the client sends ``{"v": 1, "op": "admit", …}``; the
daemon answers with any number of ``{"type": "note"}`` lines (shown on
stderr) and then one ``{"type": "verdict", "verdict": "allow"|"deny",
"message", "action_id"}``. In wait mode the client later sends
``{"op": "report", "exit_code": N}`` and gets ``{"type": "reported", "ok"}``;
meanwhile the daemon may send ``{"type": "kill"}`` (an operator killed the
session: terminate the tool). Malformed input gets ``{"type": "error"}``.
"""

from __future__ import annotations

import _json
import _socket
import os
import sys

PROTOCOL = 1
MAX_LINE = 256 * 1024
EXIT_DENIED = 126
EXIT_NOT_FOUND = 127
MARKER = "# towerctl-gate-wrapper v1"
CONNECT_TIMEOUT_S = 3.0
#: Seconds a client waits for a daemon it started to listen (``TOWER_SHIMD_START_TIMEOUT``).
START_TIMEOUT_S = 10.0
NO_DAEMON_ENV = "TOWER_NO_DAEMON"
IDLE_ENV = "TOWER_SHIMD_IDLE"
RUNTIME_DIR_ENV = "TOWER_RUNTIME_DIR"
#: Longest unix socket path we use (``sun_path`` is 104 to 108 bytes with the NUL).
MAX_SOCKET_PATH = 100
CONFIG_KEYS = frozenset(
    {"url", "token", "agent", "env", "db", "theme", "operator_token", "agent_token", "hub_key"}
)
DEFAULT_URL = "ws://127.0.0.1:7340"

# Mirrors of towerctl.integrations.gate_wrapper (a test keeps them equal).
KINDS: dict[str, str] = {
    **dict.fromkeys(("kubectl", "helm", "kustomize", "oc", "kubectl-argo-rollouts", "argocd", "flux"), "k8s"),
    **dict.fromkeys(
        (
            "terraform",
            "tofu",
            "terragrunt",
            "pulumi",
            "aws",
            "gcloud",
            "gsutil",
            "bq",
            "az",
            "eksctl",
            "doctl",
            "cdk",
            "sam",
            "ansible-playbook",
        ),
        "cloud",
    ),
}
TARGET_VARS: dict[str, tuple[str, ...]] = {
    "k8s": ("KUBECONFIG", "HELM_KUBECONTEXT", "HELM_NAMESPACE"),
    "aws": ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "gcloud": ("CLOUDSDK_CORE_PROJECT", "CLOUDSDK_ACTIVE_CONFIG_NAME"),
    "az": ("AZURE_SUBSCRIPTION_ID", "AZURE_CONFIG_DIR"),
    "terraform": ("TF_WORKSPACE", "AWS_PROFILE"),
    "tofu": ("TF_WORKSPACE", "AWS_PROFILE"),
    "pulumi": ("PULUMI_STACK", "AWS_PROFILE"),
    "psql": ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"),
    "mysql": ("MYSQL_HOST", "MYSQL_TCP_PORT"),
}
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TOOL_CHARS = _ALNUM | frozenset("._+-")
_SHELL_SAFE = _ALNUM | frozenset("_@%+=:,./-")


def plain_tool_name(tool: str) -> bool:
    """``^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`` without importing ``re``."""
    return 0 < len(tool) <= 128 and tool[0] in _ALNUM and all(c in _TOOL_CHARS for c in tool)


def quote(arg: str) -> str:
    """:func:`shlex.quote` without importing ``re`` (a test keeps them equal)."""
    if not arg:
        return "''"
    if all(c in _SHELL_SAFE for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def join(argv: list[str]) -> str:
    """:func:`shlex.join`."""
    return " ".join(quote(a) for a in argv)


# JSON through the C accelerator directly: the ``json`` package imports ``re``
# and ``enum``, which cost more than everything else this client does.


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]


def loads(text: str) -> object:
    text = text.strip()
    try:
        obj, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return obj


def dumps(obj: object) -> str:
    """Compact JSON for str, int, float, bool, None, lists and str-keyed dicts."""
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("non-finite float")
        return float.__repr__(obj)
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        parts = []
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("keys must be strings")
            parts.append(_json.encode_basestring_ascii(k) + ":" + dumps(v))
        return "{" + ",".join(parts) + "}"
    raise TypeError(f"cannot encode {type(obj).__name__}")


class Refused(Exception):
    """Fail closed with this reason."""


def _say(prefix: str, message: str) -> None:
    sys.stderr.write(f"{prefix}: {message}\n")
    sys.stderr.flush()


def _truthy(value: str | None) -> bool:
    return bool(value) and str(value).strip().lower() not in ("0", "false", "no", "off")


def no_daemon() -> bool:
    return _truthy(os.environ.get(NO_DAEMON_ENV))


def connect_timeout() -> float:
    try:
        value = float(os.environ.get("TOWER_CONNECT_TIMEOUT") or CONNECT_TIMEOUT_S)
    except ValueError:
        return CONNECT_TIMEOUT_S
    return min(120.0, max(0.1, value)) if value == value else CONNECT_TIMEOUT_S


# ---------------------------------------------------------------- settings
# A mirror of towerctl.config.resolve(role="agent") that does not import
# platformdirs or the towerctl package (a test compares the two).


def _user_dir(xdg_var: str, fallback: str) -> str:
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Application Support"), "towerctl")
    base = os.environ.get(xdg_var, "").strip() or os.path.expanduser(fallback)
    return os.path.join(base, "towerctl")


def data_dir() -> str:
    return os.environ.get("TOWER_HOME") or _user_dir("XDG_DATA_HOME", "~/.local/share")


def config_path() -> str:
    explicit = os.environ.get("TOWER_CONFIG")
    if explicit:
        return explicit
    home = os.environ.get("TOWER_HOME")
    if home:
        return os.path.join(home, "config.toml")
    return os.path.join(_user_dir("XDG_CONFIG_HOME", "~/.config"), "config.toml")


def load_file() -> dict[str, str]:
    path = config_path()
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise Refused(f"config: {path}: {exc.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise Refused(f"config: {path}: {exc}") from None
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise Refused(f"config: {path}: unknown keys {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise Refused(f"config: {path}: {bad} must be strings")
    return {k: str(v) for k, v in data.items()}


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _username() -> str:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        user = os.environ.get(name)
        if user:
            return user
    import pwd

    return pwd.getpwuid(os.getuid())[0]


def resolve(
    *,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    env: str | None = None,
    default_agent: str = "",
) -> dict[str, str]:
    """Flags, then ``TOWER_*`` variables, then the config file, then the files
    ``serve``/``up`` wrote: ``url``, ``token``, ``agent``, ``env``, ``hub_key``, ``ca``."""
    file = load_file()

    def pick(flag: str | None, var: str, key: str) -> str | None:
        if flag:
            return flag
        if os.environ.get(var):
            return os.environ[var]
        return file.get(key)

    home = data_dir()
    found_url = pick(url, "TOWER_URL", "url") or _read_text(os.path.join(home, "hub.url"))
    found_token = (
        pick(token, "TOWER_TOKEN", "token")
        or file.get("agent_token")
        or _read_text(os.path.join(home, "tokens", "agent.token"))
    )
    return {
        "url": found_url or DEFAULT_URL,
        "token": found_token or "",
        "agent": pick(agent, "TOWER_AGENT", "agent") or default_agent or f"{_username()}-exec",
        "env": pick(env, "TOWER_ENV", "env") or "dev",
        "hub_key": resolve_hub_key(file.get("hub_key")),
        "ca": os.environ.get("TOWER_CA", ""),
    }


def resolve_hub_key(from_file: str | None) -> str:
    for value in (os.environ.get("TOWER_HUB_KEY"), from_file):
        if value:
            return value.strip()
    found: list[tuple[float, str]] = []
    home = data_dir()
    for path in (os.path.join(home, "hub-key.pub"), os.path.join(home, "tower.db.signing-key.pub")):
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        text = _read_text(path)
        if text:
            found.append((mtime, text))
    return max(found)[1] if found else ""


# ----------------------------------------------------------- the socket


def private_dir() -> str:
    """Mirror of :func:`towerctl.integrations.runtime.private_dir`: 0700, ours, not a symlink."""
    import stat

    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        path = explicit
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg and os.path.isdir(xdg):
            root = xdg
        else:
            # tempfile.gettempdir() without importing tempfile (random, shutil …).
            root = "/tmp"
            for var in ("TMPDIR", "TEMP", "TMP"):
                candidate = os.environ.get(var)
                if candidate and os.path.isdir(candidate):
                    root = candidate
                    break
        path = os.path.join(root, f"towerctl-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise Refused(f"cannot use state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Refused(f"state directory {path} must be a directory owned by uid {os.getuid()} with mode 0700")
    return path


def install_key() -> str:
    """Names this installation: one daemon per user *and* per towerctl install."""
    import binascii

    here = os.path.dirname(os.path.realpath(__file__))
    return format(binascii.crc32(here.encode("utf-8", "surrogateescape")), "08x")


def socket_path(directory: str) -> str:
    path = os.path.join(directory, f"shimd-{install_key()}.sock")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_SOCKET_PATH:
        raise Refused(f"socket path {path} is too long; set {RUNTIME_DIR_ENV} to a shorter directory")
    return path


class Conn:
    """One line-delimited JSON conversation with the daemon."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.received = 0

    def send(self, obj: dict[str, object]) -> None:
        self.sock.sendall(dumps(obj).encode("ascii") + b"\n")

    def recv(self) -> dict[str, object]:
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise Refused("the local shim daemon sent an oversized reply")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self.received += 1
        try:
            msg = loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            raise Refused("the local shim daemon sent a malformed reply") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise Refused("the local shim daemon sent a malformed reply")
        return msg

    def close(self) -> None:
        self.sock.close()


def _try_connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def daemon_env() -> dict[str, str]:
    """What the daemon inherits: locale, home, runtime dir, CA settings; never tokens."""
    keep = {"PATH", "HOME", "LANG", "TMPDIR", "XDG_RUNTIME_DIR", RUNTIME_DIR_ENV, IDLE_ENV}
    keep |= {"SSL_CERT_FILE", "SSL_CERT_DIR", "TZ", "LOGNAME", "USER"}
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}


def _spawn(directory: str, path: str) -> None:
    """Start ``python -I -m towerctl.localshim.daemon`` detached (double fork, own session)."""
    argv = [sys.executable, "-I", "-m", "towerctl.localshim.daemon", "--socket", path]
    env = daemon_env()
    log = os.path.join(directory, f"shimd-{install_key()}.log")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.closerange(3, 256)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def open_daemon(start_timeout: float) -> Conn:
    """Connect to this user's daemon, starting it (once, under a lock) if none listens."""
    import time

    directory = private_dir()
    path = socket_path(directory)
    sock = _try_connect(path)
    if sock is not None:
        return Conn(sock)
    import fcntl

    deadline = time.monotonic() + start_timeout
    lock = os.open(
        os.path.join(directory, f"shimd-{install_key()}.start.lock"),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass  # someone else is starting it: use theirs once it listens
            sock = _try_connect(path)
            if sock is not None:
                return Conn(sock)
            if time.monotonic() >= deadline:
                raise Refused(f"the local shim daemon did not start within {start_timeout:g}s")
            time.sleep(0.005)
        sock = _try_connect(path)
        if sock is None:
            _spawn(directory, path)
            while sock is None:
                if time.monotonic() >= deadline:
                    log = os.path.join(directory, f"shimd-{install_key()}.log")
                    raise Refused(
                        f"the local shim daemon did not start within {start_timeout:g}s (see {log})"
                    )
                time.sleep(0.005)
                sock = _try_connect(path)
        return Conn(sock)
    finally:
        os.close(lock)


def converse(request: dict[str, object], note: str) -> tuple[Conn, dict[str, object]]:
    """Send ``request``; print notes; return the connection and the verdict."""
    try:
        start_timeout = float(os.environ.get("TOWER_SHIMD_START_TIMEOUT") or START_TIMEOUT_S)
    except ValueError:
        start_timeout = START_TIMEOUT_S
    for attempt in (1, 2):
        conn = open_daemon(start_timeout)
        try:
            conn.send(request)
            while True:
                msg = conn.recv()
                kind = msg["type"]
                if kind == "note":
                    _say(note, str(msg.get("message", ""))[:2000])
                elif kind == "verdict":
                    return conn, msg
                elif kind == "error":
                    raise Refused(f"the local shim daemon refused the request: {msg.get('message', '')}")
        except (EOFError, ConnectionError, BrokenPipeError) as exc:
            conn.close()
            # A daemon that was exiting (idle) as we connected: once more, with a new one.
            if attempt == 1 and conn.received == 0:
                continue
            raise Refused(f"the local shim daemon went away ({type(exc).__name__})") from None
        except BaseException:
            conn.close()
            raise
    raise Refused("unreachable")  # pragma: no cover


# ------------------------------------------------------------------ gates


def kind_for(tool: str) -> str:
    return KINDS.get(tool, "shell")


def target_for(tool: str, environ: dict[str, str] | os._Environ[str]) -> str:
    names = TARGET_VARS.get(tool) or (TARGET_VARS["k8s"] if kind_for(tool) == "k8s" else ())
    return " ".join(f"{n}={environ[n]}" for n in names if environ.get(n))[:512]


def is_wrapper(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return MARKER.encode() in head


def find_real(tool: str, gate_dir: str, path_env: str) -> tuple[str | None, str, bool]:
    """(real binary, PATH without the gate's directory, found only wrappers)."""
    own = os.path.realpath(gate_dir) if gate_dir else None
    kept: list[str] = []
    saw_wrapper = False
    for entry in path_env.split(os.pathsep):
        if own is not None and os.path.realpath(entry or ".") == own:
            saw_wrapper = True
            continue
        kept.append(entry)
    for entry in kept:
        candidate = os.path.join(entry or ".", tool)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if is_wrapper(candidate):
                saw_wrapper = True
                continue
            return os.path.abspath(candidate), os.pathsep.join(kept), False
    return None, os.pathsep.join(kept), saw_wrapper


def _reset_signals() -> None:
    import signal

    # Python ignores SIGPIPE and SIGXFSZ; the tool must get the defaults back.
    for name in ("SIGPIPE", "SIGXFSZ"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:  # noqa: SIM105 - contextlib is one more import on the hot path
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass


def _execve(real: str, argv: list[str], env: dict[str, str], prefix: str) -> int:
    _reset_signals()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(real, argv, env)
    except OSError as exc:
        _say(prefix, f"cannot run {real}: {exc.strerror}")
    return EXIT_NOT_FOUND


def run_and_report(
    conn: Conn,
    argv: list[str],
    env: dict[str, str] | os._Environ[str],
    prefix: str,
    *,
    real: str | None = None,
    forward_sigint: bool = False,
) -> int:
    """Run the tool (``real``, else ``argv[0]`` looked up on PATH), forward
    signals, terminate it if an operator kills the session, report its exit code.

    One thread, no ``threading``: the child's exit arrives as SIGCHLD on a
    self-pipe, polled together with the daemon's socket.
    """
    import select
    import signal

    child: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def on_child(_signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib is one more import on the hot path
            os.write(wake_w, b"x")
        except OSError:
            pass

    def forward(signum: int, _frame: object) -> None:
        if child:
            os.kill(child[0], signum)

    signal.signal(signal.SIGCHLD, on_child)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    # A gated tool got the terminal's Ctrl-C itself (same process group) and
    # must not get it twice; ``towerctl exec`` forwards it like asyncio did.
    # Python-level handlers (not SIG_IGN), so that the tool starts with the defaults.
    signal.signal(signal.SIGINT, forward if forward_sigint else (lambda _s, _f: None))
    sys.stdout.flush()
    sys.stderr.flush()
    sigdef = (signal.SIGPIPE, signal.SIGXFSZ)
    try:
        if real is not None:
            pid = os.posix_spawn(real, argv, env, setsigdef=sigdef)
        else:
            pid = os.posix_spawnp(argv[0], argv, env, setsigdef=sigdef)
    except OSError as exc:
        what = real or argv[0]
        conn.send(
            {"op": "report", "exit_code": EXIT_NOT_FOUND, "error": f"cannot run {what}: {exc.strerror}"}
        )
        _say(prefix, f"cannot run {what}: {exc.strerror}")
        return EXIT_NOT_FOUND
    child.append(pid)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    sock_fd = conn.sock.fileno()
    poller.register(sock_fd, select.POLLIN)
    status: int | None = None
    while status is None:
        done, status_now = os.waitpid(pid, os.WNOHANG)
        if done:
            status = status_now
            break
        for fd, _events in poller.poll():
            if fd == wake_r:
                os.read(wake_r, 512)
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError, Refused):
                poller.unregister(sock_fd)  # the daemon is gone: the report will fail
                continue
            if msg["type"] == "kill":
                _say(prefix, f"session killed by an operator: {msg.get('message', '')}; terminating")
                os.kill(pid, signal.SIGTERM)
    code = os.waitstatus_to_exitcode(status)
    ok = False
    try:
        conn.send({"op": "report", "exit_code": code})
        conn.sock.settimeout(connect_timeout() + 5.0)
        while True:
            msg = conn.recv()
            if msg["type"] == "reported":
                ok = msg.get("ok") is True
                break
    except (EOFError, OSError, Refused):
        pass
    if not ok:
        _say(prefix, "warning: the outcome could not be reported to the tower")
    return code if code >= 0 else 128 - code


def gate_main(args: list[str]) -> int:
    """``GATE_DIR exec|wait TOOL [ARGS…]``: gate one invocation."""
    prefix = "towerctl gate"
    if len(args) < 3 or args[1] not in ("exec", "wait"):
        _say(prefix, "usage: fastclient.py gate GATE_DIR exec|wait TOOL [ARGS...]")
        return EXIT_DENIED
    gate_dir, mode, tool, rest = args[0], args[1], args[2], args[3:]
    if no_daemon():
        slow = [sys.executable, "-E", "-P", "-m", "towerctl.integrations.gate_wrapper", *args]
        try:
            os.execv(sys.executable, slow)
        except OSError as exc:
            _say(prefix, f"{tool}: denied: cannot start the gate ({exc.strerror}); failing closed")
            return EXIT_DENIED
    if not plain_tool_name(tool):
        _say(prefix, f"{tool!r} is not a plain command name")
        return EXIT_DENIED
    real, path, only_wrappers = find_real(tool, gate_dir, os.environ.get("PATH", os.defpath))
    if real is None:
        if only_wrappers:
            _say(
                prefix,
                f"{tool}: refused: the only {tool} on PATH is the towerctl wrapper itself "
                f"(install the real {tool} or put its directory after {gate_dir or 'the gate directory'})",
            )
            return EXIT_DENIED
        _say(prefix, f"{tool}: command not found on PATH")
        return EXIT_NOT_FOUND
    argv = [tool, *rest]
    try:
        settings = resolve(default_agent=f"{_username()}-gate")
        if not settings["token"]:
            raise Refused("no agent token (set TOWER_TOKEN or agent_token in the towerctl config)")
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        request: dict[str, object] = {
            "v": PROTOCOL,
            "op": "admit",
            "mode": mode,
            **settings,
            "connect_timeout": connect_timeout(),
            "kind": kind_for(tool),
            "command": join(argv),
            "argv": argv,
            "shape": "argv",
            "target": target_for(tool, os.environ),
            "cwd": cwd[:4096],
        }
        conn, verdict = converse(request, prefix)
    except Refused as exc:
        _say(prefix, f"{tool}: denied: {exc}; failing closed")
        return EXIT_DENIED
    except OSError as exc:
        _say(prefix, f"{tool}: denied: the local shim daemon failed ({exc}); failing closed")
        return EXIT_DENIED
    except KeyboardInterrupt:
        _say(prefix, f"{tool}: interrupted before it ran")
        return 130
    if verdict.get("verdict") != "allow":
        conn.close()
        _say(prefix, f"{tool}: {verdict.get('message') or 'denied'}")
        return EXIT_DENIED
    env = dict(os.environ)
    env["PATH"] = path
    if mode == "exec":
        conn.close()
        return _execve(real, argv, env, prefix)
    try:
        return run_and_report(conn, argv, env, prefix, real=real)
    finally:
        conn.close()


# ------------------------------------------------------------ towerctl exec

#: ``towerctl exec`` options (the click command's), by flag.
EXEC_OPTIONS = {
    "--env": "env",
    "--agent": "agent",
    "--url": "url",
    "--token": "token",
    "--reason": "reason",
    "--target": "target",
    "--rollback": "rollback",
    "--dry-run-file": "dry_run_file",
}
#: Mirror of towerctl.cli.exec_cmd._SHELL_CHARS (a test keeps them equal).
SHELL_CHARS = frozenset(" \t\n|&;<>()$`\\\"'*?[]#~=%{}")


def parse_exec(args: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """``[OPTIONS] [--] ARGV…`` as the click command parses it, or None for
    anything else (``--help``, an unknown option, no ARGV): click then answers."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        flag, eq, value = arg.partition("=")
        if flag in EXEC_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            opts[EXEC_OPTIONS[flag]] = value
            i += 1
            continue
        if arg.startswith("-"):
            return None
        break
    argv = args[i:]
    return (opts, argv) if argv else None


def exec_command(argv: list[str]) -> tuple[str, list[str], str]:
    """The command text judged, the argv run, and the shape linking them
    (mirror of ``towerctl.cli.exec_cmd._as_action_command``)."""
    if len(argv) == 1 and any(c in SHELL_CHARS for c in argv[0]):
        return argv[0], ["/bin/sh", "-c", argv[0]], "sh"
    return join(argv), list(argv), "argv"


def exec_main(args: list[str]) -> int | None:
    """``towerctl exec`` through the daemon; None when click should handle ``args``."""
    parsed = parse_exec(args)
    if parsed is None:
        return None
    opts, argv = parsed
    prefix = "towerctl"
    dry_run = ""
    path = opts.get("dry_run_file")
    if path is not None:
        try:
            if path == "-":
                dry_run = sys.stdin.read(65536)
            else:
                with open(path, encoding="utf-8") as fh:
                    dry_run = fh.read(65536)
        except (OSError, UnicodeDecodeError):
            return None  # click reports the bad file its own way
    try:
        settings = resolve(
            url=opts.get("url"), token=opts.get("token"), agent=opts.get("agent"), env=opts.get("env")
        )
    except Refused as exc:
        _say(prefix, str(exc))
        return 2
    if not settings["token"]:
        _say(prefix, "denied: no agent token (set TOWER_TOKEN or pass --token)")
        return EXIT_DENIED
    command, run_argv, shape = exec_command(argv)
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    request: dict[str, object] = {
        "v": PROTOCOL,
        "op": "admit",
        "mode": "wait",
        **settings,
        "connect_timeout": connect_timeout(),
        "kind": "shell",
        "command": command,
        "argv": run_argv,
        "shape": shape,
        "target": opts.get("target", ""),
        "cwd": cwd,
        "reason": opts.get("reason", ""),
        "rollback": opts.get("rollback", ""),
        "dry_run": dry_run,
    }
    try:
        conn, verdict = converse(request, prefix)
    except Refused as exc:
        _say(prefix, f"denied: {exc}; failing closed")
        return EXIT_DENIED
    except OSError as exc:
        _say(prefix, f"denied: the local shim daemon failed ({exc}); failing closed")
        return EXIT_DENIED
    except KeyboardInterrupt:
        _say(prefix, "interrupted before it ran")
        return 130
    try:
        if verdict.get("verdict") != "allow":
            _say(prefix, str(verdict.get("message") or "denied"))
            return EXIT_DENIED
        return run_and_report(conn, run_argv, os.environ, prefix, forward_sigint=True)
    finally:
        conn.close()


def leave(code: int) -> None:
    """Exit at once with ``code``: nothing is left to clean up, and skipping the
    interpreter's teardown saves a few ms on every call."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF if code >= 0 else 1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "gate":
        try:
            return gate_main(args[1:])
        except Exception as exc:  # fail closed on anything unforeseen
            _say("towerctl gate", f"denied: the gate failed ({type(exc).__name__}: {exc}); failing closed")
            return EXIT_DENIED
    _say("towerctl fastclient", "usage: fastclient.py gate GATE_DIR exec|wait TOOL [ARGS...]")
    return EXIT_DENIED


if __name__ == "__main__":
    leave(main())
