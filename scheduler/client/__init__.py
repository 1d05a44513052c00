"""The Python client of the daemon's REST API: light to import (no torch, no Ray, no SQLAlchemy)."""

from scheduler.client.client import (  # noqa: F401  (the public API)
    DEFAULT_HOST, DEFAULT_PORT, Client, ClientError, History, Job, JobEnergy, Unauthorized, WaitTimeout,
)
