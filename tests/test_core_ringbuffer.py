"""Frame ring buffer: drops oldest and counts, latest() peeks, blocking mode never drops."""

from __future__ import annotations

import threading

import pytest

from mcf_rotator.ringbuffer import BufferClosed, FrameRingBuffer


def test_drops_oldest_and_counts() -> None:
    rb: FrameRingBuffer[int] = FrameRingBuffer(3)
    for i in range(5):
        rb.put(i)
    assert rb.dropped == 2 and rb.depth == 3 and rb.total_put == 5
    assert rb.latest() == 4
    assert [rb.get(0), rb.get(0), rb.get(0)] == [2, 3, 4]
    assert rb.get(0.01) is None
    assert rb.latest() == 4  # latest is a peek, not consumed


def test_close_drains_then_raises() -> None:
    rb: FrameRingBuffer[int] = FrameRingBuffer(4)
    rb.put(1)
    rb.close()
    assert rb.get(0) == 1
    with pytest.raises(BufferClosed):
        rb.get(0)
    with pytest.raises(BufferClosed):
        rb.put(2)


def test_blocking_mode_never_drops_across_threads() -> None:
    rb: FrameRingBuffer[int] = FrameRingBuffer(2, block_when_full=True)
    got: list[int] = []

    def consume() -> None:
        while True:
            try:
                item = rb.get(1.0)
            except BufferClosed:
                return
            if item is not None:
                got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(500):
        assert rb.put(i, timeout_s=5)
    rb.close()
    t.join(5)
    assert got == list(range(500)) and rb.dropped == 0


def test_blocking_put_times_out_without_consumer() -> None:
    rb: FrameRingBuffer[int] = FrameRingBuffer(1, block_when_full=True)
    rb.put(0)
    assert rb.put(1, timeout_s=0.05) is False
    assert rb.depth == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameRingBuffer(0)
