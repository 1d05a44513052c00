"""The scheduler package's exceptions.

::

    WattschedError
    ├── ConfigError         a setting is missing or malformed
    ├── MissingExtra        a command needs an extra of the distribution that is not installed (names it)
    ├── DatabaseError       the database cannot be reached, upgraded or used
    ├── JobNotFound         no job has that id
    ├── InvalidRequest      a submission or query is malformed (names the field)
    ├── InvalidTransition   a job cannot go from its state to the one asked
    ├── ControllerError     the Ray controller is missing or refused an operation
    │   └── ControllerUnavailable   the controller actor is lost or not answering; the daemon is getting it back
    └── PolicyViolation     a policy's decision breaks the cluster's rules (a bug in the policy; scheduler.core)
"""

from __future__ import annotations


class WattschedError(Exception):
    """Base of every error the scheduler raises on purpose."""


class ConfigError(WattschedError):
    pass


class MissingExtra(WattschedError):
    """A command needs a package of an extra that is not installed; the message says what to pip install."""


class DatabaseError(WattschedError):
    pass


class JobNotFound(WattschedError):
    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class InvalidRequest(WattschedError):
    """A request a user can fix; ``field`` names what is wrong (``spec.steps``, ``deadline``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class InvalidTransition(WattschedError):
    pass


class ControllerError(WattschedError):
    pass


class ControllerUnavailable(ControllerError):
    """The controller actor died or does not answer; a running daemon gets it back (scheduler.cluster.link)."""


class PolicyViolation(WattschedError):
    """A decision no cluster may carry out (a start without room, a cap its profile lacks): a bug in the policy."""
