"""Where real agents plug in without changing their code.

- ``gate_wrapper``: wrapper scripts put first on an agent's ``PATH`` that send
  each ``kubectl``/``terraform``/… invocation through the shim, then ``exec``
  the real binary.
- ``claude_code`` / ``codex``: map those agents' ``PreToolUse`` hook JSON to a
  tower ``Action`` (pure functions, no I/O) and build their settings snippets.
- ``hooks``: the one-shot hook runner both agents share (connect, ask, answer,
  fail closed).
- ``runtime``: the private state directory, the per-session lock and the
  connect/watchdog helpers the one-shot processes need.

Everything here is a thin I/O layer around ``agent_shim``: the judgement is
the shim's, so a gated ``kubectl`` and a hooked ``Bash`` tool are classified
and policy-checked exactly like ``towerctl exec``.
"""
