"""The open-file limit of a process that holds a socket per agent.

Why: every connected agent and operator holds one descriptor for as long as
it is connected, and most systems start processes with a soft limit of 1,024
descriptors although the hard limit is far higher (systemd's default hard
limit is 524,288). A hub started that way stops accepting agents near its
thousandth connection, which is when a whole fleet is busy at once: the
moment the tower must not fall over. So ``serve`` and ``up`` raise their soft
limit to the hard one before they listen, as Go's runtime does for every
program since 1.19, and say how many connections that leaves room for.
Only the soft limit moves: raising the hard one needs privileges, and is the
operator's call (``ulimit -Hn``, systemd's ``LimitNOFILE=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Descriptors the hub needs besides its connections: the database, its WAL
#: and shared memory, the reader's copies, the writer process's socket, the
#: listening sockets, stdio, the signal wakeup pipe, the event loop's epoll.
RESERVED: Final = 32
#: Below this many connections' worth, serve warns at start.
LOW_WATER: Final = 2048
#: Where the hard limit is "unlimited", the soft one is raised this far at
#: most (macOS refuses more than kern.maxfilesperproc; Linux caps at nr_open).
_UNLIMITED_TRIES: Final = (1 << 20, 65536, 10240)


#: A limit of RLIM_INFINITY, as OpenFiles holds it.
UNLIMITED: Final = -1


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The soft limit before and after raising it, and the hard one (each UNLIMITED or a count)."""

    before: int
    soft: int
    hard: int

    @property
    def connections(self) -> int | None:
        """About how many agents and operators can be connected at once; None: no limit."""
        return None if self.soft == UNLIMITED else max(0, self.soft - RESERVED)

    def describe(self) -> str:
        def show(n: int) -> str:
            return "unlimited" if n == UNLIMITED else str(n)

        raised = f", raised from {show(self.before)}" if self.soft != self.before else ""
        room = "" if self.connections is None else f": room for ~{self.connections} connections"
        return f"open-file limit {show(self.soft)} (hard {show(self.hard)}{raised}){room}"

    def warning(self) -> str | None:
        """What to tell the operator when the limit is low for a fleet; None when it is not."""
        if self.connections is None or self.connections >= LOW_WATER:
            return None
        return (
            f"warning: the open-file limit is {self.soft}, so this hub can hold only "
            f"~{self.connections} agents and operators at once; raise the hard limit "
            "(ulimit -Hn, or LimitNOFILE= in a systemd unit) for a larger fleet"
        )


def raise_open_file_limit() -> OpenFiles | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; never fails.
    None where the platform has no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = soft
    if soft != inf:
        for want in _UNLIMITED_TRIES if hard == inf else (hard,):
            if want <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError):
                continue
            now = want
            break

    def held(n: int) -> int:
        return UNLIMITED if n == inf else n

    return OpenFiles(before=held(soft), soft=held(now), hard=held(hard))
