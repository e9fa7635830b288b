"""Who may use the model when: a priority lock (text before audio) and admission lanes (bounded queues).

The model is one set of weights used by one request at a time. A 10-minute audio query is encoded in
many small batches (`hade.index.search.AUDIO_QUERY_BATCH` windows), each under `PriorityLock.hold(LOW)`;
a text query takes `hold(HIGH)`, and a free lock goes to high-priority waiters first, so a text query
waits for at most one audio batch instead of the whole upload. So that a continuous stream of text
queries cannot starve audio, a LOW waiter gets the lock after `max_high_streak` HIGH grants in a row.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

log = logging.getLogger("hade.serve")

HIGH = 0
LOW = 1


MAX_HIGH_STREAK = 8


class PriorityLock:
    """A non-reentrant mutex whose next owner is a HIGH waiter when there is one, except that a LOW
    waiter goes first after `max_high_streak` HIGH grants in a row while it waited (no starvation)."""

    def __init__(self, max_high_streak: int = MAX_HIGH_STREAK) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting = [0, 0]
        self._streak = 0  # HIGH grants in a row while a LOW thread waited
        self.max_high_streak = int(max_high_streak)

    def _may_take(self, priority: int) -> bool:
        if self._held:
            return False
        low_turn = self._waiting[LOW] > 0 and self._streak >= self.max_high_streak
        if priority == HIGH:
            return not low_turn
        return low_turn or self._waiting[HIGH] == 0

    def waiting(self, priority: int) -> int:
        """Threads waiting at `priority` now (for tests and diagnostics)."""
        with self._cond:
            return self._waiting[priority]

    @property
    def held(self) -> bool:
        with self._cond:
            return self._held

    @contextmanager
    def hold(self, priority: int = HIGH) -> Iterator[None]:
        """Block until the lock is free (and, for LOW, no HIGH waits), hold it for the `with` body."""
        if priority not in (HIGH, LOW):
            raise ValueError(f"priority must be HIGH (0) or LOW (1), got {priority!r}")
        with self._cond:
            self._waiting[priority] += 1
            try:
                while not self._may_take(priority):
                    self._cond.wait()
            finally:
                self._waiting[priority] -= 1
                if not self._held:  # a HIGH waiter leaving (even by an exception) may unblock LOW ones
                    self._cond.notify_all()
            self._held = True
            self._streak = self._streak + 1 if priority == HIGH and self._waiting[LOW] > 0 else 0
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def guard(self, priority: int) -> Callable[[], ContextManager[None]]:
        """A zero-argument context-manager factory, the `guard=` of `Index.search`."""
        return lambda: self.hold(priority)


class Lane:
    """Admission control: at most `capacity` requests of one kind in flight; `try_enter` never blocks."""

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"lane {name}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = int(capacity)
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def try_enter(self) -> bool:
        """Take a place if one is free (True); False when the lane is full (the caller answers 503)."""
        with self._lock:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError(f"lane {self.name}: leave() without enter")
            self._in_flight -= 1


AUDIO_THREAD_NICE = 10


def lower_thread_priority(nice: int = AUDIO_THREAD_NICE) -> bool:
    """Lower the CPU priority of the calling thread only (Linux: nice is per thread); True when done.

    Why: while an upload is encoded its torch threads keep every core busy, and a text query's threads
    (event loop, request worker) would queue behind them for a time slice. Torch's OpenMP workers are
    created by the thread that first runs a model call and inherit its nice value, so the whole audio
    computation yields the CPU to text queries. Failure (other systems, no permission) is harmless.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        return False
    return True


def _glibc_function(name: str) -> Callable[..., int] | None:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None


_MALLOC_TRIM = _glibc_function("malloc_trim")
_MALLOPT = _glibc_function("mallopt")
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
ALLOCATORS = ("tuned", "system")  # `hade serve --allocator`: `tune_allocator`, or glibc as its environment says
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES  # glibc's own ratio when it moves the mmap threshold


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold at 256 MiB and its trim threshold at 512 MiB (process-wide; True when set).

    Why fixed: glibc otherwise moves both as large blocks are freed, so where a buffer lands, and whether
    freeing it gives pages back, depends on the requests before it. Why this high: a text query's
    re-ranking allocates tens of MB at a time (the candidates' decoded tokens, the head's activations).
    Below the mmap threshold those buffers are reused from the text thread's heap; above it each is a fresh
    mmap, faulted in and zeroed on every query. Likewise a heap whose free top exceeds the trim threshold is
    shrunk at once, and the next query faults the same pages in again. `benchmarks/index_scale.py
    --allocator tuned --allocator mmap-1m ...` measures the settings side by side (`hade serve --allocator
    system` with glibc's environment variables); the figures are in docs/search-scale.md. A burst of uploads cannot
    pile up heap behind them: model work runs on fixed pools (one text thread, the audio pool), and
    `release_memory` trims every heap after each upload whatever the thresholds.
    """
    if _MALLOPT is None:
        return False
    trim = _MALLOPT(ctypes.c_int(_M_TRIM_THRESHOLD), ctypes.c_int(TRIM_THRESHOLD_BYTES))
    return bool(_MALLOPT(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES))) and bool(trim)


def release_memory() -> None:
    """Give freed heap memory back to the OS after a large audio request.

    Why: a 10-minute upload's waveform and activations are freed when the request ends, but glibc keeps
    the freed pages in its per-thread arenas, so the server's RSS stays near its peak after a burst.
    `malloc_trim(0)` returns them; it is cheap (milliseconds) next to encoding a long clip.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(ctypes.c_size_t(0))


__all__ = ["ALLOCATORS", "HIGH", "LOW", "Lane", "PriorityLock", "lower_thread_priority", "release_memory", "tune_allocator"]
