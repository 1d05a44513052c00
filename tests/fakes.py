"""Test doubles shared by several test modules (imported as ``from fakes import ...``: tests/ is on sys.path)."""

from datetime import datetime, timedelta


class FakeClock:
    """A clock the test sets (``clock.now = ...``) or moves (``clock.advance(minutes=5)``); aware datetimes."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)
