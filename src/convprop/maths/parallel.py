"""Threads for the maths: a shared pool, its size, and the fixed split of a batch.

Results never depend on the thread count: work is cut into parts by size alone
(:func:`batch_parts`), and results are combined in part order, whichever thread ran
each part.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np

from convprop.errors import ConvpropError

_THREADS: dict[str, Any] = {"n": 1, "pool": None}


def set_num_threads(n: int) -> None:
    """Threads for ``Network.forward`` (its slices run in parallel; each writes its own
    rows) and members for ``loss_and_grads`` (the batch's fixed parts run on the caller
    and n - 1 worker processes, ``team.py``, or else on n threads; their gradients are
    summed in a fixed order).  Neither the split nor the order depends on n: results
    are bit-identical for any count.  The kernels release the GIL.  Default:
    $CONVPROP_NUM_THREADS, else every core available to the process."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConvpropError(f"number of threads must be a positive integer, got {n!r}")
    if n != _THREADS["n"] and _THREADS["pool"] is not None:
        _THREADS["pool"].shutdown()
        _THREADS["pool"] = None
    _THREADS["n"] = int(n)


def get_num_threads() -> int:
    return _THREADS["n"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int:
    text = os.environ.get("CONVPROP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else available_cores()


def _blas_switches() -> list[tuple[Callable[[], Any], Callable[[int], Any]]]:
    """(get, set) thread-count functions of each loaded BLAS library, looked up again
    only when modules were imported since (a new library may have come with them).  For
    OpenBLAS with its own threads, the library's own C functions (called through
    ctypes: a fraction of a microsecond, where threadpoolctl's wrappers take a few and
    this runs on every batch); otherwise threadpoolctl's."""
    if _THREADS.get("blas_modules") != len(sys.modules):
        _THREADS["blas_modules"] = len(sys.modules)
        from threadpoolctl import ThreadpoolController

        switches = []
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            symbol = getattr(lib, "_get_symbol", None)  # threadpoolctl internals, guarded
            raw = (symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")) \
                if symbol is not None and getattr(lib, "threading_layer", "") == "pthreads" \
                else (None, None)
            if None in raw:
                switches.append((lambda lib=lib: lib.num_threads, lib.set_num_threads))
            else:
                switches.append(raw)
        _THREADS["blas"] = switches
    return _THREADS["blas"]


_BLAS_LOCK = threading.Lock()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread inside: a threaded GEMM may sum in another order (different
    bits) and would oversubscribe the cores our own threads use.  Restored when the last
    of any concurrent callers (e.g. the explorer's request threads) leaves: the library
    setting is changed only on those two transitions, under a lock, never while another
    caller is inside, and only if it was not one thread already."""
    with _BLAS_LOCK:
        if _THREADS.get("blas_users", 0) == 0:
            restore = []  # (set, count) of each library changed here
            for get, set_ in _blas_switches():
                n = get()
                if n is not None and n != 1:
                    set_(1)
                    restore.append((set_, n))
            _THREADS["blas_restore"] = restore
        _THREADS["blas_users"] = _THREADS.get("blas_users", 0) + 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _THREADS["blas_users"] -= 1
            if _THREADS["blas_users"] == 0:
                for set_, n in _THREADS["blas_restore"]:
                    set_(n)


def parallel_map(fn: Callable[[int], Any], items: Sequence[int]) -> list[Any]:
    """[fn(i) for i in items], on n threads when set_num_threads(n) gave n > 1: the
    caller itself and up to n - 1 pooled threads, each taking the next item not yet
    taken until none is left (a thread slowed by another process on its core takes
    fewer; handing every item to the pool and waiting cost a thread wake-up per batch,
    10% of the paper's network at batch 50).  Each result goes to its item's place, so
    the order is that of ``items`` whichever thread ran what.  BLAS runs single-threaded
    inside (:func:`single_threaded_blas`): the same bits whatever the thread counts."""
    with single_threaded_blas():
        if _THREADS["n"] == 1 or len(items) < 2:
            return [fn(i) for i in items]
        if _THREADS["pool"] is None:  # the caller is one of the n threads
            _THREADS["pool"] = ThreadPoolExecutor(_THREADS["n"] - 1, "convprop")
        results: list[Any] = [None] * len(items)
        ticket = itertools.count()  # next() is atomic under the GIL

        def work() -> None:
            while (j := next(ticket)) < len(items):
                results[j] = fn(items[j])

        helpers = [_THREADS["pool"].submit(work)
                   for _ in range(min(_THREADS["n"], len(items)) - 1)]
        try:
            work()
        finally:  # never leave (and restore BLAS threads) while a helper still runs
            wait(helpers)
        for helper in helpers:
            helper.result()  # a helper's exception, raised here
        return results


def batch_parts(n: int, part: int, align: int = 8) -> list[int]:
    """Bounds [0, ..., n] of ceil(n / part) consecutive parts of a batch of n, every
    part after the first a multiple of ``align`` images and the first one taking the
    rest (50 in parts of 32: 0, 26, 50), as long as the first stays within ``part``;
    else near-equal parts (62: 0, 31, 62).  Depends on n and ``part`` only, never on the
    thread count.

    Why: with the batch innermost, a row of W·N values splits evenly into vectors when
    N is a multiple of 8; 24 + 26 images cost 7% less than 25 + 25 at one thread
    (float64 5%).  The first part goes to the caller (``team.py``), whose part starts
    first, so the larger part costs two threads nothing either."""
    return list(_batch_parts(n, part, align))


@functools.lru_cache(maxsize=256)  # on every batch: 1.3 -> 0.2 us
def _batch_parts(n: int, part: int, align: int) -> tuple[int, ...]:
    count = max(1, -(-n // part))
    even = [n * p // count for p in range(count + 1)]
    if count == 1:
        return tuple(even)
    rest = [(b - a) // align * align for a, b in zip(even[1:], even[2:])]
    first = n - sum(rest)
    if min(rest) == 0 or first > part:
        return tuple(even)
    return tuple(itertools.accumulate([first, *rest], initial=0))


def _raise_heap_thresholds() -> None:
    """Free one 16 MB block at import, so that glibc's allocator, which adapts its
    thresholds to the largest block freed so far, keeps the kernels' temporaries on its
    heap: by default it maps each block over 128 KB afresh and hands it back on free,
    and the float64 temporaries (0.2-0.7 MB for the paper's network) were then faulted
    in at every call: 325 page faults and 0.6 ms of system time per 25-image part,
    doubling its cost in ``convprop train`` and in the team's workers (a process that
    had imported PyTorch showed none).
    Fixing the thresholds instead (``mallopt``) would switch off that adaptation for
    the whole process: PyTorch in the same process ran 2.5x slower."""
    block = np.empty(16 << 20, np.uint8)  # malloc'd, never touched: no page faults
    del block


_raise_heap_thresholds()
_THREADS["n"] = _env_threads()
