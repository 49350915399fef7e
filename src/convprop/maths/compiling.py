"""Compiling the kernels up front: which ones a network needs (its dtype, the GEMM
path's only if a layer takes it), whether running them will compile (neither loaded
nor in numba's disk cache), and compiling them, half on the team's worker when one is
started (``team.compile_aside``)."""

from __future__ import annotations

import numpy as np

from convprop.maths import kernels, kernels_dense, kernels_gemm, team


def _has(signatures, dtype: np.dtype) -> bool:
    """Whether one of numba's signatures is for arrays of ``dtype`` (each kernel takes
    arrays of a single dtype)."""
    want = f"Array({np.dtype(dtype).name}, "
    return any(want in str(sig) for sig in signatures)


def _on_disk(kernel, dtype: np.dtype) -> bool:
    """Whether numba's on-disk cache holds ``kernel`` for this dtype (read from the
    cache index; any failure to read it counts as 'not cached')."""
    try:
        index = kernel._cache._cache_file._load_index()  # numba internals, guarded
    except Exception:  # noqa: BLE001 - a missing or unreadable index: will compile
        return False
    return _has([key[0] for key in index], dtype)


def needs_compile(dtype, gemm: bool = False) -> bool:
    """True when running the kernels in ``dtype`` (with the GEMM path's if ``gemm``)
    will compile them: a first run, or a new numba/Python.  Kernels compile per dtype;
    the activation codes share one compilation."""
    dt = np.dtype(dtype)
    used = [kernels._conv_forward, kernels._conv_backward, *kernels_dense.kernels_used()]
    used += kernels_gemm.kernels_used() if gemm else []
    return any(not (_has(k.signatures, dt) or _on_disk(k, dt)) for k in used)


def compile_passes(dtype, codes, gemm: bool, passes=("forward", "backward")) -> None:
    """Compile (or load from the disk cache) the kernels of ``passes`` for ``dtype`` and
    each kernel code in ``codes`` (the GEMM path's too if ``gemm``), by running them
    once on a tiny batch.  "forward" includes the fully connected layers' kernels."""
    dt = np.dtype(dtype)
    x, w, b = np.zeros((1, 6, 6, 1), dt), np.zeros((2, 1, 5, 5), dt), np.zeros(2, dt)
    consts = np.array([1.0, 0.0, 0.25], dt)
    paths = [kernels, kernels_gemm] if gemm else [kernels]
    for code in sorted(set(codes)) if codes else [kernels.IDENTITY]:
        for path in paths:
            z, a, p = (np.zeros((2, 2, 2, 1), dt), np.zeros((2, 2, 2, 1), dt),
                       np.zeros((2, 1, 1, 1), dt))
            if "forward" in passes:
                path.conv_forward(x, w, b, int(code), consts, 2, z, a, p)
                if path is kernels:  # the fc layers' kernels, both ways: with these the
                    # two groups compile in about the same time (measured, CPU seconds:
                    # forward 2.5 + 1.9, backward 4.4), so the team's split stays even
                    kernels_dense.dense_forward(z[0, 0], b, int(code), consts)
                    kernels_dense.dense_backward(int(code), consts, z[0, 0], z[0, 0], z[0, 0])
            if "backward" in passes:
                path.conv_backward(x, w, p, int(code), consts, 2, z, a, np.zeros_like(w),
                                   np.zeros_like(b), np.zeros_like(x))


def compile_kernels(dtype, codes, gemm: bool, cold: bool = True) -> None:
    """Compile (or load) the kernels for ``dtype`` and ``codes`` (the GEMM path's too if
    ``gemm``).  With a team started: if ``cold``, its worker compiles the forward ones
    meanwhile (:func:`team.compile_aside`; they load from the disk cache here after),
    and then every worker loads all of its kernels while the first batches run on
    threads (:func:`team.load_aside`); if not, the workers load theirs at once, alongside
    the caller (0.2-0.3 s each: asked after the caller's own load, they sent 376 of the
    1200 batches of an epoch of the paper's network on full MNIST home)."""
    if not cold:  # every worker loads its kernels from the cache as the caller does
        team.load_aside(dtype, codes, gemm)
        compile_passes(dtype, codes, gemm)
        return
    wait = team.compile_aside(dtype, codes, gemm)
    try:
        compile_passes(dtype, codes, gemm, ("backward",) if wait is not None
                       else ("forward", "backward"))
    except BaseException:
        if wait is not None:
            wait(abandon=True)
        raise
    if wait is not None:
        wait()
        compile_passes(dtype, codes, gemm, ("forward",))
    team.load_aside(dtype, codes, gemm)
