"""A record's data in a few words, for people reading the log.

``towerctl audit show`` prints one line per record and the console's audit
view has one cell for it. A proposal's record holds the action inside
``body`` and, in ``states``, where the proposal left it; sorted JSON puts
both out of sight (``body`` is long, ``states`` comes last), so the words an
operator looks for come first. Pure: the data is whatever the (untrusted)
record holds, and anything unexpected is shown as it is, never raised on.
"""

from __future__ import annotations

import json


def states_text(data: object) -> str:
    """``→ allowed → running``: the states a proposal's record says it moved
    its action through; nothing for any other record, or an odd one."""
    states = data.get("states") if isinstance(data, dict) else None
    if isinstance(states, list) and states and all(isinstance(s, str) for s in states):
        return "→ " + " → ".join(states)
    return ""


def record_detail(data: object) -> str:
    """The record's gist, then the whole data as compact sorted JSON."""
    text = data if isinstance(data, str) else json.dumps(data, sort_keys=True, separators=(",", ":"))
    gist = record_gist(data)
    return f"{gist} · {text}" if gist else text


def record_gist(data: object) -> str:
    """What the record is about in a phrase: the proposal's states and command,
    a record's own command or reason, who decided, why a decision was refused,
    or how it ended."""
    if not isinstance(data, dict):
        return ""
    body = data.get("body")
    command = body.get("command") if isinstance(body, dict) else None
    what = command or data.get("command") or data.get("reason") or data.get("operator") or ""
    code, message = data.get("code"), data.get("message")
    if not what and isinstance(code, str) and code:  # a refused decision: why
        what = f"{code}: {message}" if isinstance(message, str) and message else code
    exit_code = data.get("exit_code")
    if not what and type(exit_code) is int:
        what = f"exit {exit_code}"
    return " · ".join(part for part in (states_text(data), str(what)) if part)
