"""Clocks the daemon is given (never read directly), so tests and the demo can control time."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real wall clock, as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def to_unix_s(at: datetime) -> float:
    return at.timestamp()


def from_unix_s(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
