"""Group commit: concurrent puts share one write transaction and one commit (DESIGN section 5).

Leader-follower, with no background thread. A put queues its already-encoded checkpoint; when no
other caller is committing, it becomes the leader at once and commits every queued checkpoint
(its own among them) in one write transaction, then wakes each caller with its own result.
Callers that arrive while a commit (and its fsync) runs queue up behind it, and the first of them
leads the next group. So a lone writer commits in its own thread with no hand-off and no
artificial delay, exactly as in ``sync`` mode, while many writers share each fsync.

Why not a committer thread: handing every put to another thread and back costs two thread
switches per put (the GIL makes them dear), which would slow the single writer; a thread also
has to be started, stopped on close and never inherited across ``fork()``. With leader-follower
every queued checkpoint is owned by a caller that is still waiting, and the last waiter left
leads, so nothing queued can be stranded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import LmdbStateError
from .kv import WriteTxn

T = TypeVar("T")

MAX_QUEUED = 1024
"""Checkpoints waiting for a commit; a put blocks while this many wait."""
MAX_GROUP = 256
"""Checkpoints committed in one transaction at most: bounds a group's commit time."""
MAX_GATHER = 0.001
"""Seconds a leader waits at most for its group to fill (see ``GroupCommitter._gather``)."""

Item = Callable[[WriteTxn], Any]
Outcome = tuple[Any, LmdbStateError | None]
WriteGroup = Callable[[Callable[[WriteTxn, list[Item]], list[Outcome]], list[Item]], list[Outcome]]
"""Runs a function in one write transaction and commits it (``LmdbBackend.write``)."""


class _Slot(Generic[T]):
    """One caller's checkpoint, and its result once the group holding it has committed."""

    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: Callable[[WriteTxn], T]) -> None:
        self.item = item
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.wake = threading.Event()  # set when done, or when this caller is to lead

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


def _apply_group(txn: WriteTxn, items: list[Item]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for item in items:
        try:
            outcomes.append((item(txn), None))
        except LmdbStateError as exc:
            # Safe only because an item raises lmdbstate's own errors (a sequence conflict, a
            # damaged index entry) before its first write (``_PendingPut.apply`` keeps every
            # check ahead of its puts): the failed item left nothing in the transaction, so the
            # others commit without it. LMDB's errors (a full map among them) are not caught:
            # they abort the whole group, and ``run_write`` retries it after growing the map.
            outcomes.append((None, exc))
    return outcomes


class PutsUnderWay:
    """The grouped puts one store object has under way: its ``close`` waits for them.

    Queued puts are committed by their own callers (one of them leads), so a store that closes
    waits until each has committed or failed, and its storage outlives them; puts that come
    after the close are refused.
    """

    def __init__(self) -> None:
        self._count = 0
        self._drained = threading.Condition()

    def commit(
        self,
        committer: GroupCommitter,
        item: Callable[[WriteTxn], T],
        write: WriteGroup,
        usable: Callable[[], object],
    ) -> T:
        """``committer.commit(item, write, usable)``, counted while it runs.

        Raises:
            StoreClosedError: from ``usable``, when the store is closed already.
        """
        with self._drained:
            usable()
            self._count += 1
        try:
            return committer.commit(item, write, usable)
        finally:
            with self._drained:
                self._count -= 1
                if not self._count:
                    self._drained.notify_all()

    def close(self, mark_closed: Callable[[], None], committer: GroupCommitter | None) -> None:
        """Run ``mark_closed`` (after which ``usable`` raises), then wait for the puts."""
        with self._drained:
            mark_closed()
            if committer is not None:
                committer.wake_waiters()  # puts waiting for room see the store closed
            self._drained.wait_for(lambda: not self._count)


class GroupCommitter:
    """The queue and the leader of one environment's group commits."""

    def __init__(self, max_queued: int = MAX_QUEUED, max_group: int = MAX_GROUP) -> None:
        self._max_queued = max_queued
        self._max_group = max_group
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when the queue shrinks
        self._queue: deque[_Slot[Any]] = deque()
        self._arrived = threading.Condition(self._lock)  # notified when a put queues
        self._leading = False
        self._last_group = 1  # puts in the last group committed
        self._last_commit = 0.0  # seconds the last commit took

    def commit(
        self, item: Callable[[WriteTxn], T], write: WriteGroup, usable: Callable[[], object]
    ) -> T:
        """Commit ``item`` with whatever else is queued; return its result once durable.

        Args:
            item: writes one checkpoint in the transaction it is given; it must raise
                lmdbstate's errors only before its first write.
            write: runs a function in one write transaction and commits it.
            usable: raises ``StoreClosedError`` once the caller's store is closed; checked
                while the put waits for room in the queue.

        Raises:
            StoreClosedError: the store was closed while this put waited for room; nothing
                was queued or written.
            LmdbStateError: the item's own error, or the error that failed its whole group.
        """
        slot = _Slot(item)
        with self._lock:
            while len(self._queue) >= self._max_queued:
                usable()
                self._room.wait()
            self._queue.append(slot)
            self._arrived.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            try:
                slot.wake.wait()
            except BaseException:
                self._abandon(slot)
                raise
            if slot.done:
                return slot.outcome()
        self._lead(slot, write)
        return slot.outcome()

    def wake_waiters(self) -> None:
        """Wake puts waiting for room in the queue, so that they see their store closed."""
        with self._lock:
            self._room.notify_all()

    def _lead(self, own: _Slot[Any], write: WriteGroup) -> None:
        """Commit groups, oldest first, until ``own`` is committed; then pass the lead on."""
        try:
            while not own.done:
                with self._lock:
                    self._gather()  # may be interrupted (KeyboardInterrupt) with own queued
                    count = min(len(self._queue), self._max_group)
                    group = [self._queue.popleft() for _ in range(count)]
                    self._room.notify_all()
                started = time.perf_counter()
                self._commit(group, write)
                self._last_commit = time.perf_counter() - started
                self._last_group = len(group)
        finally:
            with self._lock:
                if not own.done and own in self._queue:
                    # Interrupted before its group was taken: nobody would wait for it.
                    self._queue.remove(own)
                    self._room.notify_all()
                self._pass_lead()

    def _gather(self) -> None:
        """Wait, briefly, for as many puts as the last group held (called with the lock held).

        The callers of a group that just committed put again at once, but each needs the GIL
        for a few microseconds first: a leader that committed what is queued at that moment
        would commit one put, then the rest, each with its own flush (measured with 16 writers:
        groups alternated between 1 and 16). The leader waits for the queue to reach the last
        group's size, for at most half the last commit's time (and ``MAX_GATHER``), so a lone
        writer (last group of 1) never waits and a wait costs less than the flush it saves.
        """
        target = min(self._last_group, self._max_group)
        if len(self._queue) >= target:
            return
        deadline = time.perf_counter() + min(self._last_commit / 2, MAX_GATHER)
        while len(self._queue) < target:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.wait(remaining)

    def _pass_lead(self) -> None:
        # Called with the lock held. Every queued slot's caller is still waiting for it.
        if self._queue:
            self._queue[0].wake.set()
        else:
            self._leading = False

    def _abandon(self, slot: _Slot[Any]) -> None:
        """A waiting caller was interrupted: drop its checkpoint unless a group holds it already."""
        with self._lock:
            if slot in self._queue:
                self._queue.remove(slot)
                self._room.notify_all()
                if slot.wake.is_set():  # it had been given the lead
                    self._pass_lead()

    @staticmethod
    def _commit(group: list[_Slot[Any]], write: WriteGroup) -> None:
        try:
            outcomes = write(_apply_group, [slot.item for slot in group])
        except BaseException as exc:
            for slot in group:
                slot.error = exc
                slot.done = True
                slot.wake.set()
            if not isinstance(exc, Exception):
                raise
            return
        # Only now, after the commit: a group retried after map growth reports its last run.
        for slot, (result, error) in zip(group, outcomes, strict=True):
            slot.result = result
            slot.error = error
            slot.done = True
            slot.wake.set()
