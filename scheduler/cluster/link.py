"""The daemon's link to the controller actor: it notices when the actor is lost and gets it (or a new one) back.

The controller is a detached actor, but it can still die while the daemon runs (``ray.kill``, its node lost, an
out-of-memory kill) and be re-created, by the daemon or by anyone calling ``get_or_create_controller``. A Ray
handle never follows a re-created actor, so every daemon call goes through ``ControllerLink.call``:

- An error that says the actor itself is gone or not answering (not one the controller raised) starts an
  *outage*: logged once, shown by ``health()``, and raised as ``ControllerUnavailable``. Calls made during the
  outage fail at once, without touching Ray, so a dead controller never turns into a tight loop of failures.
- ``reacquire()`` (the daemon's event thread calls it) gets or creates the controller again, at most once per
  retry period, which doubles from ``RETRY_FIRST_S`` up to ``RETRY_MAX_S``. What a new controller has lost the
  daemon then reconciles, as at start; ``epoch`` says whether the controller is a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from scheduler.errors import ControllerUnavailable

log = logging.getLogger(__name__)

#: Seconds before the first attempt to get a lost controller back (the attempts after it wait twice as long).
RETRY_FIRST_S = 0.5
#: Seconds between attempts at most, however long the outage lasts.
RETRY_MAX_S = 30.0
#: Seconds the daemon waits for one answer before the controller counts as unavailable. Above the controller's
#: own waits for its workers (sync_workers may wait 30 s for new workers, then 30 s for probes).
CALL_TIMEOUT_S = 120.0


@dataclass
class Outage:
    """The controller could not be reached since ``since`` (UTC), because of ``reason``."""

    since: datetime
    reason: str
    next_try_s: float  # monotonic seconds of the next attempt to get it back
    attempts: int = 0


def controller_lost(exc: BaseException) -> bool:
    """Whether a Ray error says the controller actor itself is dead, unreachable or not answering.

    An error the controller raised while serving the call (a worker of its own died, say) arrives as a
    ``RayTaskError``, which may also be an instance of its cause's class: that is an answer, not an outage.
    """
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        return False
    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError))


class ControllerLink:
    """A handle on the controller actor that survives the actor's loss (see the module docstring).

    acquire: returns a handle on the controller, creating it when missing (the daemon passes
    ``get_or_create_controller`` with its options). monotonic: the clock of the retry times, a test seam.
    """

    def __init__(self, acquire: Callable[[], Any], *, monotonic: Callable[[], float] = time.monotonic):
        self._acquire = acquire
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reacquiring = threading.Lock()
        self._handle: Any = None
        self.epoch: str | None = None  # the controller's ``info()["epoch"]``: new for each controller
        self.generation = 0  # how many times a handle was acquired: the daemon reattaches when it changes
        self.outage: Outage | None = None

    @property
    def handle(self) -> Any:
        """The current actor handle (None before ``connect``)."""
        return self._handle

    @property
    def unavailable(self) -> bool:
        return self.outage is not None

    def connect(self) -> None:
        """Get or create the controller; raises what ``acquire`` raises (at daemon start, failing is right)."""
        self._adopt(self._acquire())

    def _adopt(self, handle: Any) -> None:
        import ray

        epoch = ray.get(handle.info.remote(), timeout=CALL_TIMEOUT_S)["epoch"]
        with self._lock:
            self._handle, self.epoch, self.outage = handle, epoch, None
            self.generation += 1

    def call(self, method: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Call ``method`` on the controller and wait for its answer (at most ``timeout_s``).

        Raises ControllerUnavailable when the actor is lost or an outage is on; the controller's own errors
        (ControllerError, ...) pass through.
        """
        import ray

        handle = self._usable_handle()
        try:
            return ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)
        except Exception as exc:
            if not controller_lost(exc):
                raise
            self._lost(handle, exc)
            raise ControllerUnavailable(self._unavailable_message()) from None

    def send(self, method: str, *args: Any) -> None:
        """Call ``method`` without waiting for an answer. A dead controller never gets it; the runs it lost are
        requeued (or, when cancelled, closed) by the reconciliation that follows."""
        handle = self._handle
        if handle is not None:  # even during an outage: an actor that was only unreachable may still get it
            getattr(handle, method).remote(*args)

    def _usable_handle(self) -> Any:
        with self._lock:
            if self.outage is not None or self._handle is None:
                raise ControllerUnavailable(self._unavailable_message())
            return self._handle

    def _lost(self, handle: Any, exc: BaseException) -> None:
        """Start an outage, unless one is on or this handle was already replaced (a call that began before)."""
        with self._lock:
            if handle is not self._handle or self.outage is not None:
                return
            self.outage = Outage(datetime.now(timezone.utc), _brief(exc), self._monotonic() + RETRY_FIRST_S)
        log.warning("the controller is unavailable (%s); getting it back, retrying for as long as it takes",
                    self.outage.reason)

    def _unavailable_message(self) -> str:
        outage = self.outage
        if outage is None:
            return "the daemon is not connected to the controller"
        return (f"the controller is unavailable since {outage.since:%H:%M:%S} UTC ({outage.reason}); "
                "the daemon is getting it back")

    def retry_in_s(self) -> float:
        """Seconds until ``reacquire`` will try again (0 when there is no outage)."""
        outage = self.outage
        return 0.0 if outage is None else max(0.0, outage.next_try_s - self._monotonic())

    def reacquire(self) -> bool:
        """Try once to get the controller back, if an outage is on and its retry time has come.

        True when a new handle is in place (compare ``epoch`` to learn whether it is a new controller).
        """
        outage = self.outage
        if outage is None or self._monotonic() < outage.next_try_s or not self._reacquiring.acquire(blocking=False):
            return False
        try:
            self._adopt(self._acquire())
        except Exception as exc:  # noqa: BLE001 - whatever failed, the next attempt comes after a longer pause
            outage.attempts += 1
            wait_s = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0**outage.attempts)
            outage.next_try_s = self._monotonic() + wait_s
            # The outage was logged when it began: a failed attempt is only worth a warning the first time.
            (log.warning if outage.attempts == 1 else log.debug)(
                "could not get the controller back (%s); trying again, at most every %.0f s", _brief(exc),
                RETRY_MAX_S)
            return False
        finally:
            self._reacquiring.release()
        lasted_s = (datetime.now(timezone.utc) - outage.since).total_seconds()
        log.warning("the controller is back after %.1f s (epoch %s)", lasted_s, self.epoch)
        return True

    def health(self) -> dict[str, Any]:
        """For the daemon's status: ``state`` (ok, unavailable, not connected), and during an outage since when
        and why."""
        outage = self.outage
        if outage is not None:
            return {"state": "unavailable", "since": outage.since.isoformat(), "reason": outage.reason,
                    "attempts": outage.attempts}
        if self._handle is None:
            return {"state": "not connected"}
        return {"state": "ok", "epoch": self.epoch}


def _brief(exc: BaseException) -> str:
    """The first line of an error (Ray's actor errors run to many lines), with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
