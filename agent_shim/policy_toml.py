"""The policy file format: TOML in, TOML out, and the durations in it.

People write these files, so a mistake must come back as a message that
names the environment, the key and the line (tomllib gives no positions for
values, hence the line scanner), and ``dump_policy_toml`` writes what
``parse_policy_toml`` reads back as an equal document.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from agent_shim.policy_models import (
    ENV_NAME_RE,
    MAX_APPROVAL_TIMEOUT_S,
    EnvPolicy,
    PolicyDoc,
    PolicyError,
    Rule,
)
from agent_shim.types import KINDS, RISKS, VERDICTS

# ----------------------------------------------------------------- durations

_DURATION_RE: Final = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,9})s)?")
_DURATION_HINT: Final = 'use e.g. "30s", "5m", "1h30m" or an integer number of seconds'


def parse_duration(value: object) -> int:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h30m"`` or an integer.

    Only h/m/s, in that order, each at most once: anything looser ("5M",
    "1.5h", "90") is a guess about what the author meant, and a timeout is
    the wrong place to guess. Raises ValueError with the reason.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a duration string or an integer, not {_toml_type(value)}")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION_RE.fullmatch(value)
        if not value or m is None:
            raise ValueError(f"{value!r} is not a duration; {_DURATION_HINT}")
        h, mi, s = (int(g) if g else 0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    if not 0 < seconds <= MAX_APPROVAL_TIMEOUT_S:
        raise ValueError(
            f"{value!r} must be more than 0 seconds and at most 24h ({MAX_APPROVAL_TIMEOUT_S} s)"
        )
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest ``1h30m``-style string that :func:`parse_duration` reads back."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((h, "h"), (m, "m"), (s, "s")) if n)


# ---------------------------------------------------------------- TOML input

_ENV_KEYS: Final = (
    "read",
    "write",
    "destructive",
    "approval_timeout",
    "max_actions_per_minute",
    "rules",
)
_RULE_KEYS: Final = ("kind", "match", "risk", "verdict", "reason")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART: Final = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_HEADER_LINE: Final = re.compile(r"\s*(\[\[?)\s*([^\[\]#]*?)\s*(\]\]?)\s*(?:#.*)?")
_KEY_LINE: Final = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_KEY_PARTS: Final = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")

_LineKey = tuple[str | None, int | None, str | None]


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    for typ, name in names.items():
        if isinstance(value, typ):
            return name
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _split_key(text: str) -> list[str]:
    """A dotted TOML key as its parts (best effort: only used to find lines)."""
    return [a or b or c for a, b, c in _KEY_PARTS.findall(text)]


def _index_lines(text: str) -> dict[_LineKey, int]:
    """Where each environment, rule and key first appears, for error messages.

    tomllib gives no positions for values, and "line 14" is what gets a wrong
    policy fixed fast. A line scanner is enough for the shapes people write.
    """
    where: dict[_LineKey, int] = {}
    section: list[str] = []
    rule: tuple[str, int] | None = None
    rule_counts: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        header = _HEADER_LINE.fullmatch(line)
        if header is not None and len(header.group(1)) == len(header.group(3)):
            section, rule = _split_key(header.group(2)), None
            if len(section) < 2 or section[0] != "environments":
                where.setdefault((None, None, section[0] if section else None), lineno)
                continue
            env = section[1]
            is_rule = header.group(1) == "[[" and section[2:] == ["rules"]
            if is_rule:
                rule = (env, rule_counts.get(env, 0))
                rule_counts[env] = rule[1] + 1
                where.setdefault((env, rule[1], None), lineno)
            where.setdefault((env, None, section[2] if len(section) > 2 else None), lineno)
            continue
        key = _KEY_LINE.match(line)
        if key is None:
            continue
        parts = _split_key(key.group(1))
        if rule is not None:
            where.setdefault((rule[0], rule[1], parts[0]), lineno)
            continue
        full = section + parts
        if len(full) >= 2 and full[0] == "environments":
            where.setdefault((full[1], None, full[2] if len(full) > 2 else None), lineno)
        elif full:
            where.setdefault((None, None, full[0]), lineno)
    return where


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_str(name)


class _Reader:
    """Turns the parsed TOML tables into models, failing with located messages."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[_LineKey, int] | None = None

    def _line(self, env: str | None, rule: int | None, key: str | None) -> int | None:
        if self._lines is None:
            self._lines = _index_lines(self._text)
        for probe in ((env, rule, key), (env, rule, None), (env, None, None)):
            if probe in self._lines:
                return self._lines[probe]
        return None

    def fail(
        self, problem: str, env: str | None = None, rule: int | None = None, key: str | None = None
    ) -> PolicyError:
        line = self._line(env, rule, key)
        if env is None:  # a top-level problem: the message names the key itself
            loc = "policy" if line is None else f"line {line}"
        else:
            where = [f"environments.{_toml_key(env)}"]
            if rule is not None:
                where.append(f"rule {rule + 1}")
            if key is not None:
                where.append(f"key {key!r}")
            loc = ", ".join(where) + ("" if line is None else f" (line {line})")
        return PolicyError(f"{loc}: {problem}", env=env, key=key, line=line)

    def unknown_keys(
        self,
        table: Mapping[str, object],
        allowed: tuple[str, ...],
        env: str | None,
        rule: int | None,
    ) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                if rule is None and isinstance(table[key], dict):
                    hint += f'quote environment names with dots ([environments."{env}.{key}"]); '
                raise self.fail(
                    f"unknown key {key!r}; {hint}allowed keys: {', '.join(allowed)}",
                    env,
                    rule,
                    key,
                )

    def choice(self, value: object, choices: tuple[str, ...], env: str, rule: int | None, key: str) -> Any:
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _toml_type(value)
            listed = ", ".join(f'"{c}"' for c in choices)
            raise self.fail(f"must be one of {listed}, not {shown}", env, rule, key)
        return value

    def text(self, value: object, env: str, rule: int, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"must be a string, not {_toml_type(value)}", env, rule, key)
        return value

    def build(
        self, model: Callable[..., Any], fields: dict[str, Any], env: str | None, rule: int | None
    ) -> Any:
        try:
            return model(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else None
            key = "approval_timeout" if field == "approval_timeout_s" else field
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise self.fail(msg, env, rule, key) from None

    def rule(self, raw: object, env: str, index: int) -> Rule:
        if not isinstance(raw, dict):
            raise self.fail(f"must be a table, not {_toml_type(raw)}", env, index)
        self.unknown_keys(raw, _RULE_KEYS, env, index)
        for required in ("match", "verdict"):
            if required not in raw:
                raise self.fail(f"missing required key {required!r}", env, index)
        fields: dict[str, Any] = {
            "match": self.text(raw["match"], env, index, "match"),
            "verdict": self.choice(raw["verdict"], VERDICTS, env, index, "verdict"),
        }
        if "kind" in raw:
            fields["kind"] = self.choice(raw["kind"], ("*", *KINDS), env, index, "kind")
        if "risk" in raw:
            fields["risk"] = self.choice(raw["risk"], RISKS, env, index, "risk")
        if "reason" in raw:
            fields["reason"] = self.text(raw["reason"], env, index, "reason")
        rule: Rule = self.build(Rule, fields, env, index)
        return rule

    def env(self, name: str, raw: object) -> EnvPolicy:
        if not ENV_NAME_RE.fullmatch(name):
            raise self.fail(
                "environment names are 1-64 of A-Z a-z 0-9 _ . - "
                '(quote a name with dots: [environments."eu.prod"])',
                name,
            )
        if not isinstance(raw, dict):
            raise self.fail(f"must be a table, not {_toml_type(raw)}", name)
        self.unknown_keys(raw, _ENV_KEYS, name, None)
        fields: dict[str, Any] = {}
        for risk in RISKS:
            if risk in raw:
                fields[risk] = self.choice(raw[risk], VERDICTS, name, None, risk)
        if "approval_timeout" in raw:
            try:
                fields["approval_timeout_s"] = parse_duration(raw["approval_timeout"])
            except ValueError as exc:
                raise self.fail(str(exc), name, None, "approval_timeout") from None
        if "max_actions_per_minute" in raw:
            limit = raw["max_actions_per_minute"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                shown = repr(limit) if isinstance(limit, int) else _toml_type(limit)
                raise self.fail(
                    f"must be an integer >= 1, not {shown} (leave it out for no limit)",
                    name,
                    None,
                    "max_actions_per_minute",
                )
            fields["max_actions_per_minute"] = limit
        if "rules" in raw:
            rules = raw["rules"]
            if not isinstance(rules, list):
                raise self.fail(
                    f"must be an array of tables ([[environments.{_toml_key(name)}.rules]]), "
                    f"not {_toml_type(rules)}",
                    name,
                    None,
                    "rules",
                )
            fields["rules"] = tuple(self.rule(r, name, i) for i, r in enumerate(rules))
        env: EnvPolicy = self.build(EnvPolicy, fields, name, None)
        return env

    def doc(self, data: dict[str, Any]) -> PolicyDoc:
        for key in data:
            if key != "environments":
                raise self.fail(
                    f"unknown top-level key {key!r}; a policy has only [environments.NAME] tables",
                    key=key,
                )
        envs = data.get("environments", {})
        if not isinstance(envs, dict):
            raise self.fail(f"must be a table, not {_toml_type(envs)}", key="environments")
        parsed = {name: self.env(name, raw) for name, raw in envs.items()}
        doc: PolicyDoc = self.build(PolicyDoc, {"environments": parsed}, None, None)
        return doc


def parse_policy_toml(text: str) -> PolicyDoc:
    """Read a policy file (the format of DESIGN.md) or raise :class:`PolicyError`.

    An empty file is an empty policy: every environment then gets its built-in.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))
        line = int(at.group(1)) if at else None
        raise PolicyError(f"policy is not valid TOML: {exc}", line=line) from None
    return _Reader(text).doc(data)


# --------------------------------------------------------------- TOML output


def _toml_str(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dump_policy_toml(doc: PolicyDoc) -> str:
    """The TOML text of ``doc``; ``parse_policy_toml`` reads back an equal doc.

    Every verdict and the timeout are written even when they equal the model
    defaults, so that a reader of the file never needs to know the defaults.
    """
    lines: list[str] = []
    for name, env in doc.environments.items():
        key = _toml_key(name)
        if lines:
            lines.append("")
        lines.append(f"[environments.{key}]")
        lines += [f"{risk} = {_toml_str(getattr(env, risk))}" for risk in RISKS]
        lines.append(f"approval_timeout = {_toml_str(format_duration(env.approval_timeout_s))}")
        if env.max_actions_per_minute is not None:
            lines.append(f"max_actions_per_minute = {env.max_actions_per_minute}")
        for rule in env.rules:
            lines += ["", f"[[environments.{key}.rules]]", f"kind = {_toml_str(rule.kind)}"]
            lines.append(f"match = {_toml_str(rule.match)}")
            if rule.risk is not None:
                lines.append(f"risk = {_toml_str(rule.risk)}")
            lines.append(f"verdict = {_toml_str(rule.verdict)}")
            if rule.reason:
                lines.append(f"reason = {_toml_str(rule.reason)}")
    return "\n".join(lines) + "\n" if lines else ""
