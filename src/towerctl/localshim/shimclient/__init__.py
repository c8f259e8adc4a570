"""The local shim daemon's fast clients: standard library only.

Imported as ``towerctl.localshim.shimclient`` by the ``towerctl`` entry point
(``exec``, ``hook``), and as the top-level package ``shimclient`` by the gate
wrappers, which run ``python -I -S`` with ``towerctl/localshim`` appended to
``sys.path`` and import :mod:`towerctl.localshim.fastclient` by name; so its
modules import each other relatively, never through ``towerctl``.

- :mod:`.wire`: the protocol's constants, JSON without ``json``, the connection.
- :mod:`.settings`: ``TOWER_*`` knobs and the config resolution mirror.
- :mod:`.connect`: the socket path, starting the daemon, one conversation.
- :mod:`.runner`: argv as text, ``execve``, or run, wait and report.
- :mod:`.gate`, :mod:`.execcmd`, :mod:`.hook`: the three front ends.
"""
