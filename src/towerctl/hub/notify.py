"""Tell a chat channel when an approval has waited too long with nobody deciding.

``serve --webhook URL --webhook-after 60`` posts a Slack-compatible payload
(``{"text": …}``; Slack incoming webhooks, Mattermost, Rocket.Chat, Teams
workflows and most chat bridges take it) once per action, when that action has
been pending for more than N seconds. The hub's pending set is scanned a few
times per threshold, so approvals reloaded after a restart are covered too.

The POST runs on a small thread pool with urllib, never on the event loop; a
failing or slow webhook is logged and otherwise ignored: alerting must never
hold up or take down the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from agent_shim.protocol import ActionInfo
from towerctl.tasks import cancel_and_wait
from towerctl.textsafe import safe_text

if TYPE_CHECKING:
    from towerctl.hub.service import HubService

log = logging.getLogger("towerctl.notify")

POST_TIMEOUT_S: Final = 10.0


def slack_escape(text: str) -> str:
    """Plain text for Slack's mrkdwn: no control characters, no ``<!channel>`` or link injection."""
    text = safe_text(text, single_line=True)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def approval_text(info: ActionInfo, waited_s: float) -> str:
    aid = slack_escape(info.action.action_id)
    command = slack_escape(info.action.command[:300])
    who = slack_escape(f"{info.agent}@{info.env}")
    target = f" on {slack_escape(info.action.target)}" if info.action.target else ""
    reason = f' Reason given: "{slack_escape(info.action.reason[:200])}".' if info.action.reason else ""
    return (
        f":hourglass: towerctl: an approval has waited {int(waited_s)}s with nobody deciding. "
        f"{who} wants to run `{command}`{target} ({info.risk}, {info.action.kind}).{reason} "
        f"Action {aid}: `towerctl approve {aid}` or `towerctl deny {aid} --reason ...`"
    )


def post_json(url: str, payload: dict[str, object], timeout: float = POST_TIMEOUT_S) -> int:
    """POST ``payload`` as JSON; the HTTP status (raises on network errors and non-2xx)."""
    data = json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "towerctl"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # the operator's configured URL
        return int(resp.status)


class ApprovalNotifier:
    """Watches the hub's pending approvals; posts once per action past ``after_s``."""

    def __init__(
        self,
        url: str,
        after_s: float,
        service: Callable[[], HubService | None],
        *,
        post: Callable[[str, dict[str, object]], int] = post_json,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http:// or https://, not {url!r}")
        self.url = url
        self.after_s = after_s
        self._service = service
        self._post = post
        self._notified: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="towerctl-webhook")
        self._inflight: set[asyncio.Future[None]] = set()
        self.sent = 0
        self.scans = 0
        self.failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="approval-notifier")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        # Posts already handed to a thread finish (bounded by their timeout);
        # nothing waits for them here.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        period = min(1.0, max(0.05, self.after_s / 4))
        while True:
            try:
                self.scan()
            except Exception:  # a bug here must not end the watch
                log.exception("approval notifier scan failed")
            await asyncio.sleep(period)

    def scan(self) -> None:
        self.scans += 1
        svc = self._service()
        if svc is None:
            return
        now_ms = time.time_ns() // 1_000_000
        waiting = {aid: p.info for aid, p in svc.reg.pending.items()}
        self._notified &= set(waiting)  # forget decided ones
        for aid, info in waiting.items():
            waited_s = (now_ms - info.created_at) / 1000
            if aid in self._notified or waited_s < self.after_s:
                continue
            self._notified.add(aid)
            self._send(aid, approval_text(info, waited_s))

    def _send(self, action_id: str, text: str) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._deliver, action_id, text)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)

    def _deliver(self, action_id: str, text: str) -> None:
        try:
            status = self._post(self.url, {"text": text})
        except Exception as exc:  # any failure is logged, never fatal
            self.failed += 1
            log.warning("webhook for action %s failed: %s", action_id, exc)
            return
        self.sent += 1
        log.info("webhook for action %s sent (HTTP %s)", action_id, status)


__all__ = ["ApprovalNotifier", "approval_text", "post_json", "slack_escape"]
