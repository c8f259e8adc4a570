"""Theme files: the shipped ones load, bad ones fail with messages that say where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from towerctl.tui.themes import (
    PACKAGED_THEMES_DIR,
    REPO_THEMES_DIR,
    SHIPPED_THEMES,
    ThemeError,
    choose_theme,
    load_theme_file,
    load_themes,
    parse_theme,
)

GOOD = """
name = "mine"
primary = "#336699"
error = "#ff0000"
dark = true
[variables]
footer-key-foreground = "#336699"
"""


def test_every_shipped_theme_loads_into_a_textual_theme() -> None:
    themes, errors = load_themes([REPO_THEMES_DIR])
    assert errors == []
    assert set(SHIPPED_THEMES) <= set(themes)
    for name in SHIPPED_THEMES:
        theme = themes[name]
        assert theme.name == name
        assert theme.primary.startswith("#")
        assert theme.error is not None  # production's colour must be defined, not derived
    assert themes["tower-light"].dark is False
    assert themes["tower-contrast"].background == "#000000"


def test_packaged_copies_are_identical_to_the_repo_themes() -> None:
    """The wheel ships copies; the repo's themes/ is the one that is edited."""
    repo = {p.name: p.read_bytes() for p in REPO_THEMES_DIR.glob("*.toml")}
    packaged = {p.name: p.read_bytes() for p in PACKAGED_THEMES_DIR.glob("*.toml")}
    assert repo == packaged


def test_a_valid_theme_parses() -> None:
    theme = parse_theme(GOOD, source="mine.toml", default_name="mine")
    assert theme.name == "mine"
    assert theme.variables == {"footer-key-foreground": "#336699"}


def test_unknown_key_is_rejected_naming_the_file_and_key() -> None:
    with pytest.raises(ThemeError) as err:
        parse_theme(GOOD.replace("dark = true", 'dark = true\nprimry = "#000000"'), source="mine.toml")
    message = str(err.value)
    assert message.startswith("mine.toml:")
    assert "unknown key 'primry'" in message
    assert "allowed:" in message and "primary" in message


def test_bad_colour_is_rejected_with_the_value() -> None:
    with pytest.raises(ThemeError) as err:
        parse_theme(GOOD.replace('error = "#ff0000"', 'error = "#ff00zz"'), source="x.toml")
    assert "error" in str(err.value)
    assert "'#ff00zz' is not a colour" in str(err.value)


def test_bad_colour_in_a_colour_variable_is_rejected() -> None:
    with pytest.raises(ThemeError) as err:
        parse_theme(GOOD.replace('footer-key-foreground = "#336699"', 'footer-key-foreground = "blurple"'))
    assert "'blurple' is not a colour" in str(err.value)


def test_missing_primary_and_wrong_types_are_explained() -> None:
    with pytest.raises(ThemeError) as err:
        parse_theme('name = "x"\ndark = "yes"\n', source="x.toml")
    message = str(err.value)
    assert "missing required key 'primary'" in message
    assert "dark" in message


def test_invalid_toml_is_reported() -> None:
    with pytest.raises(ThemeError) as err:
        parse_theme("name = \n", source="broken.toml")
    assert "broken.toml: not valid TOML" in str(err.value)


def test_name_must_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text(GOOD)
    with pytest.raises(ThemeError) as err:
        load_theme_file(path)
    assert "does not match the file name 'other'" in str(err.value)


def test_a_broken_user_theme_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('name = "broken"\nprimary = "nope"\n')
    (tmp_path / "mine.toml").write_text(GOOD)
    themes, errors = load_themes([REPO_THEMES_DIR, tmp_path])
    assert "mine" in themes and "tower-dark" in themes
    assert len(errors) == 1 and "broken.toml" in errors[0]


def test_choose_theme_defaults_and_rejects_unknown_names() -> None:
    assert choose_theme(None, ["tower-dark", "textual-dark"]) == "tower-dark"
    assert choose_theme("tower-light", ["tower-dark", "tower-light"]) == "tower-light"
    with pytest.raises(ThemeError) as err:
        choose_theme("tower-pink", ["tower-dark", "tower-light"])
    assert str(err.value) == "unknown theme 'tower-pink'; available: tower-dark, tower-light"
