"""What both sides of the team (``team.py``, ``team_worker.py``) share: the layout of a
worker's shared memory, its header's counters, a memory fence, and pipe helpers."""

from __future__ import annotations

import mmap
import os

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic

JOB, DONE, STATUS, SLEEP, NPARTS = range(5)  # header slots (int64)
MODE, MEMBER, MEMBERS = 5, 6, 7  # a job's kind (PARTS, SHARED), the worker's place in it
PARTS, SHARED = 0, 1  # whole parts each, or one part shared layer by layer (split.py)
_HEADER = 64  # bytes


@intrinsic
def _fence_intrinsic(typingctx):
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@njit(cache=True)
def fence() -> None:
    """A full memory fence: the data written before it is visible to another process
    before anything written after it (the counters)."""
    _fence_intrinsic()


class _Layout:
    """Byte offsets in a worker's shared memory, computed alike on both sides from
    (parameter sizes, dtype, input size, outputs, parts, images per part)."""

    def __init__(self, sizes: list[int], dtype: np.dtype, in_size: int, n_out: int,
                 parts: int, images: int):
        self.sizes, self.dtype, self.parts, self.images = sizes, np.dtype(dtype), parts, images
        self.in_size, self.n_out, n_par = in_size, n_out, sum(sizes)
        item = self.dtype.itemsize
        self.offsets = np.cumsum([0, *sizes])  # each parameter's place in a flat row
        self.counts = _HEADER  # int64 per part: images in the part
        self.floats = self.counts + 8 * parts  # float64 per part: share, loss
        self.params = _align(self.floats + 16 * parts)
        self.x = _align(self.params + item * n_par)
        self.t = _align(self.x + item * parts * images * in_size)
        self.g = _align(self.t + item * parts * images * n_out)
        self.size = _align(self.g + item * parts * n_par)

    def args(self) -> tuple:
        return (self.sizes, self.dtype.str, self.in_size, self.n_out, self.parts, self.images)

    def views(self, buf) -> dict[str, np.ndarray]:
        def at(offset: int, dtype, count: int) -> np.ndarray:
            return np.frombuffer(buf, dtype, count, offset)

        n_par, dt, p, m = sum(self.sizes), self.dtype, self.parts, self.images
        return {"header": at(0, np.int64, 8), "counts": at(self.counts, np.int64, p),
                "floats": at(self.floats, np.float64, 2 * p).reshape(p, 2),
                "params": at(self.params, dt, n_par),
                "x": at(self.x, dt, p * m * self.in_size).reshape(p, m, self.in_size),
                "t": at(self.t, dt, p * m * self.n_out).reshape(p, m, self.n_out),
                "g": at(self.g, dt, p * n_par).reshape(p, n_par)}


def _align(n: int) -> int:
    return -(-n // 64) * 64


def _unmap(mem: mmap.mmap | None) -> None:
    if mem is not None:
        try:
            mem.close()
        except BufferError:  # a view still alive somewhere: the collector closes it
            pass


def _read(fd: int, n: int) -> bytes:
    """Exactly n bytes from a pipe (fewer only at its end)."""
    out = b""
    while len(out) < n:
        more = os.read(fd, n - len(out))
        if not more:
            break
        out += more
    return out
