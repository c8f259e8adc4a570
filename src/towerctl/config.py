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
    {"url", "token", "agent", "env", "db", "theme", "operator_token", "agent_token"}
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


def resolve(
    *,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    env: str | None = None,
    role: str = "admin",
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
    )
