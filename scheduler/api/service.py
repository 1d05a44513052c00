"""What the REST API needs of a scheduler: the service interface the daemon implements.

The API depends on this, not on the whole ``Daemon``: a test or another host of the API (an API-only process
over the database) provides the same few operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scheduler.cluster.inventory import GpuInfo
    from scheduler.config import Settings
    from scheduler.store.auth import TokenStore
    from scheduler.store.jobs import JobStore, Submission
    from scheduler.store.models import Job


class SchedulerService(Protocol):
    """The operations behind the API's endpoints; ``owner`` limits an operation to that user id's jobs
    (None: any job, for admins)."""

    store: JobStore  # jobs, runs and history: reads, validation and ownership checks
    auth: TokenStore  # users and API tokens
    settings: Settings  # where the API listens and who may submit command jobs

    def submit_once(self, submission: Submission, user_id: int | None = None) -> tuple[Job, bool]:
        """Queue a job, or find the one its idempotency key made: (job, created now)."""

    def cancel(self, job_id: str, owner: int | None = None) -> Job: ...

    def hold(self, job_id: str, owner: int | None = None) -> Job: ...

    def release(self, job_id: str, owner: int | None = None) -> Job: ...

    def wait_for(self, job_id: str, timeout_s: float) -> Job:
        """The job once it is terminal, or as it is after ``timeout_s``."""

    def status(self) -> dict[str, Any]:
        """Policy, database, GPUs, queue, carbon health and controller health."""

    def carbon(self, zone: str | None = None, duration_s: float | None = None,
               horizon_s: float = 48 * 3600.0) -> list[dict[str, Any]]:
        """Each zone's intensity, signal health, forecast and cleanest window."""

    def inventory(self) -> Sequence[GpuInfo]:
        """The cluster's GPUs as last reported by the controller."""

    def db_pool_size(self) -> int:
        """How many database connections the API may use at once."""
