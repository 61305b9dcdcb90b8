"""The frames waiting for the matcher node's worker thread: a depth-1 slot or a bounded queue."""
from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar('T')


class FrameQueue(Generic[T]):
    """Frames waiting for the worker, at most ``capacity``; putting into a full queue evicts
    the oldest (capacity 1: the newest frame replaces the waiting one). Like queue.Queue,
    ``get`` marks a frame in flight until ``task_done``, and ``join`` waits for both."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._in_flight = 0

    def put(self, item: T) -> T | None:
        """Enqueue ``item``; returns the frame it evicted (None when there was room)."""
        with self._cond:
            evicted = self._items.popleft() if len(self._items) >= self.capacity else None
            self._items.append(item)
            self._cond.notify_all()
            return evicted

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait until a ``put`` would evict nothing (the consumer took what waited); False
        after ``timeout`` or once closed."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self._closed or len(self._items) < self.capacity, timeout)
            return ready and not self._closed

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest waiting frame; None after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if self._closed:
                return None
            self._in_flight += 1
            self._cond.notify_all()  # a producer may be waiting for room
            return self._items.popleft()

    def task_done(self) -> None:
        """The frame from the last ``get`` is finished."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no frame waits or is in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._in_flight,
                                       timeout)

    def close(self) -> None:
        """Wake the worker and make every later ``get`` return None."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
