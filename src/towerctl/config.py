"""Where things live and how settings resolve: flags, then environment, then file.

``TOWER_HOME`` moves every default file (database, signing key, tokens) at
once, which is what tests and side-by-side installs need; otherwise the
platform's user data directory is used.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_PORT: Final = 7340
DEFAULT_URL: Final = f"ws://127.0.0.1:{DEFAULT_PORT}"
_CONFIG_KEYS: Final = frozenset(
    {"url", "token", "agent", "env", "db", "theme", "operator_token", "agent_token", "hub_key"}
)


class ConfigError(ValueError):
    pass


def data_dir() -> Path:
    home = os.environ.get("TOWER_HOME")
    if home:
        return Path(home)
    import platformdirs

    return Path(platformdirs.user_data_dir("towerctl", appauthor=False))


def config_path() -> Path:
    explicit = os.environ.get("TOWER_CONFIG")
    if explicit:
        return Path(explicit)
    home = os.environ.get("TOWER_HOME")
    if home:
        return Path(home) / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("towerctl", appauthor=False)) / "config.toml"


def default_db() -> Path:
    return data_dir() / "tower.db"


def default_key(db: Path) -> Path:
    """The signing key sits beside the database file but is never inside it."""
    return db.with_name(db.name + ".signing-key")


def token_file(role: str) -> Path:
    return data_dir() / "tokens" / f"{role}.token"


def url_file() -> Path:
    return data_dir() / "hub.url"


def public_key_file(key: Path) -> Path:
    """Where a hub publishes the public half of ``key`` (hex, mode 0644)."""
    return key.with_name(key.name + ".pub")


def hub_key_file() -> Path:
    """The hub public key that ``serve`` announces in the data dir, for shims
    started by ``exec`` to pin (like ``hub.url``)."""
    return data_dir() / "hub-key.pub"


def write_public(path: Path, text: str) -> None:
    """Replace ``path`` atomically with world-readable ``text`` (public data)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def load_file() -> dict[str, str]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{path}: {bad} must be strings")
    return {k: str(v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    token: str
    agent: str
    env: str
    #: The hub's public key to pin (hex or base64), "" when none was found.
    hub_key: str = ""


def resolve(
    *,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    env: str | None = None,
    role: str = "admin",
    hub_key: str | None = None,
) -> Settings:
    """Flags beat ``TOWER_*`` variables, which beat the config file, which beats defaults.

    With no token anywhere, the token file that ``serve``/``up`` wrote for
    ``role`` is used, so a local operator needs no set-up at all.
    """
    file = load_file()

    def pick(flag: str | None, var: str, key: str) -> str | None:
        if flag:
            return flag
        if os.environ.get(var):
            return os.environ[var]
        return file.get(key)

    found_url = pick(url, "TOWER_URL", "url")
    if not found_url and url_file().exists():
        found_url = url_file().read_text(encoding="utf-8").strip()
    found_token = pick(token, "TOWER_TOKEN", "token") or file.get(
        f"{'agent' if role == 'agent' else 'operator'}_token"
    )
    if not found_token and token_file(role).exists():
        found_token = token_file(role).read_text(encoding="utf-8").strip()
    import getpass

    default_agent = f"{getpass.getuser()}-exec"
    return Settings(
        url=found_url or DEFAULT_URL,
        token=found_token or "",
        agent=pick(agent, "TOWER_AGENT", "agent") or default_agent,
        env=pick(env, "TOWER_ENV", "env") or "dev",
        hub_key=resolve_hub_key(hub_key, file.get("hub_key")),
    )


def resolve_hub_key(flag: str | None = None, from_file: str | None = None) -> str:
    """Flag, then ``TOWER_HUB_KEY``, then the config file's ``hub_key``, then the
    key file ``serve`` wrote in the data dir or the one every hub writes beside
    its signing key (``up`` uses the default one), whichever was written last,
    like ``hub.url`` names the hub started last. "" when none exists: the shim
    then falls back to trust-on-first-use and says so."""
    for value in (flag, os.environ.get("TOWER_HUB_KEY"), from_file):
        if value:
            return value.strip()
    found: list[tuple[float, str]] = []
    for path in (hub_key_file(), public_key_file(default_key(default_db()))):
        try:
            mtime = path.stat().st_mtime
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text:
            found.append((mtime, text))
    return max(found)[1] if found else ""
