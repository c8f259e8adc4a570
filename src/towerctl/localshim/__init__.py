"""The local shim daemon and its fast clients.

A gated ``kubectl get``, ``towerctl exec`` and a Claude Code / Codex hook used
to pay ~0.5 s for importing ``agent_shim`` (pydantic) and opening a tower
connection, in every invocation. Here one per-user daemon (``towerctl shimd``)
holds real ``agent_shim.Shim`` sessions open, and the callers run a
standard-library-only client that asks it over a unix socket.

Client side (stdlib only; runs under ``python -I -S`` for the gates):

- :mod:`.fastclient`: the gate wrappers' entry point (imported by name), and
  the names it has always offered.
- :mod:`.shimclient`: the wire protocol, settings, daemon connection, and the
  gate / ``exec`` / hook front ends.

Daemon side:

- :mod:`.daemon`: the asyncio unix-socket server and its lifecycle.
- :mod:`.serverio`: peer checks, bounded request fields, reply lines.
- :mod:`.pool`: the shims, one per settings (and per agent session for hooks).
- :mod:`.admit`: ``admit`` requests (gates, ``towerctl exec``).
- :mod:`.hookserve`: ``hook`` requests (Claude Code, Codex).
"""
