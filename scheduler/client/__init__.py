"""The Python client of the daemon's REST API: light to import (no torch, no Ray, no SQLAlchemy).

``client`` holds the ``Client`` and its HTTP plumbing, ``models`` what the API answers (``Job``, ``History``,
...), ``errors`` the ``ClientError`` tree. Import from here: ``from scheduler.client import Client, Job``.
"""

from scheduler.client.client import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_URL, Client
from scheduler.client.errors import (
    ApiError, ClientError, Conflict, ConnectionFailed, InvalidRequest, NotFound, TooLarge, Unauthorized, WaitTimeout,
)
from scheduler.client.models import History, HistoryRow, HistoryTotals, Job, JobEnergy, LogChunk, Run

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_URL", "Client",
    "ApiError", "ClientError", "Conflict", "ConnectionFailed", "InvalidRequest", "NotFound", "TooLarge",
    "Unauthorized", "WaitTimeout",
    "History", "HistoryRow", "HistoryTotals", "Job", "JobEnergy", "LogChunk", "Run",
]
