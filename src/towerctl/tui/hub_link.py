"""The console's connection to the hub: connect, stream events, reconnect with backoff.

An operator console that gives up when the hub restarts is useless in the
incident that restarted it, so the link retries forever with capped,
jittered backoff and says what it is doing; only a refused token (HTTP
401/403) stops it, because retrying cannot fix that and would hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Final

from agent_shim.protocol import PROTOCOL_VERSION, ActionEvent, HubToOperator, OperatorWelcome
from towerctl.operator import OperatorClient, OperatorError
from towerctl.tui.state import MAX_ACTIONS, LinkStatus

MIN_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 10.0

ClientFactory = Callable[[str, str], OperatorClient]


class ConsoleClient(OperatorClient):
    """The operator client as the console runs it: its copy of finished actions is bounded.

    OperatorClient keeps every action it has seen (fine for a CLI command that
    lives for seconds). A console runs for hours at hundreds of actions a
    second, and the console's own state already keeps the recent ones
    (``MAX_ACTIONS``), so the client keeps pending actions and about as many
    finished ones. (Left unbounded, memory grows and so does every full garbage
    collection, which stops the event loop: 1,200 more objects each second.)
    """

    keep_actions: int = MAX_ACTIONS

    def _apply(self, msg: HubToOperator) -> None:
        super()._apply(msg)
        if isinstance(msg, ActionEvent) and len(self.actions) > self.keep_actions + 1000:
            excess = len(self.actions) - self.keep_actions
            for aid in list(itertools.islice(self.actions, excess)):  # oldest first
                if aid not in self.pending:
                    del self.actions[aid]


def default_client_factory(url: str, token: str) -> OperatorClient:
    return ConsoleClient(url, token, client="towerctl-tui")


def _refused(exc: OperatorError) -> bool:
    text = str(exc)
    return exc.code == "http" and (" 401" in text or " 403" in text)


class HubLink:
    """Runs one OperatorClient at a time and hands every event to ``on_message``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        factory: ClientFactory,
        on_message: Callable[[HubToOperator], None],
        on_status: Callable[[LinkStatus, str], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self._token = token
        self._factory = factory
        self._on_message = on_message
        self._on_status = on_status
        self._sleep = sleep
        self.client: OperatorClient | None = None

    @property
    def connected(self) -> bool:
        return self.client is not None and not self.client.closed.is_set()

    async def run(self) -> None:
        """Until cancelled (the app exits) or the hub refuses the token."""
        delay = MIN_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            self._on_status("connecting" if attempt == 1 else "reconnecting", "")
            client = self._factory(self.url, self._token)
            try:
                await client.connect()
            except Exception as exc:  # any failure to connect is retried, never fatal
                with contextlib.suppress(Exception):
                    await client.close()
                if isinstance(exc, OperatorError) and _refused(exc):
                    self._on_status("refused", str(exc))
                    return
                wait = delay * random.uniform(0.8, 1.2)
                self._on_status("reconnecting", f"{exc}; retrying in {wait:.0f}s")
                await self._sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            delay = MIN_BACKOFF_S
            self.client = client
            try:
                # connect() consumed the welcome; the views still need to know who we are.
                self._on_message(
                    OperatorWelcome.model_validate(
                        {"protocol": PROTOCOL_VERSION, "operator": client.name, "role": client.role}
                    )
                )
                self._on_status("connected", "")
                async for msg in client.events():
                    self._on_message(msg)
            except Exception as exc:  # a bad frame or a bug: drop this connection, make a new one
                self._on_status("reconnecting", f"connection failed: {exc}")
            finally:
                self.client = None
                with contextlib.suppress(Exception):
                    await client.close()
            self._on_status("reconnecting", "connection to the hub closed")
            await self._sleep(MIN_BACKOFF_S)
