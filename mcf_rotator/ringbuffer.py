"""Fixed-capacity frame ring buffer between the camera thread and its consumers.

The camera thread must never wait on a slow consumer (the sensor would overrun), so by
default a full buffer drops its *oldest* frame and counts the drop. The GUI peeks at the
newest frame with :meth:`FrameRingBuffer.latest` without consuming it; the pipeline takes
frames in order with :meth:`FrameRingBuffer.get`.

For simulated runs that should process every frame as fast as possible (no real-time pacing)
``block_when_full=True`` makes :meth:`put` wait for room instead (back-pressure), so nothing
is dropped and the run is deterministic.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BufferClosed(Exception):
    """Raised by :meth:`FrameRingBuffer.get`/``put`` after :meth:`FrameRingBuffer.close`."""


class FrameRingBuffer(Generic[T]):
    """Thread-safe bounded FIFO that drops the oldest item when full."""

    def __init__(self, capacity: int = 64, block_when_full: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.block_when_full = bool(block_when_full)
        self._items: deque[T] = deque()
        self._latest: T | None = None
        self._cond = threading.Condition()
        self._dropped = 0
        self._put_count = 0
        self._closed = False

    # ------------------------------------------------------------------ producer
    def put(self, item: T, timeout_s: float | None = None) -> bool:
        """Add ``item``. Returns False only if blocking mode timed out (item not added)."""
        with self._cond:
            if self._closed:
                raise BufferClosed("ring buffer is closed")
            if len(self._items) >= self.capacity:
                if self.block_when_full:
                    deadline = None if timeout_s is None else time.monotonic() + timeout_s
                    while len(self._items) >= self.capacity and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return False
                        self._cond.wait(remaining)
                    if self._closed:
                        raise BufferClosed("ring buffer is closed")
                else:
                    self._items.popleft()
                    self._dropped += 1
            self._items.append(item)
            self._latest = item
            self._put_count += 1
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------------ consumers
    def get(self, timeout_s: float | None = None) -> T | None:
        """Oldest queued item, waiting up to ``timeout_s``; None on timeout.

        Raises :class:`BufferClosed` once the buffer is closed *and* empty, so a consumer
        drains everything queued before it stops.
        """
        with self._cond:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not self._items:
                if self._closed:
                    raise BufferClosed("ring buffer is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def latest(self) -> T | None:
        """Newest item ever put (not consumed; for display)."""
        with self._cond:
            return self._latest

    def clear(self) -> int:
        """Discard queued items (not counted as drops); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n

    def close(self) -> None:
        """Wake every waiter; further puts fail, gets drain then raise BufferClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept items again after :meth:`close` (queued items and counters are kept)."""
        with self._cond:
            self._closed = False

    # ------------------------------------------------------------------ stats
    @property
    def depth(self) -> int:
        """Items waiting for a consumer."""
        with self._cond:
            return len(self._items)

    @property
    def dropped(self) -> int:
        """Items discarded because the buffer was full."""
        with self._cond:
            return self._dropped

    @property
    def total_put(self) -> int:
        with self._cond:
            return self._put_count

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self.depth
