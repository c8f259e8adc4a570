"""Settings resolve flags > TOWER_* environment > config file > token files > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from towerctl.config import DEFAULT_URL, ConfigError, resolve, token_file, url_file, write_private


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("TOWER_URL", "TOWER_TOKEN", "TOWER_AGENT", "TOWER_ENV", "TOWER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        ("ws://flag:1", "ws://env:2", "ws://file:3", "ws://flag:1"),
        (None, "ws://env:2", "ws://file:3", "ws://env:2"),
        (None, None, "ws://file:3", "ws://file:3"),
        (None, None, None, DEFAULT_URL),
    ],
)
def test_url_precedence(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    file: str | None,
    expected: str,
) -> None:
    if env:
        monkeypatch.setenv("TOWER_URL", env)
    if file:
        (home / "config.toml").write_text(f'url = "{file}"\n')
    assert resolve(url=flag).url == expected


def test_url_file_written_by_serve_is_used(home: Path) -> None:
    write_private(url_file(), "ws://127.0.0.1:4242\n")
    assert resolve().url == "ws://127.0.0.1:4242"


def test_token_falls_back_to_the_role_file(home: Path) -> None:
    write_private(token_file("admin"), "twr_admin\n")
    write_private(token_file("agent"), "twr_agent\n")
    assert resolve(role="admin").token == "twr_admin"
    assert resolve(role="agent").token == "twr_agent"
    assert token_file("agent").stat().st_mode & 0o777 == 0o600


def test_agent_and_env_from_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_AGENT", "deployer")
    monkeypatch.setenv("TOWER_ENV", "prod")
    s = resolve(env=None, agent=None)
    assert (s.agent, s.env) == ("deployer", "prod")
    assert resolve(env="staging").env == "staging"


@pytest.mark.parametrize(
    ("text", "needle"),
    [('colour = "blue"\n', "unknown keys"), ("url = 5\n", "must be strings"), ("url = \n", "config.toml")],
)
def test_bad_config_file_is_a_clear_error(home: Path, text: str, needle: str) -> None:
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=needle):
        resolve()
