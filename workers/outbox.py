"""How a worker's events reach the controller: one at a time, in order, retried while it is briefly away.

The controller is a threaded actor, which does not keep the order of calls, so the outbox waits for each event
to be accepted before it sends the next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from workers.events import WorkerEvent

log = logging.getLogger(__name__)

#: Delivers one event and returns once it is accepted; raises when it could not be.
Reporter = Callable[[WorkerEvent], None]


class Outbox:
    """Delivers events one at a time, in order, retrying while the controller is briefly unreachable."""

    def __init__(self, deliver: Reporter, attempts: int):
        self._deliver = deliver
        self._attempts = max(1, attempts)
        self._queue: queue.Queue[WorkerEvent] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="wattsched-outbox", daemon=True)
        self._thread.start()

    def put(self, event: WorkerEvent) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            for attempt in range(self._attempts):
                try:
                    self._deliver(event)
                    break
                except Exception as exc:  # noqa: BLE001 - any delivery failure is retried, then logged
                    if attempt + 1 == self._attempts:
                        log.error("dropping %s event of job %s: %s", event.type, event.job_id, exc)
                    else:
                        time.sleep(min(2.0**attempt, 10.0))


class ControllerReporter:
    """Sends an event to the named controller actor and waits until it is accepted."""

    def __init__(self, controller_name: str, namespace: str, timeout_s: float):
        self._name = controller_name
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._handle = None

    def __call__(self, event: WorkerEvent) -> None:
        import ray

        if self._handle is None:
            self._handle = ray.get_actor(self._name, namespace=self._namespace)
        try:
            ray.get(self._handle.report.remote(event), timeout=self._timeout_s)
        except Exception:
            self._handle = None  # look the controller up again: it may have been re-created
            raise
