"""The client's exceptions: every error ``scheduler.client`` raises is a ``ClientError``.

HTTP and connection errors are translated into these at the boundary (``scheduler.client.client``)::

    ClientError                 an answer that is not the API we know (client and daemon versions differ)
    ├── ConnectionFailed        the daemon did not answer (GETs and submissions are tried 3 times first)
    ├── ApiError                the daemon refused the request: .status, .code, .message, .field
    │   ├── InvalidRequest      400, 422: a bad spec or parameter; .field names it ("spec.steps")
    │   ├── Unauthorized        401, 403: a missing, wrong or revoked token, or a right it lacks
    │   ├── NotFound            404: no such job (or another user's)
    │   ├── Conflict            409: the job's state forbids it (cancelling a finished job), or an
    │   │                       idempotency key reused for a different submission
    │   └── TooLarge            413: the request body is over the daemon's limit
    └── WaitTimeout             wait() outlived its own timeout; .job is the job as last seen
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.client.models import Job


class ClientError(Exception):
    """Base of every error the client raises; raised itself for an answer that is not the API we know."""


class ConnectionFailed(ClientError):
    """The daemon at ``url`` could not be reached, or did not answer in time."""

    def __init__(self, url: str, message: str):
        super().__init__(message)
        self.url = url


class ApiError(ClientError):
    """The daemon answered with an error: HTTP ``status``, a stable ``code``, a one-line ``message``, and
    the ``field`` at fault (``"spec.steps"``) or None."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @staticmethod
    def for_status(status: int) -> type[ApiError]:
        """The class of the error an HTTP ``status`` answer raises (``ApiError`` itself for one we do not name)."""
        return _ERRORS_BY_STATUS.get(status, ApiError)


class InvalidRequest(ApiError):
    """400 or 422: the submission or query is malformed; ``field`` says where."""


class Unauthorized(ApiError):
    """401 or 403: the token is missing or wrong."""


class NotFound(ApiError):
    """404: no job has that id."""


class Conflict(ApiError):
    """409: the job's state forbids the operation, such as cancelling a finished job; or an idempotency key was
    already used for a different submission."""


class TooLarge(ApiError):
    """413: the request body is larger than the daemon accepts."""


class WaitTimeout(ClientError):
    """``Client.wait`` gave up after ``timeout_s``; ``job`` is the job as last seen (it keeps running)."""

    def __init__(self, job: Job, timeout_s: float):
        super().__init__(f"job {job.id} is still {job.state} after {timeout_s:g} s")
        self.job = job
        self.timeout_s = timeout_s


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 422: InvalidRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
    413: TooLarge,
}
