"""Exceptions an agent sees. Both carry the reason an operator or a rule gave."""

from __future__ import annotations


class ShimError(Exception):
    """Base class for everything the shim raises on purpose."""


class ActionDenied(ShimError):
    """The action must not run: policy, an operator, an expiry or the shim refused it."""

    def __init__(self, reason: str, *, action_id: str = "", by: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.action_id = action_id
        self.by = by


class SessionKilled(ShimError):
    """An operator killed this session: nothing more may run."""

    def __init__(self, reason: str = "session killed", *, by: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.by = by
