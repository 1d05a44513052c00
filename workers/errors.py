"""The exceptions the workers package raises.

::

    WorkersError            anything that went wrong in workers/
     ├── SpecError          a job spec (or what it points to) is not acceptable; names the field and what is accepted
     ├── DuplicateKind      two job kinds were registered under one name
     ├── WorkerBusy         a worker asked to start a job already runs one
     ├── JobFailed          a job started but could not finish (diverged, crashed in its child process)
     └── MeterError         an energy meter could not be opened or read

Vendor errors (torch, NVML, file system) are translated into these at the boundary where they happen, so the
controller only has to know this tree. Messages say what to do about the problem.
"""

from __future__ import annotations


class WorkersError(Exception):
    """Base class of every error raised on purpose by the workers package."""


class SpecError(WorkersError):
    """A job spec is not acceptable.

    field: the offending field as the user wrote it, e.g. ``spec.steps`` or ``kind``.
    accepted: what that field accepts, in words, e.g. ``an integer from 1 to 1000000``.
    """

    def __init__(self, message: str, *, field: str, accepted: str) -> None:
        super().__init__(message)
        self.field = field
        self.accepted = accepted

    def __reduce__(self):
        # Keyword-only arguments defeat Exception's default pickling, and Ray pickles exceptions across processes.
        return _rebuild_spec_error, (str(self), self.field, self.accepted)


def _rebuild_spec_error(message: str, field: str, accepted: str) -> SpecError:
    return SpecError(message, field=field, accepted=accepted)


class DuplicateKind(WorkersError):
    """Two job kinds were registered under one name; rename one of them."""


class JobFailed(WorkersError):
    """A job started but could not finish; the message says why and what to change."""


class MeterError(WorkersError):
    """An energy meter could not be opened or read."""


class WorkerBusy(WorkersError):
    """The worker already runs a job; cancel it or pick an idle worker."""
