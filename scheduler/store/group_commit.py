"""Group commit: writes that arrive together share one database transaction.

A submission's cost is mostly the database's: a connection check, the statements and the commit, each a round
trip that waits for the server to be scheduled. Eight clients submitting at once need not pay eight times: the
first caller to find no write under way writes everything queued by then (its own item included) in one
transaction, and the callers that arrived meanwhile wait for it, or for the next one, which takes whatever
queued while the first was written. Nobody waits for a batch to fill: a lone caller writes at once.

Each caller is answered only once the transaction holding its item has committed (or failed): an answer never
runs ahead of the commit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Most items in one transaction: a bound on the statement's size (PostgreSQL takes at most 65,535 parameters
#: in one statement; a job row has about 25) and on how long the first of a batch waits for the last.
MAX_BATCH = 100


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    done: bool = False
    result: Result | None = None
    error: BaseException | None = field(default=None)


class GroupCommit(Generic[Item, Result]):
    """Hands items to ``write`` in batches, one batch at a time, and gives each caller its own outcome.

    ``write(items)`` writes them in one transaction and returns one outcome per item, in order: its result, or
    the exception that caller should get (an item the database refused, while the others were written). An
    exception ``write`` raises is every item's of that batch (the database is away, say).
    """

    def __init__(self, write: Callable[[list[Item]], Sequence[Result | BaseException]], max_batch: int = MAX_BATCH):
        self._write = write
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending[Item, Result]] = []
        self._writing = False

    @property
    def queued(self) -> int:
        """How many items wait for the next transaction (not those being written now)."""
        with self._cond:
            return len(self._queue)

    def __call__(self, item: Item) -> Result:
        """Write ``item`` with whatever else is waiting; its result once committed (or its exception)."""
        pending: _Pending[Item, Result] = _Pending(item)
        with self._cond:
            self._queue.append(pending)
            while True:
                while self._writing and not pending.done:
                    self._cond.wait()
                if pending.done:
                    return _outcome(pending)
                # No write under way and ours still queued: write what is queued, ours among it (the queue is
                # first in, first out, so a queue longer than a batch may take more than one turn).
                self._writing = True
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                self._cond.release()
                try:
                    self._write_batch(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()

    def _write_batch(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            outcomes = list(self._write([p.item for p in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} writes gave {len(outcomes)} outcomes")
        except BaseException as exc:  # every caller of the batch must be answered, whatever went wrong
            outcomes = [exc] * len(batch)
        for pending, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                pending.error = outcome
            else:
                pending.result = outcome
            pending.done = True


def _outcome(pending: _Pending[Item, Result]) -> Result:
    if pending.error is not None:
        raise pending.error
    return pending.result  # type: ignore[return-value]
