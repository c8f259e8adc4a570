"""One JSON object per log line, for journald, Loki, Elasticsearch and friends.

``serve --log-json`` installs it on the root logger::

    {"ts": "2026-11-27T15:04:05.123Z", "level": "warning", "logger": "towerctl.notify",
     "message": "webhook for action a-1 failed: timed out", "pid": 4242}

Fields passed with ``extra={...}`` are included (when JSON can hold them,
else as their ``repr``); exceptions go in ``exc``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Final, TextIO

_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=repr, ensure_ascii=False)


def configure(level: int | str = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as JSON lines, replacing other root handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["JsonFormatter", "configure"]
