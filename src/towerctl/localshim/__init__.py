"""The local shim daemon and its fast client.

A gated ``kubectl get`` used to pay ~0.45 s for importing ``agent_shim``
(pydantic) and opening a new tower session, in every invocation. Here one
per-user daemon (:mod:`.daemon`, ``towerctl shimd``) holds real
``agent_shim.Shim`` sessions open, and the wrappers run
:mod:`.fastclient`, a standard-library-only script, which asks the daemon over
a unix socket and then ``exec``s the real tool.

- ``fastclient``: stdlib only, runs as ``python -I -S path/fastclient.py``;
  also the wire protocol's constants (the daemon imports them from it).
- ``daemon``: the asyncio unix-socket server around the shims.
"""
