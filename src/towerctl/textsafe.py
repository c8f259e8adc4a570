"""Make agent-supplied text safe to put in front of an operator.

An agent (or whatever it read) controls the command text, its reason and its
output. Terminal escapes in them could rewrite the operator's screen, hide a
part of a command or retitle the terminal; so every control character except
newline and tab is shown as a visible escape, never sent raw.
"""

from __future__ import annotations

import re
from typing import Final

_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, *, single_line: bool = False) -> str:
    """``text`` with control and bidi characters made visible (and newlines too if ``single_line``)."""
    out = _CONTROL.sub(_visible, text)
    if single_line:
        out = out.replace("\n", "\\n").replace("\t", "\\t")
    return out
