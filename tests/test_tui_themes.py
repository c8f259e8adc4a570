"""Theme files: the shipped ones load, bad ones fail with messages that say where and why."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from textual.color import Color

from agent_shim.protocol import SessionStatus
from towerctl.tui.render import Palette
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


# ------------------------------------------------------------------ contrast


def _luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    parsed = Color.parse(colour)

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(parsed.r) + 0.7152 * linear(parsed.g) + 0.0722 * linear(parsed.b)


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2.x contrast ratio, 1 (none) to 21 (black on white)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_ratio_matches_the_wcag_reference_values() -> None:
    assert contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#FFFFFF", "#FFFFFF") == pytest.approx(1.0)


def _generated(name: str) -> tuple[dict[str, str], Palette]:
    """A shipped theme's CSS variables and the Palette the views build from them."""
    themes, _errors = load_themes([REPO_THEMES_DIR])
    variables = themes[name].to_color_system().generate()
    return variables, Palette(variables)


def _below_aa(colours: dict[str, str], grounds: dict[str, str]) -> list[str]:
    failures = []
    for what, fg in colours.items():
        for ground, bg in grounds.items():
            ratio = contrast_ratio(fg, bg)
            if ratio < 4.5:
                failures.append(f"{what} {fg} on {ground} {bg}: {ratio:.2f}:1")
    return failures


@pytest.mark.parametrize("name", SHIPPED_THEMES)
def test_every_status_colour_meets_wcag_aa_on_the_surfaces_it_is_drawn_on(name: str) -> None:
    """Each status is drawn in its colour on the page ($background), in the
    tables ($surface) and in the header ($panel, which also carries the table
    headings); each must be readable on all three: WCAG AA, 4.5:1 for text.

    Colours are taken where the console takes them: the theme's generated CSS
    variables, through the same Palette the views use. The header's link state
    (connected, connecting, refused, offline) uses the same roles, and so do
    its pending count and audit verdict.
    """
    variables, palette = _generated(name)
    grounds = {key: variables[key] for key in ("background", "surface", "panel")}
    colours = {
        "link connected": palette.success,
        "link reconnecting": palette.warning,
        "link refused": palette.error,
        "link offline": palette.muted,
    }
    for status in get_args(SessionStatus):
        colour = palette.status(status).color
        assert colour is not None, f"{name}: status {status} has no colour"
        colours[status] = colour.get_truecolor().hex
    failures = _below_aa(colours, grounds)
    assert not failures, f"{name}: below WCAG AA (4.5:1): " + "; ".join(failures)


@pytest.mark.parametrize("name", SHIPPED_THEMES)
def test_production_approval_banner_meets_wcag_aa(name: str) -> None:
    """A production approval's top line is tinted red (``$error 25%`` over the
    page, see tower.tcss) and carries the PROD marker in $error and the
    "waiting" line in $warning: red on red must still be readable.
    """
    variables, palette = _generated(name)
    tint = Color.parse(variables["background"]).blend(Color.parse(palette.error), 0.25).hex
    colours = {"PROD marker": palette.error, "waiting": palette.warning}
    failures = _below_aa(colours, {"prod tint": tint})
    assert not failures, f"{name}: below WCAG AA (4.5:1): " + "; ".join(failures)
