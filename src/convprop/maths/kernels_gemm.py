"""The im2col + matrix-product path of a convolution layer (CHWN layout), for layers
wide enough that a BLAS GEMM beats the direct kernels of ``kernels.py``.

Forward: cols[(c, u, v), (i, j, n)] = x[c, i+u, j+v, n] (im2col), z = W cols + b with
W the (O, C·k·k) weight matrix, then f and the mean-pooling in one pass over z
(``kernels`` helpers, the same arithmetic as the direct path).  Backward: δ as in the
direct path, dW = δ colsᵀ (equation 13), db = Σ δ (14) and dx = col2im(Wᵀ δ) (12,
the adjoint of im2col: each window entry added back onto the pixel it came from).

Which layers take this path is :func:`use_gemm`'s fixed rule (measured, see
docs/performance.md), never a timing taken at run time: the numbers must not depend on
the machine's mood.  All loops are sequential in a fixed order; a single-threaded BLAS
GEMM splits no sum, so the results are deterministic.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from convprop.maths.kernels import (
    _BWD,
    _FWD,
    _activate,
    _delta,
    _has,
    _on_disk,
    _pool_row,
    _rows,
)

GEMM_MIN_DEPTH = 400  # in_maps · k² at least (the inner dimension of the GEMM) ...
GEMM_MIN_MAPS = 48  # ... and at least this many output maps (its rows)


def use_gemm(in_maps: int, out_maps: int, k: int) -> bool:
    """Whether a conv layer runs im2col + GEMM rather than the direct kernels."""
    return in_maps * k * k >= GEMM_MIN_DEPTH and out_maps >= GEMM_MIN_MAPS


@njit(**_FWD)
def _im2col(x3, nb, k, cols):
    """cols[c, u, v, i, j·N + n] = x3[c, i + u, (j + v)·N + n]: contiguous row copies."""
    n_in, ho, m = cols.shape[0], cols.shape[3], cols.shape[4]
    for c in range(n_in):
        for u in range(k):
            for v in range(k):
                for i in range(ho):
                    src, dst = x3[c, i + u, v * nb:], cols[c, u, v, i]
                    for t in range(m):
                        dst[t] = src[t]


@njit(**_BWD)
def _col2im(dcols, nb, k, dx3):
    """dx3[c, i + u, (j + v)·N + n] += dcols[c, u, v, i, j·N + n], in a fixed order
    (dx3 zeroed first)."""
    n_in, ho, m = dcols.shape[0], dcols.shape[3], dcols.shape[4]
    dx3[...] = 0
    for c in range(n_in):
        for u in range(k):
            for v in range(k):
                for i in range(ho):
                    src, dst = dcols[c, u, v, i], dx3[c, i + u, v * nb:]
                    for t in range(m):
                        dst[t] += src[t]


@njit(**_FWD)
def _finish(zz, nb, b, code, consts, s, a, p):
    """zz (O, Ho, Wo·N) holds W cols: adds b, writes a = f(z) (if a is non-empty) and
    the s x s block means of f(z) into p (if non-empty)."""
    n_out, ho, m = zz.shape
    ar = np.empty(m, zz.dtype)
    keep_a, pool = a.size > 0, p.size > 0
    hs, hh = np.empty(m, zz.dtype), np.empty(m, zz.dtype)  # pooling's row sums
    for o in range(n_out):
        bo = b[o]
        for i in range(ho):
            zr = zz[o, i]
            for t in range(m):
                zr[t] += bo
            out = a[o, i] if keep_a else ar
            _activate(code, consts[1], consts[0], zr, out)
            if pool:
                _pool_row(out, i, s, nb, consts[2], hs, hh, p[o])


def _cols(x: np.ndarray, k: int) -> np.ndarray:
    """im2col of x (C, H, W, N): (C·k·k, Ho·Wo·N)."""
    c, h, w, n = x.shape
    cols = np.empty((c, k, k, h - k + 1, (w - k + 1) * n), x.dtype)
    _im2col(_rows(x), n, k, cols)
    return cols.reshape(c * k * k, -1)


def conv_forward(x, w, b, code, consts, s, z, a, p) -> None:
    """``kernels.conv_forward`` (same arguments, same results up to rounding) by im2col
    and one GEMM."""
    n_out, k, n = w.shape[0], w.shape[2], x.shape[3]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    zz = z if z.size > 0 else np.empty((n_out, ho, wo, n), x.dtype)
    np.matmul(w.reshape(n_out, -1), _cols(x, k), out=zz.reshape(n_out, -1))
    _finish(_rows(zz), n, b, code, consts, s, _rows(a), _rows(p))


def conv_backward(x, w, dp, code, consts, s, z, a, dw, db, dx) -> None:
    """``kernels.conv_backward`` (same arguments) by im2col and two GEMMs."""
    n_out, n_in, k, n = w.shape[0], w.shape[1], w.shape[2], x.shape[3]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    delta = np.empty((n_out, ho, wo * n), x.dtype)
    _delta(_rows(dp), n, wo, code, consts, s, _rows(z), _rows(a), delta, db)
    d2 = delta.reshape(n_out, -1)
    np.matmul(d2, _cols(x, k).T, out=dw.reshape(n_out, -1))
    if dx.size > 0:
        dcols = w.reshape(n_out, -1).T @ d2
        _col2im(dcols.reshape(n_in, k, k, ho, wo * n), n, k, _rows(dx))


def needs_compile(dtype) -> bool:
    """True when this path's kernels for ``dtype`` are neither loaded nor on disk."""
    dt = np.dtype(dtype)
    return any(not (_has(k.signatures, dt) or _on_disk(k, dt))
               for k in (_im2col, _col2im, _finish, _delta))


def compile(dtype, passes=("forward", "backward")) -> None:  # noqa: A001 - the module's verb
    """Compile (or load from the disk cache) this path's kernels of ``passes`` for
    ``dtype``."""
    dt = np.dtype(dtype)
    x, w, b = np.zeros((1, 6, 6, 1), dt), np.zeros((2, 1, 5, 5), dt), np.zeros(2, dt)
    consts = np.array([1.0, 0.0, 0.25], dt)
    z, a = np.zeros((2, 2, 2, 1), dt), np.zeros((2, 2, 2, 1), dt)
    p = np.zeros((2, 1, 1, 1), dt)
    if "forward" in passes:
        conv_forward(x, w, b, 1, consts, 2, z, a, p)
    if "backward" in passes:
        conv_backward(x, w, p, 1, consts, 2, z, a, np.zeros_like(w), np.zeros_like(b),
                      np.zeros_like(x))
