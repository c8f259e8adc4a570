"""Shell gates: wrappers that put ``kubectl``, ``terraform``, ``aws`` … under the tower.

``towerctl gate install --dir DIR kubectl terraform`` writes one small
``#!/bin/sh`` script per tool into DIR. With DIR first on the agent's PATH,
``kubectl get pods`` runs the wrapper, which runs the stdlib-only fast client
(:mod:`towerctl.localshim.fastclient`, asking the per-user local shim daemon)
or, with ``TOWER_NO_DAEMON=1``, :func:`main` here, in-process. Both do the
same: drop DIR from PATH, find the real binary, propose ``kubectl get pods``
through a shim (classified, policy-checked, waiting for an operator where
policy says ask), and then replace itself with the real binary
(``os.execve``) with the same argv, the same stdio and the same terminal, so
the exit code, signals and job control are the real tool's.

Kinds: the command is always the CLI line as typed, so the shell classifier
parses it; kubectl/helm/kustomize/oc are filed as ``k8s`` and the cloud and
IaC CLIs as ``cloud`` (same classification, but policy rules can select them
by kind); everything else (psql, mysql, gh, docker …) is ``shell``.

Two modes, chosen at install time:

- ``exec`` (default): the process *becomes* the tool. The shim reports
  ``started`` before the exec; nothing is left to report the exit code, so
  the action stays ``running`` in the audit log.
- ``wait``: fork, wait and report exit code and duration (the audit log then
  shows ``succeeded``/``failed``); SIGTERM/SIGHUP/SIGQUIT are forwarded, a
  session kill terminates the tool, SIGINT from the terminal reaches the tool
  directly (it shares the process group) and is not forwarded a second time,
  since a second Ctrl-C means "force quit" to terraform. Costs a Python
  process per running tool.

The gate fails closed: no token, an unreachable tower, a denial, or
proposals that could not be handed to the tower all exit 126 with the reason
on stderr, and the real tool never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from towerctl.integrations.gate_install import (
    FAST_ENTRY,
    MODES,
    GateError,
    Mode,
    check_tool_name,
    fastclient_path,
    install,
    installed,
    uninstall,
    wrapper_script,
)
from towerctl.integrations.gate_lookup import Lookup, find_real, kind_for, target_for
from towerctl.localshim.shimclient.gate import MARKER, is_wrapper

if TYPE_CHECKING:

    from agent_shim import Action

EXIT_DENIED: Final = 126
EXIT_NOT_FOUND: Final = 127
#: Seconds to reach the tower before refusing (``TOWER_CONNECT_TIMEOUT`` overrides).
CONNECT_TIMEOUT_S: Final = 3.0

# ---------------------------------------------------------------------- run


def _say(message: str) -> None:
    sys.stderr.write(f"towerctl gate: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class Exec:
    """What to ``execve`` once the event loop is gone."""

    real: str
    argv: list[str]
    env: dict[str, str]


def _agent_name() -> str:
    from towerctl.config import load_file

    return os.environ.get("TOWER_AGENT") or load_file().get("agent") or f"{getpass.getuser()}-gate"


async def _gate(
    action: Action,
    argv: list[str],
    real: str,
    env: dict[str, str],
    mode: Mode,
    url: str,
    token: str,
    agent: str,
    tower_env: str,
    connect_timeout: float,
) -> int | Exec:
    from agent_shim import ActionDenied, SessionKilled, Shim
    from towerctl.integrations import runtime

    child: list[asyncio.subprocess.Process] = []

    def on_kill(exc: SessionKilled) -> None:
        for proc in child:
            if proc.returncode is None:
                proc.terminate()

    shim = Shim(url, token, agent=agent, env=tower_env, connect_timeout=connect_timeout, on_kill=on_kill)
    closed = False
    try:
        try:
            await runtime.connect(shim, connect_timeout)
        except runtime.Unreachable as exc:
            _say(f"{argv[0]}: denied: tower unreachable at {url} ({exc}); failing closed")
            return EXIT_DENIED
        ruling = shim.gate.judge(action)
        if ruling.verdict == "ask":
            _say(
                f"{action.command[:200]}: waiting for an operator's approval "
                f"(up to {ruling.timeout_s}s; {ruling.explanation})"
            )
        try:
            approved = await shim.admit(action)
        except (ActionDenied, SessionKilled) as exc:
            who = f" by {exc.by}" if exc.by else ""
            _say(f"{argv[0]}: denied{who}: {exc.reason}")
            return EXIT_DENIED
        approved.verify()
        # What runs is re-derived from the approved text, never from our variables.
        if shlex.split(approved.action.command) != argv:
            shim.report(approved, error="refused: approved command differs from the invocation")
            _say(f"{argv[0]}: refused: the approved command differs from the invocation")
            return EXIT_DENIED
        if mode == "exec":
            closed = True
            if not await runtime.flush(shim):
                _say(
                    f"{argv[0]}: denied: the tower did not receive the proposal; "
                    "refusing to run it unrecorded"
                )
                return EXIT_DENIED
            return Exec(real, argv, env)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, executable=real, env=env)
        except OSError as exc:
            approved.set_result(EXIT_NOT_FOUND)
            shim.report(approved, error=f"cannot run {real}: {exc.strerror}")
            _say(f"cannot run {real}: {exc.strerror}")
            return EXIT_NOT_FOUND
        child.append(proc)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            loop.add_signal_handler(sig, proc.send_signal, sig)
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # the tool got it from the terminal
        code = await proc.wait()
        approved.set_result(code)
        shim.report(approved)
        closed = True
        if not await runtime.flush(shim):
            _say(f"{argv[0]}: warning: the outcome could not be reported to the tower")
        return code if code >= 0 else 128 - code
    finally:
        if not closed:
            await runtime.flush(shim)


def run(
    tool: str,
    args: list[str],
    *,
    gate_dir: str = "",
    mode: Mode = "exec",
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    env_name: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> int:
    """Gate one invocation. Returns an exit code, or does not return (``execve``)."""
    from pydantic import ValidationError

    from agent_shim import Action, new_action_id
    from towerctl.config import ConfigError, resolve
    from towerctl.integrations.runtime import quiet_shim_log

    check_tool_name(tool)
    quiet_shim_log()
    found = find_real(tool, gate_dir, os.environ.get("PATH", os.defpath))
    if found.real is None:
        if found.only_wrappers:
            _say(
                f"{tool}: refused: the only {tool} on PATH is the towerctl wrapper itself "
                f"(install the real {tool} or put its directory after {gate_dir or 'the gate directory'})"
            )
            return EXIT_DENIED
        _say(f"{tool}: command not found on PATH")
        return EXIT_NOT_FOUND
    try:
        settings = resolve(url=url, token=token, agent=agent or _agent_name(), env=env_name, role="agent")
    except ConfigError as exc:
        _say(f"{tool}: denied: {exc}")
        return EXIT_DENIED
    if not settings.token:
        _say(f"{tool}: denied: no agent token (set TOWER_TOKEN or agent_token in the towerctl config)")
        return EXIT_DENIED
    argv = [tool, *args]
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    try:
        action = Action(
            action_id=new_action_id(),
            kind=kind_for(tool),
            command=shlex.join(argv),
            target=target_for(tool, os.environ),
            cwd=cwd[:4096],
        )
    except ValidationError as exc:
        _say(f"{tool}: denied: this invocation cannot be put to review ({exc.errors()[0]['msg']})")
        return EXIT_DENIED
    child_env = dict(os.environ)
    child_env["PATH"] = found.path
    try:
        outcome = asyncio.run(
            _gate(
                action,
                argv,
                found.real,
                child_env,
                mode,
                settings.url,
                settings.token,
                settings.agent,
                settings.env,
                connect_timeout,
            )
        )
    except KeyboardInterrupt:
        _say(f"{tool}: interrupted before it ran")
        return 130
    if isinstance(outcome, int):
        return outcome
    return _exec(outcome)


def _exec(plan: Exec) -> int:
    # Python ignores SIGPIPE and SIGXFSZ; an exec'd tool must get the defaults
    # back (``kubectl get pods | head`` should die quietly, as without the gate).
    for name in ("SIGPIPE", "SIGXFSZ"):
        sig = getattr(signal, name, None)
        if sig is not None:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(plan.real, plan.argv, plan.env)
    except OSError as exc:
        _say(f"cannot run {plan.real}: {exc.strerror}")
    return EXIT_NOT_FOUND


def main(argv: list[str] | None = None) -> int:
    """Entry point of the wrapper scripts: ``GATE_DIR MODE TOOL [ARGS…]``.

    Kept free of click: it runs in front of every gated invocation.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] not in MODES:
        _say("usage: python -m towerctl.integrations.gate_wrapper GATE_DIR exec|wait TOOL [ARGS...]")
        return EXIT_DENIED
    mode: Mode = "exec" if args[1] == "exec" else "wait"
    try:
        timeout = float(os.environ.get("TOWER_CONNECT_TIMEOUT") or CONNECT_TIMEOUT_S)
    except ValueError:
        timeout = CONNECT_TIMEOUT_S
    try:
        return run(args[2], args[3:], gate_dir=args[0], mode=mode, connect_timeout=max(0.1, timeout))
    except GateError as exc:
        _say(str(exc))
        return EXIT_DENIED
    except Exception as exc:
        _say(f"{args[2]}: denied: the gate failed ({type(exc).__name__}: {exc}); failing closed")
        return EXIT_DENIED


if __name__ == "__main__":
    sys.exit(main())


#: Installing lives in gate_install and the tool lookup in gate_lookup; both are
#: re-exported here, the gates' one entry point.
__all__ = [
    "EXIT_DENIED",
    "EXIT_NOT_FOUND",
    "FAST_ENTRY",
    "MARKER",
    "MODES",
    "GateError",
    "Lookup",
    "Mode",
    "check_tool_name",
    "fastclient_path",
    "find_real",
    "install",
    "installed",
    "is_wrapper",
    "kind_for",
    "main",
    "run",
    "target_for",
    "uninstall",
    "wrapper_script",
]
