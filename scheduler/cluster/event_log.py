"""The controller's log of worker events, numbered and kept until the daemon acknowledges them.

The daemon is the only database writer and may crash between fetching events and committing them, so an event
leaves the log only when the daemon acknowledges it, after its commit. Sequence numbers increase from 1 for
each log (each controller).
"""

from __future__ import annotations

import bisect
import logging
import threading

from workers.events import Progress, WorkerEvent

log = logging.getLogger(__name__)


class EventLog:
    """Numbered events, oldest first, with a long poll for new ones.

    ``lock`` is the controller's own (re-entrant) lock, so that recording what an event changes and logging it
    are one step. Beyond ``max_events`` unacknowledged events the oldest progress events are dropped (never
    started or finished ones), so a daemon that stays away long loses power samples, not outcomes.
    """

    def __init__(self, lock: threading.RLock, max_events: int):
        self._changed = threading.Condition(lock)
        self._max_events = max_events
        self._seqs: list[int] = []
        self._events: list[WorkerEvent] = []
        self._next_seq = 1

    @property
    def max_events(self) -> int:
        return self._max_events

    @max_events.setter
    def max_events(self, value: int) -> None:  # a restarted daemon's new setting (Controller.configure)
        with self._changed:
            self._max_events = value

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: WorkerEvent) -> int:
        """Number an event and wake the long polls; returns its number."""
        with self._changed:
            seq = self._next_seq
            self._next_seq += 1
            self._seqs.append(seq)
            self._events.append(event)
            if len(self._events) > self._max_events:
                self._drop_oldest_progress()
            self._changed.notify_all()
            return seq

    def _drop_oldest_progress(self) -> None:
        keep_from = len(self._events) // 2
        kept = [(s, e) for i, (s, e) in enumerate(zip(self._seqs, self._events))
                if i >= keep_from or not isinstance(e, Progress)]
        log.warning("event log full: dropped %d progress events", len(self._events) - len(kept))
        self._seqs = [s for s, _ in kept]
        self._events = [e for _, e in kept]

    def fetch(self, after_seq: int, timeout_s: float = 0.0, limit: int = 1000) -> list[tuple[int, WorkerEvent]]:
        """The events numbered above ``after_seq`` (at most ``limit``), oldest first; waits up to ``timeout_s``
        for one when there are none, and returns as soon as one arrives."""
        with self._changed:
            self._changed.wait_for(lambda: self._seqs and self._seqs[-1] > after_seq, timeout=timeout_s)
            start = bisect.bisect_right(self._seqs, after_seq)
            stop = start + limit
            return list(zip(self._seqs[start:stop], self._events[start:stop]))

    def ack(self, upto_seq: int) -> int:
        """Forget the events numbered up to ``upto_seq``; returns how many."""
        with self._changed:
            cut = bisect.bisect_right(self._seqs, upto_seq)
            del self._seqs[:cut], self._events[:cut]
            return cut
