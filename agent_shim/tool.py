"""Gate any Python function as a tower tool call: ``@gated(shim)``.

Agent frameworks (LangGraph, the OpenAI Agents SDK, plain loops) call Python
functions as tools. Decorating such a function sends every call through the
shim before its body runs::

    shim = SyncShim(url, token, agent="billing-bot", env="prod")

    @gated(shim)
    def refund(order_id: str, amount_cents: int) -> str: ...

The call is proposed as ``kind="tool"`` with the command
``refund {"amount_cents":500,"order_id":"A-1"}``: the function's name, a
space, and its arguments (defaults included) as sorted-key compact JSON
(``default=str`` for what JSON cannot hold). A space rather than
``refund(...)`` because that is the form the classifier parses: a tool whose
arguments carry SQL or a shell command (``run_sql {"sql": "DROP TABLE t"}``)
is then judged by that payload, not by its name alone.

What runs is what was approved: the arguments are deep-copied when the call
is proposed, so a caller that mutates a list while an operator is deciding
does not change what the function receives, and the copy is rendered again
after approval and refused if it no longer matches the approved text. The
outcome is reported (the return value's JSON as output; an exception as a
failure) and the exception re-raised. A denial raises :class:`ActionDenied`
before the body runs: frameworks hand that message back to the model.

Async functions may use a ``Shim`` or a ``SyncShim``; sync functions need a
``SyncShim`` (an async ``Shim`` lives on an event loop a sync caller cannot
safely block). With ``shim=None`` a process-wide ``SyncShim`` is started from
``TOWER_URL`` / ``TOWER_TOKEN`` / ``TOWER_AGENT`` / ``TOWER_ENV`` on first use.

Imports only the standard library and the rest of ``agent_shim``.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import functools
import inspect
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar, cast

from agent_shim.approved import Approved
from agent_shim.client import Shim, new_action_id
from agent_shim.errors import ActionDenied
from agent_shim.protocol import Action
from agent_shim.sync import SyncShim
from agent_shim.types import Kind, Risk

__all__ = ["gated", "tool_command"]

P = ParamSpec("P")
R = TypeVar("R")
AnyShim = Shim | SyncShim
ShimSource = AnyShim | Callable[[], AnyShim] | None

#: The protocol's limit on a command; longer calls cannot be put to review.
MAX_COMMAND_CHARS: Final = 16384
#: Bound receivers are not arguments anyone approves; they pass through.
_RECEIVERS: Final = frozenset({"self", "cls"})
_DEFAULT_URL: Final = "ws://127.0.0.1:7340"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def tool_command(name: str, arguments: Mapping[str, Any]) -> str:
    """The command text for a call: ``name {sorted compact JSON of arguments}``.

    Raises :class:`ActionDenied` when the arguments cannot be rendered (a
    circular structure, a non-string dict key) or are too long to review.
    """
    shown = {k: v for k, v in arguments.items() if k not in _RECEIVERS}
    try:
        text = f"{name} {_json(shown)}"
    except (TypeError, ValueError) as exc:
        raise ActionDenied(
            f"refused: the arguments of {name} cannot be shown for review ({exc})", by="shim"
        ) from None
    if len(text) > MAX_COMMAND_CHARS:
        raise ActionDenied(
            f"refused: the call to {name} is {len(text)} characters, more than the "
            f"{MAX_COMMAND_CHARS} that can be put to review",
            by="shim",
        )
    return text


def _snapshot(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> inspect.BoundArguments:
    """Bind the call and deep-copy every argument (what will run is this copy)."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    for key, value in list(bound.arguments.items()):
        if key in _RECEIVERS:
            continue
        try:
            bound.arguments[key] = copy.deepcopy(value)
        except Exception:  # an uncopyable handle (socket, lock): the re-render check still guards it
            bound.arguments[key] = value
    return bound


def _shown(bound: inspect.BoundArguments) -> dict[str, Any]:
    """The bound arguments plus the defaults that will apply: what the approver should see."""
    shown = dict(bound.arguments)
    for param in bound.signature.parameters.values():
        if param.name not in shown and param.default is not inspect.Parameter.empty:
            shown[param.name] = param.default
    return shown


def _output(result: Any) -> str:
    try:
        return _json(result)
    except (TypeError, ValueError):
        return f"<result of type {type(result).__name__}>"


class _Call:
    """One gated call: the proposed action and the frozen arguments it binds."""

    def __init__(
        self, name: str, fn: Callable[..., Any], opts: _Options, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.bound = _snapshot(fn, args, kwargs)
        self.command = tool_command(name, _shown(self.bound))
        self.action = Action(
            action_id=new_action_id(),
            kind=opts.kind,
            command=self.command,
            target=opts.target,
            reason=opts.reason,
            declared_risk=opts.declared_risk,
        )

    def check(self, approved: Approved) -> None:
        """Refuse unless the approved action is exactly this call, with unchanged arguments."""
        approved.verify()
        if (
            approved.action.command != self.command
            or tool_command(self.command.split(" ", 1)[0], _shown(self.bound)) != self.command
        ):
            raise ActionDenied("refused: the arguments changed after approval", by="shim")


class _Options:
    __slots__ = ("declared_risk", "env", "kind", "reason", "source", "target")

    def __init__(
        self,
        source: ShimSource,
        kind: Kind,
        env: str | None,
        target: str,
        reason: str,
        declared_risk: Risk | None,
    ) -> None:
        self.source, self.kind, self.env = source, kind, env
        self.target, self.reason, self.declared_risk = target, reason, declared_risk

    def shim(self) -> AnyShim:
        source = self.source
        found: object = (
            default_shim(self.env)
            if source is None
            else (source if isinstance(source, Shim | SyncShim) else source())
        )
        if not isinstance(found, Shim | SyncShim):
            raise TypeError(f"shim source returned {type(found).__name__}, not a Shim or SyncShim")
        env = found.env if isinstance(found, Shim) else found.shim.env
        if self.env is not None and env != self.env:
            raise ActionDenied(
                f"refused: this tool is declared for environment {self.env!r} but the shim judges "
                f"{env!r}; it would run under the wrong policy",
                by="shim",
            )
        return found


def gated(
    shim: ShimSource = None,
    *,
    kind: Kind = "tool",
    name: str | None = None,
    env: str | None = None,
    target: str = "",
    reason: str = "",
    declared_risk: Risk | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function so that every call is a supervised tool call.

    ``shim``: a ``Shim``/``SyncShim``, a zero-argument callable returning one
    (for tools defined before the shim exists), or ``None`` for the process
    default from ``TOWER_*`` variables. ``name``: the tool name operators see
    (default: the function's ``__name__``). ``env``: if given, refuse to run
    through a shim for another environment (a prod tool must not be judged by
    dev's policy). ``declared_risk``: a floor for the classifier, e.g.
    ``"destructive"`` for a tool whose name hides what it does.
    """
    opts = _Options(shim, kind, env, target, reason, declared_risk)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        tool_name: str = name or str(getattr(fn, "__name__", "tool"))
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                call = _Call(tool_name, fn, opts, args, kwargs)
                target_shim = opts.shim()
                if isinstance(target_shim, Shim):
                    async with target_shim.guard(call.action) as approved:
                        call.check(approved)
                        result = await afn(*call.bound.args, **call.bound.kwargs)
                        approved.set_result(0, _output(result))
                    return result
                approved = await asyncio.to_thread(target_shim.admit, call.action)
                try:
                    call.check(approved)
                    result = await afn(*call.bound.args, **call.bound.kwargs)
                except BaseException as exc:
                    approved.mark_failed()
                    target_shim.report(approved, error=f"{type(exc).__name__}: {exc}"[:4000])
                    raise
                approved.set_result(0, _output(result))
                target_shim.report(approved)
                return result

            return cast(Callable[P, R], arun)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            call = _Call(tool_name, fn, opts, args, kwargs)
            target_shim = opts.shim()
            if not isinstance(target_shim, SyncShim):
                raise TypeError(
                    f"{tool_name} is a sync function: gate it with a SyncShim (or shim=None); "
                    "an async Shim can only gate async functions"
                )
            with target_shim.guard(call.action) as approved:
                call.check(approved)
                result = fn(*call.bound.args, **call.bound.kwargs)
                approved.set_result(0, _output(result))
            return result

        return run

    return decorate


# ------------------------------------------------------------ default shim

_defaults: dict[str, SyncShim] = {}
_defaults_lock = threading.Lock()


def default_shim(env: str | None = None) -> SyncShim:
    """The process-wide ``SyncShim`` for ``env`` (default ``TOWER_ENV``, else dev).

    Started on first use from ``TOWER_URL``, ``TOWER_TOKEN`` and
    ``TOWER_AGENT``, closed at exit (queued reports are delivered first). No
    token means no supervision, so every call is refused.
    """
    chosen = env or os.environ.get("TOWER_ENV") or "dev"
    with _defaults_lock:
        existing = _defaults.get(chosen)
        if existing is not None:
            return existing
        token = os.environ.get("TOWER_TOKEN", "")
        if not token:
            raise ActionDenied("refused: no TOWER_TOKEN, so no tower can supervise this tool call", by="shim")
        agent = os.environ.get("TOWER_AGENT") or f"{os.path.basename(sys.argv[0] or 'python')}-tools"
        started = SyncShim(os.environ.get("TOWER_URL") or _DEFAULT_URL, token, agent=agent, env=chosen)
        started.start()
        _defaults[chosen] = started
        if len(_defaults) == 1:
            atexit.register(_close_defaults)
        return started


def _close_defaults() -> None:
    with _defaults_lock:
        shims = list(_defaults.values())
        _defaults.clear()
    for s in shims:
        s.close()
