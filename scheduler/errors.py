"""The scheduler package's exceptions: every error it raises on purpose, in one tree.

Vendor and HTTP errors are translated into these where they happen (a carbon provider's answer, a file, the
database). The Python client (``scheduler.client``) keeps its own tree, ``ClientError``
(``scheduler.client.errors``), as it ships without the daemon.

::

    WattschedError
    ├── ConfigError         a setting is missing or malformed
    ├── ApiServerError      the REST API could not listen (port taken, address not this machine's)
    ├── MissingExtra        a command needs an extra of the distribution that is not installed (names it)
    ├── DatabaseError       the database cannot be reached, upgraded or used
    │   └── DatabaseUnavailable  it refuses connections, does not answer in time, or is locked: try again later
    ├── JobNotFound         no job has that id
    ├── InvalidRequest      a submission or query is malformed (names the field)
    ├── KeyReused           an idempotency key this user already used for a different submission
    ├── InvalidTransition   a job cannot go from its state to the one asked
    ├── Unauthenticated     a request to the API without a valid token
    ├── Forbidden           a valid token without the right to what it asked (names the field)
    ├── TooLarge            a request body over the API's limit
    ├── ControllerError     the Ray controller is missing or refused an operation
    │   └── ControllerUnavailable   the controller actor is lost or not answering; the daemon is getting it back
    ├── PolicyViolation     a policy's decision breaks the cluster's rules (a bug in the policy; scheduler.core)
    ├── ProviderError       a carbon provider gave no usable answer (names the provider; never a token)
    │   ├── ProviderUnavailable  no answer: connection refused, timeout, HTTP 5xx after retries
    │   │   └── RateLimited      HTTP 429 with a Retry-After longer than we are willing to wait
    │   ├── BadCredentials       token or password missing or rejected (HTTP 401/403); not worth retrying
    │   ├── BadResponse          an answer we cannot trust: HTML error page, malformed or partial JSON,
    │   │                        missing fields, wrong units, implausible values, an unreadable trace file
    │   └── StaleData            a well-formed answer whose newest value is too old to describe the grid now
    ├── BadFile             a file cannot be used (names the file, the line and the field)
    │   ├── CarbonTraceError     a carbon-intensity trace CSV (scheduler.carbon.trace_file)
    │   └── InputError           the simulator's CLUSTER.toml, JOBS.csv or PROFILES.csv
    └── SimulationError     the simulator cannot go on
        └── ForecastPeek    a policy asked for an actual value after the virtual now
"""

from __future__ import annotations

from pathlib import Path


class WattschedError(Exception):
    """Base of every error the scheduler raises on purpose."""


class ConfigError(WattschedError):
    pass


class MissingExtra(WattschedError):
    """A command needs a package of an extra that is not installed; the message says what to pip install."""


class DatabaseError(WattschedError):
    pass


class DatabaseUnavailable(DatabaseError):
    """The database refused a connection, did not answer within its timeout, or stayed locked: a transient state.

    The API answers 503 with ``Retry-After: retry_after_s``; the daemon keeps what it could not record and tries
    again. Raised in place of the driver's error by the engine (scheduler.store.engine).
    """

    def __init__(self, message: str, retry_after_s: float = 2.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobNotFound(WattschedError):
    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class InvalidRequest(WattschedError):
    """A request a user can fix; ``field`` names what is wrong (``spec.steps``, ``deadline``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class KeyReused(WattschedError):
    """An idempotency key already used by this user for a different submission."""

    def __init__(self, key: str, job_id: str):
        super().__init__(f"idempotency_key: {key!r} was already used for job {job_id} with a different "
                         "request; use a new key for a new job")
        self.key = key
        self.job_id = job_id


class InvalidTransition(WattschedError):
    pass


class Unauthenticated(WattschedError):
    """No valid bearer token."""


class Forbidden(WattschedError):
    """A valid token without the right: ``field`` names what was asked."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class TooLarge(WattschedError):
    """A request body over the API's limit."""


class ControllerError(WattschedError):
    pass


class ControllerUnavailable(ControllerError):
    """The controller actor died or does not answer; a running daemon gets it back (scheduler.cluster.link)."""


class PolicyViolation(WattschedError):
    """A decision no cluster may carry out (a start without room, a cap its profile lacks): a bug in the policy."""


# --- carbon providers: translated at the provider boundary (HTTP, JSON, files) ---------------------------


class ProviderError(WattschedError):
    """A carbon provider gave no usable answer. ``provider`` names it; ``kind`` is a short label for status."""

    kind = "error"

    def __init__(self, provider: str, message: str):
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class ProviderUnavailable(ProviderError):
    kind = "unavailable"


class RateLimited(ProviderUnavailable):
    """The provider asked us to come back in ``retry_after_s`` seconds."""

    kind = "rate-limited"

    def __init__(self, provider: str, message: str, retry_after_s: float):
        super().__init__(provider, message)
        self.retry_after_s = retry_after_s


class BadCredentials(ProviderError):
    kind = "bad-credentials"


class BadResponse(ProviderError):
    kind = "bad-response"


class StaleData(ProviderError):
    kind = "stale"


# --- files ---------------------------------------------------------------------------------------------


class BadFile(WattschedError):
    """A file cannot be used; ``path``, ``line`` (1-based, header = 1) and ``field`` say where."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, problem: str):
        where = f"{path}" + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


class CarbonTraceError(BadFile):
    """A carbon-intensity trace CSV cannot be used."""


class InputError(BadFile):
    """One of the simulator's input files (CLUSTER.toml, JOBS.csv, PROFILES.csv) is malformed or inconsistent."""


# --- the simulator -------------------------------------------------------------------------------------


class SimulationError(WattschedError):
    """Base of the errors only the simulator raises."""


class ForecastPeek(SimulationError):
    """A policy asked the simulated forecast for an actual value after the virtual now."""


class ApiServerError(WattschedError):
    """The REST API could not listen (the port is taken, the address is not this machine's)."""
