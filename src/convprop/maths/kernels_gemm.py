"""The im2col + matrix-product path of a convolution layer (CHWN layout), for layers
wide enough that a BLAS GEMM beats the direct kernels of ``kernels.py``.

Forward: cols[(c, u, v), (i, j, n)] = x[c, i+u, j+v, n] (im2col), z = W cols + b with
W the (O, C·k·k) weight matrix, then f and the mean-pooling in one pass over z
(``kernels`` helpers, the same arithmetic as the direct path).  Backward: δ as in the
direct path, dW = δ colsᵀ (equation 13), db = Σ δ (14) and dx = col2im(Wᵀ δ) (12,
the adjoint of im2col: each window entry added back onto the pixel it came from).

Which layers take this path is :func:`use_gemm`'s fixed rule, and which of their
passes run as GEMMs is :func:`gemm_passes`'s, fixed per machine and BLAS (measured,
see docs/performance.md), never a timing taken at run time: the numbers must not
depend on the machine's mood.  All loops are sequential in a fixed order; a
single-threaded BLAS GEMM splits no sum, so the results are deterministic.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from convprop.maths import kernels
from convprop.maths.kernels import _BWD, _FWD, _activate, _delta, _pool_row, _rows

GEMM_MIN_DEPTH = 400  # in_maps · k² at least (the inner dimension of the GEMM) ...
GEMM_MIN_MAPS = 48  # ... and at least this many output maps (its rows)


ENV_PASSES = "CONVPROP_GEMM_PASSES"  # "forward,dw,dx" or "dx": overrides gemm_passes()
_PLAN: dict[str, tuple] = {}
_AVX512_BLAS = {"skylakex", "cooperlake", "sapphirerapids"}  # OpenBLAS's AVX-512 kernels


def use_gemm(in_maps: int, out_maps: int, k: int) -> bool:
    """Whether a conv layer runs im2col + GEMM rather than the direct kernels."""
    return in_maps * k * k >= GEMM_MIN_DEPTH and out_maps >= GEMM_MIN_MAPS


def gemm_passes() -> tuple[str, ...]:
    """Which passes of a wide layer (:func:`use_gemm`) run as GEMMs in this process:
    ("forward", "dw", "dx"), or only ("dx",) (dx = col2im(Wᵀ δ); the forward pass and
    dW on the direct kernels, and no im2col at all) where numba compiles the direct
    kernels for AVX-512 while every BLAS NumPy uses is an OpenBLAS running narrower
    kernels (an AMD Zen 5 whose environment pins OpenBLAS to its Haswell kernels,
    ``OPENBLAS_CORETYPE=Haswell``, as this project's machines do).  There
    the direct forward and dW of 32 -> 64 maps took 61 and 48 us per image against
    the GEMMs' 57 and 60 (float32; float64 102 and 73 against 139 and 125), while dx
    still favours the GEMM over the direct kernels' zero-padded full correlation.
    ``$CONVPROP_GEMM_PASSES`` ("forward,dw,dx" or "dx") overrides the rule; the
    team's workers get the caller's plan that way."""
    if "passes" not in _PLAN:
        text = os.environ.get(ENV_PASSES, "").replace(" ", "")
        if text in ("forward,dw,dx", "dx"):
            _PLAN["passes"] = tuple(text.split(","))
        else:
            _PLAN["passes"] = ("dx",) if _direct_is_wider() else ("forward", "dw", "dx")
    return _PLAN["passes"]


def _direct_is_wider() -> bool:
    """numba targets AVX-512 and NumPy's BLAS is an OpenBLAS without its AVX-512 kernels
    (any doubt: False, the plain GEMM plan)."""
    try:
        from numba.core import config

        if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES is not None:
            return False  # a portable build target: no assumption about its vectors
        import llvmlite.binding as ll

        if not ll.get_host_cpu_features().get("avx512f", False):
            return False
        libs = numpy_blas()
        return bool(libs) and all(api == "openblas" and str(core).lower() not in _AVX512_BLAS
                                  for api, core in libs)
    except Exception:  # noqa: BLE001 - introspection failed: keep the plain plan
        return False


def numpy_blas() -> list[tuple[str, str | None]]:
    """(library, kernel family) of each BLAS NumPy uses, e.g. [("openblas", "Haswell")]
    (OpenBLAS's family follows the CPU, or ``$OPENBLAS_CORETYPE`` where set, as on
    machines that pin it to Haswell)."""
    if "blas" not in _PLAN:
        try:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            mine = [lib for lib in libs if "numpy" in str(getattr(lib, "filepath", ""))]
            _PLAN["blas"] = tuple((lib.internal_api, getattr(lib, "architecture", None))
                                  for lib in mine or libs)
        except Exception:  # noqa: BLE001 - unknown: an empty list, the plain plan
            _PLAN["blas"] = ()
    return list(_PLAN["blas"])


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
    and one GEMM (or the direct kernel, see :func:`gemm_passes`)."""
    if "forward" not in gemm_passes():
        kernels.conv_forward(x, w, b, code, consts, s, z, a, p)
        return
    n_out, k, n = w.shape[0], w.shape[2], x.shape[3]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    zz = z if z.size > 0 else np.empty((n_out, ho, wo, n), x.dtype)
    np.matmul(w.reshape(n_out, -1), _cols(x, k), out=zz.reshape(n_out, -1))
    _finish(_rows(zz), n, b, code, consts, s, _rows(a), _rows(p))


def conv_backward(x, w, dp, code, consts, s, z, a, dw, db, dx) -> None:
    """``kernels.conv_backward`` (same arguments) by im2col and two GEMMs (or δ and dW
    by the direct kernel and dx by one GEMM, see :func:`gemm_passes`)."""
    n_out, n_in, k, n = w.shape[0], w.shape[1], w.shape[2], x.shape[3]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    delta = np.empty((n_out, ho, wo * n), x.dtype)
    d2 = delta.reshape(n_out, -1)
    if "dw" in gemm_passes():
        _delta(_rows(dp), n, wo, code, consts, s, _rows(z), _rows(a), delta, db, 0, n_out)
        np.matmul(d2, _cols(x, k).T, out=dw.reshape(n_out, -1))
    else:
        kernels.conv_backward(x, w, dp, code, consts, s, z, a, dw, db,
                              np.empty((0, 0, 0, 0), x.dtype), delta.reshape(n_out, ho, wo, n))
    if dx.size > 0:
        dcols = w.reshape(n_out, -1).T @ d2
        _col2im(dcols.reshape(n_in, k, k, ho, wo * n), n, k, _rows(dx))


def kernels_used() -> list:
    """This path's own numba kernels that :func:`gemm_passes` runs."""
    passes = gemm_passes()
    used = [_col2im] + ([_finish] if "forward" in passes else [])
    used += [_delta] if "dw" in passes else []
    return used + ([_im2col] if "forward" in passes or "dw" in passes else [])
