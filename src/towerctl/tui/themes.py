"""Theme files: ``themes/*.toml`` read, validated and turned into Textual themes.

Textual has no theme-file loader, and a theme file is something operators edit
by hand: a misspelt key must be an error that names the file and the key, not
a silently ignored line, and a bad colour must fail at load time rather than
as a half-styled screen in the middle of an incident.

Where theme files come from, first match of a name wins:

1. the repository's ``themes/`` directory (an editable install; the one place
   the shipped themes are edited),
2. the copies packaged in ``towerctl/tui/builtin_themes`` (a wheel install;
   a test keeps them identical to 1),
3. the user's ``themes/`` directory next to ``config.toml``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME: Final = "tower-dark"
#: The themes ``t`` cycles through, in order.
SHIPPED_THEMES: Final = ("tower-dark", "tower-light", "tower-contrast")

REPO_THEMES_DIR: Final = Path(__file__).resolve().parents[3] / "themes"
PACKAGED_THEMES_DIR: Final = Path(__file__).resolve().parent / "builtin_themes"

_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_VARIABLE_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class ThemeError(ValueError):
    """A theme file is wrong or a theme name is unknown; the message says where and why."""


def _colour(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        Color.parse(value)
    except ColorParseError:
        raise ValueError(f"{value!r} is not a colour (use e.g. \"#1A2B3C\" or \"rgb(26,43,60)\")") from None
    return value


Colour = Annotated[str, Field(min_length=1, max_length=64)]


class ThemeFile(BaseModel):
    """The shape of a theme file: exactly ``textual.theme.Theme``'s fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(pattern=_NAME_RE.pattern)]
    primary: Colour
    secondary: Colour | None = None
    warning: Colour | None = None
    error: Colour | None = None
    success: Colour | None = None
    accent: Colour | None = None
    foreground: Colour | None = None
    background: Colour | None = None
    surface: Colour | None = None
    panel: Colour | None = None
    boost: Colour | None = None
    dark: bool = True
    luminosity_spread: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15
    text_alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    variables: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=dict)

    @field_validator(
        "primary",
        "secondary",
        "warning",
        "error",
        "success",
        "accent",
        "foreground",
        "background",
        "surface",
        "panel",
        "boost",
    )
    @classmethod
    def _check_colour(cls, value: str | None) -> str | None:
        return _colour(value)

    @field_validator("variables")
    @classmethod
    def _check_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _VARIABLE_RE.fullmatch(key):
                raise ValueError(f"variable name {key!r} is not lower-case-with-dashes")
            # Variables named after a colour role must hold a colour: a typo
            # there would otherwise surface as an unreadable footer.
            if key.endswith(("-foreground", "-background", "-color")):
                _colour(val)
        return value

    def to_theme(self) -> Theme:
        return Theme(**self.model_dump())


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "theme"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(ThemeFile.model_fields)
            parts.append(f"unknown key {loc!r} (allowed: {allowed})")
        elif err["type"] == "missing":
            parts.append(f"missing required key {loc!r}")
        else:
            parts.append(f"{loc}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_theme(text: str, *, source: str = "<theme>", default_name: str | None = None) -> Theme:
    """A validated Theme from the TOML ``text``, or :class:`ThemeError` naming ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"{source}: not valid TOML: {exc}") from None
    if default_name is not None:
        data.setdefault("name", default_name)
    try:
        model = ThemeFile.model_validate(data)
    except ValidationError as exc:
        raise ThemeError(f"{source}: {_explain(exc)}") from None
    if default_name is not None and model.name != default_name:
        raise ThemeError(f"{source}: name {model.name!r} does not match the file name {default_name!r}")
    return model.to_theme()


def load_theme_file(path: Path) -> Theme:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ThemeError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_theme(text, source=str(path), default_name=path.stem)


def user_themes_dir() -> Path:
    from towerctl.config import config_path

    return config_path().parent / "themes"


def theme_dirs() -> list[Path]:
    """Where theme files are looked for, in order of precedence."""
    shipped = REPO_THEMES_DIR if REPO_THEMES_DIR.is_dir() else PACKAGED_THEMES_DIR
    return [shipped, user_themes_dir()]


def load_themes(dirs: Iterable[Path] | None = None) -> tuple[dict[str, Theme], list[str]]:
    """Every theme found, and one error line per file that failed.

    A broken user theme must not keep the console from starting during an
    incident, so errors are collected and shown, not raised; the shipped
    themes are checked by the tests instead.
    """
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    for directory in theme_dirs() if dirs is None else dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                errors.append(str(exc))
                continue
            themes.setdefault(theme.name, theme)
    return themes, errors


def choose_theme(requested: str | None, available: Iterable[str]) -> str:
    """The theme to start with: the requested one if it exists, else an error listing the choices."""
    names = sorted(available)
    if not requested:
        return DEFAULT_THEME if DEFAULT_THEME in names else "textual-dark"
    if requested not in names:
        raise ThemeError(f"unknown theme {requested!r}; available: {', '.join(names)}")
    return requested
