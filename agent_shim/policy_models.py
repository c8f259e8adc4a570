"""The policy models: what an environment allows, asks about and denies.

Policies travel over the wire and the hub re-checks what the shim enforced,
so the models are strict, frozen pydantic models that refuse anything they do
not know: a typo in a deny rule must be an error, never a rule that silently
matches nothing. The limits and text checks live with the models so that a
policy from a file, from the wire or from code is held to the same bounds.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_shim.types import Kind, Risk, Verdict

ENV_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_APPROVAL_TIMEOUT_S: Final = 86_400
MAX_RULES: Final = 1_000
MAX_ENVIRONMENTS: Final = 1_000
MAX_TEXT: Final = 1_024

# Operators read rule patterns and reasons in a terminal: control characters,
# lone surrogates, line separators and bidi overrides could hide or fake text.
_UNSAFE_TEXT: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


class PolicyError(ValueError):
    """A policy file is wrong; the message names the environment, key and line."""

    def __init__(
        self,
        message: str,
        *,
        env: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.env = env
        self.key = key
        self.line = line


def _safe_text(value: str, what: str) -> str:
    bad = _UNSAFE_TEXT.search(value)
    if bad is not None:
        raise ValueError(f"{what} contains U+{ord(bad.group()):04X}, a control or bidi character")
    return value


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class Rule(BaseModel):
    """One exception to an environment's risk defaults; the first match wins."""

    model_config = _STRICT

    kind: Kind | Literal["*"] = "*"
    match: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    risk: Risk | None = None
    verdict: Verdict
    reason: Annotated[str, Field(max_length=MAX_TEXT)] = ""

    @field_validator("match")
    @classmethod
    def _normalise_match(cls, value: str) -> str:
        # Commands are matched with whitespace collapsed, so a pattern written
        # with a double space or a tab would otherwise never match: a deny rule
        # that silently does nothing.
        value = " ".join(value.split())
        if not value:
            raise ValueError("match must not be blank; use '*' to match every command")
        return _safe_text(value, "match")

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, value: str) -> str:
        return _safe_text(value, "reason")


class EnvPolicy(BaseModel):
    """What one environment allows, asks about and denies, and how fast."""

    model_config = _STRICT

    read: Verdict = "allow"
    write: Verdict = "ask"
    destructive: Verdict = "ask"
    approval_timeout_s: Annotated[int, Field(gt=0, le=MAX_APPROVAL_TIMEOUT_S)] = 300
    max_actions_per_minute: Annotated[int, Field(ge=1)] | None = None
    rules: Annotated[tuple[Rule, ...], Field(max_length=MAX_RULES)] = ()


class PolicyDoc(BaseModel):
    """A whole policy file: one entry per environment name."""

    model_config = _STRICT

    environments: Annotated[dict[str, EnvPolicy], Field(max_length=MAX_ENVIRONMENTS)]

    @field_validator("environments")
    @classmethod
    def _check_names(cls, value: dict[str, EnvPolicy]) -> dict[str, EnvPolicy]:
        # The same names go into TOML keys, URLs and token scopes.
        for name in value:
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"environment name {name!r} is not [A-Za-z0-9_.-]{{1,64}}")
        return value
