"""The client's settings: the ``TOWER_*`` knobs, and a mirror of
:func:`towerctl.config.resolve` (``role="agent"``) that imports neither
platformdirs nor the ``towerctl`` package (a test compares the two)."""

from __future__ import annotations

import os
import sys

from .wire import Refused

CONNECT_TIMEOUT_S = 3.0
#: Seconds a client waits for a daemon it started to listen (``TOWER_SHIMD_START_TIMEOUT``).
START_TIMEOUT_S = 10.0
NO_DAEMON_ENV = "TOWER_NO_DAEMON"
IDLE_ENV = "TOWER_SHIMD_IDLE"
RUNTIME_DIR_ENV = "TOWER_RUNTIME_DIR"
CONFIG_KEYS = frozenset(
    {"url", "token", "agent", "env", "db", "theme", "operator_token", "agent_token", "hub_key"}
)
DEFAULT_URL = "ws://127.0.0.1:7340"


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


def start_timeout() -> float:
    try:
        return float(os.environ.get("TOWER_SHIMD_START_TIMEOUT") or START_TIMEOUT_S)
    except ValueError:
        return START_TIMEOUT_S


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


def username() -> str:
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
        "agent": pick(agent, "TOWER_AGENT", "agent") or default_agent or f"{username()}-exec",
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
