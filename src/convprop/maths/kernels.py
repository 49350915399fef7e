"""The hot loops: the direct convolution kernels (convolution, activation and
mean-pooling in one pass, and back), shared by every conv layer.

Everything here works on the *CHWN* layout (C, H, W, N) -- maps first, the batch
innermost -- that the layers use, and is free of paper notation; the layers
(``layers.py``) say which equation each call implements.  Speed work happens in this
module and its siblings only (``kernels_gemm``: the im2col + GEMM path of wide layers;
``kernels_pool``: pooling).  A readable im2col reference of the same operations lives in the tests
(``tests/reference.py``), which compare these kernels against it.

Orientation: ``conv_forward`` computes a *cross-correlation* (as PyTorch's Conv2d); the
toolbox's ``convn`` is a true convolution with the kernel rotated by 180 degrees, so the
two agree when the kernels are stored rotated.

Compilation: the kernels compile lazily, only for the dtype a run uses, and are cached
on disk (``compiling.py`` says whether a first call will compile, and does it up
front).  No ``reshape`` inside numba code (its error formatting alone took seconds to
compile): the Python wrappers pass (C, H, W·N) views.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numba import njit

from convprop.maths.kernels_exp import _exp

# =============================================================================== numba
# The fast path.  Layout "maps-first, batch-last": (C, H, W, N), so that every inner
# loop runs over contiguous memory (a row of W·N values, the batch innermost) and
# vectorises.  A row is addressed flat: x3[c, i, j·N + n] with x3 = x.reshape(C, H, W·N)
# (made by the Python wrappers), so a k x k window's v-th column is the same row
# shifted by v·N.
#
# Indexing: inner loops index a slice by the bare loop variable (row[v·nb:][t], never
# row[v·nb + t]): numba then knows the index is not negative and skips the wrap-around
# test that stops a loop from vectorising (3-4x on the pooling and copy loops).
#
# Determinism: every loop is sequential and its order fixed, so the same inputs give
# the same bits run after run.  ``reassoc`` (which lets sums over the batch vectorise)
# is enabled only in the backward kernel, which evaluates no transcendental function;
# it fixes one summation order at compile time.  No ``nnan``/``ninf``: a NaN must
# propagate, the trainer detects divergence from it.

# Activation codes understood by the fused kernels (see ``layers.fused_code``).
IDENTITY, SIGMOID, TANH, TANH_LINEAR, RELU, LEAKY_RELU = range(6)

_FWD = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
_BWD = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc", "nsz"})
# Flat row elements accumulated at a time: the block's accumulators and input rows stay
# in the L1/L2 caches.  Each block is one more pass of the loop set-up (the runtime alias
# checks, the weights' broadcasts, a vector remainder); 512 split the paper's first
# layer (600 values a row at 25 images) into 512 + 88 and cost it 10% (74.3 against
# 66.6 us a part, float32); 1024-4096 measured the same up to 64 maps.
_BLOCK = 2048


@njit(**_FWD, inline="always")
def _correlate_block(x3, w, o, i, t0, acc, nb, u_lo, u_hi):
    """acc[t] += Σ_c Σ_u Σ_v w[o, c, u, v] · x3[c, i + u, t0 + t + v·nb] for t < len(acc)
    and u_lo <= u < u_hi: a block of output row i of map o (nb = batch size).  Pairs of
    5x5 maps take :func:`_correlate_pair`; this serves other kernel sizes and an odd
    last map (kept plain: every unrolled copy costs compile time)."""
    n_in, k, m = w.shape[1], w.shape[2], acc.shape[0]
    for c in range(n_in):
        for u in range(u_lo, u_hi):
            row = x3[c, i + u, t0:]
            for v in range(k):
                wv, r = w[o, c, u, v], row[v * nb:]
                for t in range(m):
                    acc[t] += wv * r[t]


@njit(**_FWD, inline="always")
def _correlate_pair(x3, w, o, i, t0, acc_a, acc_b, nb, u_lo, u_hi):
    """_correlate_block for maps o and o + 1 at once (5x5 kernels): each input value
    loaded once feeds both."""
    n_in, m = w.shape[1], acc_a.shape[0]
    for c in range(n_in):
        for u in range(u_lo, u_hi):
            row = x3[c, i + u, t0:]
            a0, a1, a2, a3, a4 = w[o, c, u, 0], w[o, c, u, 1], w[o, c, u, 2], \
                w[o, c, u, 3], w[o, c, u, 4]
            b0, b1, b2, b3, b4 = w[o + 1, c, u, 0], w[o + 1, c, u, 1], w[o + 1, c, u, 2], \
                w[o + 1, c, u, 3], w[o + 1, c, u, 4]
            r1, r2, r3, r4 = row[nb:], row[2 * nb:], row[3 * nb:], row[4 * nb:]
            for t in range(m):
                x0, x1, x2, x3_, x4 = row[t], r1[t], r2[t], r3[t], r4[t]
                acc_a[t] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3_) + a4 * x4
                acc_b[t] += (b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3_) + b4 * x4


@njit(**_FWD, inline="always")
def _activate(code, param, one, z, a):
    """a = f(z) elementwise for a built-in activation code."""
    zero = one - one
    two = one + one
    if code == SIGMOID:
        for t in range(z.shape[0]):
            a[t] = one / (one + _exp(-z[t]))
    elif code == TANH or code == TANH_LINEAR:
        for t in range(z.shape[0]):
            a[t] = one - two / (one + _exp(z[t] + z[t]))
        if code == TANH_LINEAR:
            for t in range(z.shape[0]):
                a[t] += param * z[t]
    elif code == RELU:
        for t in range(z.shape[0]):
            a[t] = z[t] if (z[t] > zero or z[t] != z[t]) else zero
    elif code == LEAKY_RELU:
        for t in range(z.shape[0]):
            a[t] = z[t] if z[t] >= zero else param * z[t]
    else:
        for t in range(z.shape[0]):  # loops, not a[:] = z: no shape-check code to compile
            a[t] = z[t]


@njit(**_FWD, inline="always")
def _pool_row(ar, i, s, nb, inv, hs, hh, p2):
    """Mean-pooling one activation row at a time: row i of a map (ar, W·N values) joins
    the vertical sum hs of its s-row block; after the block's last row, the s x s block
    means go to pooled row i // s of p2 (the map's (Ho/s, Wo/s·N) rows).  The sums run
    over whole rows, which vectorise (a loop over one column's nb images would not); only
    the final copies are per column."""
    m = ar.shape[0]
    if i % s == 0:
        for t in range(m):
            hs[t] = ar[t]
    else:
        for t in range(m):
            hs[t] += ar[t]
    if i % s != s - 1 or i // s >= p2.shape[0]:
        return
    span = m - (s - 1) * nb  # hh[t]: the block sum of the s columns starting at t's
    for t in range(span):
        hh[t] = hs[t] * inv
    for dj in range(1, s):
        shifted = hs[dj * nb:]
        for t in range(span):
            hh[t] += shifted[t] * inv
    prow = p2[i // s]
    for jp in range(prow.shape[0] // nb):
        dst, src = prow[jp * nb:], hh[jp * s * nb:]
        for n in range(nb):
            dst[n] = src[n]


def _rows(v: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> the (C, H, W·N) view the kernels index (reshaping inside numba
    would compile its error formatting: seconds of compile time)."""
    return v.reshape(v.shape[0], v.shape[1], v.shape[2] * v.shape[3])


def conv_forward(x, w, b, code, consts, s, z, a, p, rows=None) -> None:
    """Valid cross-correlation, activation and mean-pooling in one pass (CHWN layout).

    x (C, H, W, N), w (O, C, k, k), b (O,); consts = [1, activation parameter, 1/s²]
    in the arrays' dtype.  Writes, each only if the array is non-empty:
    z = Σ_c x_c ⋆ w_oc + b_o and a = f(z), both (O, Ho, Wo, N), and
    p = the s x s block means of a, (O, Ho/s, Wo/s, N).
    ``rows`` = (lo, hi), multiples of s (or hi = Ho): only output rows lo..hi-1 (and
    their pooled rows), each value computed as in the whole pass (``split.py``)."""
    conv_forward_call(x, w, b, code, consts, s, z, a, p, rows)()


def conv_forward_call(x, w, b, code, consts, s, z, a, p, rows=None) -> Callable[[], None]:
    """:func:`conv_forward` with its arguments bound, views made once: a call of the
    result costs only numba's dispatch (``split.py`` makes these once per arena)."""
    lo, hi = rows if rows is not None else (0, x.shape[1] - w.shape[2] + 1)
    return functools.partial(_conv_forward, _rows(x), x.shape[3], w, b, code, consts, s,
                             _rows(z), _rows(a), _rows(p), lo, hi)


@njit(**_FWD)
def _conv_forward(x3, nb, w, b, code, consts, s, z, a, p, i_lo, i_hi):
    """:func:`conv_forward` on (C, H, W·N) rows, output rows i_lo..i_hi-1."""
    n_out, k = w.shape[0], w.shape[2]
    wo = x3.shape[2] // nb - k + 1
    m = wo * nb
    zbuf, ar = np.empty((2, m), x3.dtype), np.empty(m, x3.dtype)
    keep_z, keep_a, pool = z.size > 0, a.size > 0, p.size > 0
    hs, hh = np.empty((2, m), x3.dtype), np.empty(m, x3.dtype)  # pooling's row sums
    step = 2 if k == 5 else 1  # 5x5: two output maps per pass over the input
    for o0 in range(0, n_out, step):
        both = step == 2 and o0 + 1 < n_out
        for i in range(i_lo, i_hi):
            # accumulate straight into the kept z rows, activate straight into a's rows
            za = z[o0, i] if keep_z else zbuf[0]
            zb = z[o0 + 1, i] if keep_z and both else zbuf[1]
            za[:] = b[o0]
            if both:
                zb[:] = b[o0 + 1]
                for t0 in range(0, m, _BLOCK):
                    t1 = min(m, t0 + _BLOCK)
                    _correlate_pair(x3, w, o0, i, t0, za[t0:t1], zb[t0:t1], nb, 0, 5)
            else:
                for t0 in range(0, m, _BLOCK):
                    _correlate_block(x3, w, o0, i, t0, za[t0:t0 + _BLOCK], nb, 0, k)
            for o in range(o0, o0 + 2 if both else o0 + 1):
                out = a[o, i] if keep_a else ar
                _activate(code, consts[1], consts[0], za if o == o0 else zb, out)
                if pool:
                    _pool_row(out, i, s, nb, consts[2], hs[o - o0], hh, p[o])


@njit(**_BWD, inline="always")
def _derivative(code, param, one, z, a, d):
    """d = f'(z) given z and a = f(z), for a built-in activation code."""
    zero = one - one
    if code == SIGMOID:
        for t in range(d.shape[0]):
            d[t] = a[t] * (one - a[t])
    elif code == TANH:
        for t in range(d.shape[0]):
            d[t] = one - a[t] * a[t]
    elif code == TANH_LINEAR:
        for t in range(d.shape[0]):
            th = a[t] - param * z[t]
            d[t] = (one - th * th) + param
    elif code == RELU:
        for t in range(d.shape[0]):
            d[t] = one if z[t] > zero else zero
    elif code == LEAKY_RELU:
        for t in range(d.shape[0]):
            d[t] = one if z[t] > zero else param
    else:
        for t in range(d.shape[0]):  # (a loop: slice assignment compiles shape checks)
            d[t] = one


@njit(**_BWD, inline="always")
def _dw_pair(da, db_, x2, u, nb, one, out_a, out_b):
    """out_a[v] = Σ_i Σ_t da[i, t] · x2[i + u, t + v·nb] (v < 5), and out_b from db_:
    equation (13) for one kernel row of two output maps, sharing the input loads.  The
    batch sums run per row, then across rows (short chains: float32 stays accurate)."""
    m = da.shape[1]
    g0 = g1 = g2 = g3 = g4 = one - one
    f0 = f1 = f2 = f3 = f4 = one - one
    for i in range(da.shape[0]):
        ra, rb, row = da[i], db_[i], x2[i + u]
        r1, r2, r3, r4 = row[nb:], row[2 * nb:], row[3 * nb:], row[4 * nb:]
        h0 = h1 = h2 = h3 = h4 = one - one
        e0 = e1 = e2 = e3 = e4 = one - one
        for t in range(m):
            a, b = ra[t], rb[t]
            x0, x1, x2_, x3, x4 = row[t], r1[t], r2[t], r3[t], r4[t]
            h0 += a * x0
            h1 += a * x1
            h2 += a * x2_
            h3 += a * x3
            h4 += a * x4
            e0 += b * x0
            e1 += b * x1
            e2 += b * x2_
            e3 += b * x3
            e4 += b * x4
        g0 += h0
        g1 += h1
        g2 += h2
        g3 += h3
        g4 += h4
        f0 += e0
        f1 += e1
        f2 += e2
        f3 += e3
        f4 += e4
    out_b[0], out_b[1], out_b[2], out_b[3], out_b[4] = f0, f1, f2, f3, f4
    out_a[0], out_a[1], out_a[2], out_a[3], out_a[4] = g0, g1, g2, g3, g4


@njit(**_BWD, inline="always")
def _delta(dp3, nb, wo, code, consts, s, z, a, delta, db, o_lo, o_hi):
    """δ = f'(z) ∘ up_s(dp) / s² into delta (O, Ho, Wo·N), and db[o] = Σ δ[o], for maps
    o_lo..o_hi-1; rows of (C, H, W·N) arrays.  z or a may be empty when f' does not
    read it."""
    _, ho, m = delta.shape
    z3 = z if z.size > 0 else delta
    a3 = a if a.size > 0 else delta
    one, param, inv = consts[0], consts[1], consts[2]
    up = np.empty(m, delta.dtype)  # one pooled row of dp, up-sampled (columns repeated)
    for o in range(o_lo, o_hi):
        for i in range(ho):
            drow = delta[o, i]
            _derivative(code, param, one, z3[o, i], a3[o, i], drow)
            if i % s == 0:
                prow = dp3[o, i // s]
                for j in range(wo):
                    dst, src = up[j * nb:], prow[(j // s) * nb:]
                    for n in range(nb):
                        dst[n] = src[n]
            for t in range(m):
                drow[t] *= up[t] * inv
    # Sums over the batch run per output row (vectorised), then across rows: two short
    # chains instead of one long one, so float32 keeps its accuracy.
    for o in range(o_lo, o_hi):
        total = one - one
        for i in range(ho):
            part = one - one
            drow = delta[o, i]
            for t in range(m):
                part += drow[t]
            total += part
        db[o] = total


def conv_backward(x, w, dp, code, consts, s, z, a, dw, db, dx, delta=None, part=None) -> None:
    """The backward pass of :func:`conv_forward` (CHWN layout).

    dp = dL/dp (O, Ho/s, Wo/s, N) (with s = 1: dL/da); z and a as the forward kept
    them (either may be empty if f' does not read it).  Computes
    δ = f'(z) ∘ up_s(dp) / s² (into ``delta``, (O, Ho, Wo, N), if given), then
    dw[o,c,u,v] = Σ δ[o,i,j,n] x[c,i+u,j+v,n], db[o] = Σ δ[o], and, if dx is
    non-empty, dx[c,i+u,j+v,n] = Σ_o w[o,c,u,v] δ[o,i,j,n].

    ``part`` = (maps, dw tasks, dx tasks), each a (lo, hi) range, does a share of it
    (``split.py``): δ and db for maps lo..hi-1 only, then the dw and dx tasks in
    range (:func:`conv_tasks`), reading δ from ``delta``.  Every value is computed as
    in the whole pass, so shares done apart give the same bits."""
    conv_backward_call(x, w, dp, code, consts, s, z, a, dw, db, dx, delta, part)()


def conv_backward_call(x, w, dp, code, consts, s, z, a, dw, db, dx, delta=None,
                       part=None) -> Callable[[], None]:
    """:func:`conv_backward` with its arguments bound (see :func:`conv_forward_call`)."""
    keep = _rows(delta) if delta is not None else _NONE3[x.dtype]
    if part is None:
        nw, nx = conv_tasks(w.shape, x.shape[1])
        part = ((0, w.shape[0]), (0, nw), (0, nx if dx.size else 0))
    (o_lo, o_hi), (w_lo, w_hi), (x_lo, x_hi) = part
    return functools.partial(_conv_backward, _rows(x), x.shape[3], w, _rows(dp), code, consts,
                             s, _rows(z), _rows(a), dw, db, _rows(dx), keep, o_lo, o_hi,
                             w_lo, w_hi, x_lo, x_hi)


def conv_tasks(w_shape: tuple[int, ...], h: int) -> tuple[int, int]:
    """(dw tasks, dx tasks) of :func:`conv_backward` for kernels of shape w_shape and
    inputs of h rows: a dw task is one kernel row u of one input map for one output
    map (two with 5x5 kernels), a dx task one input row of one input map (two with
    5x5 kernels)."""
    n_out, n_in, k = w_shape[0], w_shape[1], w_shape[2]
    step = 2 if k == 5 else 1
    return -(-n_out // step) * n_in * k, -(-n_in // step) * h


_NONE3 = {np.dtype(t): np.zeros((0, 0, 0), t) for t in ("float32", "float64")}


@njit(**_BWD)
def _conv_backward(x3, nb, w, dp3, code, consts, s, z, a, dw, db, dx3, keep,
                   o_lo, o_hi, w_lo, w_hi, x_lo, x_hi):
    """:func:`conv_backward` on (C, H, W·N) rows; δ goes to ``keep`` if non-empty."""
    n_out, n_in, k = w.shape[0], w.shape[1], w.shape[2]
    ho, wo = x3.shape[1] - k + 1, x3.shape[2] // nb - k + 1
    m = wo * nb
    delta = keep if keep.size > 0 else np.empty((n_out, ho, m), x3.dtype)
    _delta(dp3, nb, wo, code, consts, s, z, a, delta, db, o_lo, o_hi)
    one = consts[0]
    step = 2 if k == 5 else 1  # 5x5: two output maps share each input load
    for task in range(w_lo, w_hi):  # (output map or pair, input map c, kernel row u)
        o, c, u = task // (n_in * k) * step, task // k % n_in, task % k
        if step == 2 and o + 1 < n_out:
            _dw_pair(delta[o], delta[o + 1], x3[c], u, nb, one, dw[o, c, u], dw[o + 1, c, u])
        else:
            for v in range(k):
                g = one - one
                for i in range(ho):
                    drow, r = delta[o, i], x3[c, i + u, v * nb:]
                    h = one - one
                    for t in range(m):
                        h += drow[t] * r[t]
                    g += h
                dw[o, c, u, v] = g
    if x_hi <= x_lo:
        return
    # Equation (12) as a gather: dx = δ zero-padded by k-1, correlated with the kernels
    # rotated by 180° and transposed (in <-> out maps).  The rows of the padding are
    # skipped (u_lo, u_hi below), so they are never written either: only the padding
    # columns of δ's own rows are zeroed (a quarter of the whole, 12 maps of 16 x 16 x N
    # for the paper's second layer).
    h, wd = dx3.shape[1], dx3.shape[2] // nb
    edge = (k - 1) * nb
    pad = np.empty((n_out, ho + 2 * (k - 1), (wo + 2 * (k - 1)) * nb), x3.dtype)
    zero = one - one
    for o in range(n_out):
        for i in range(ho):
            prow, drow = pad[o, i + k - 1], delta[o, i]
            inner, right = prow[edge:], prow[edge + m:]
            for t in range(edge):
                prow[t] = zero
            for t in range(m):
                inner[t] = drow[t]
            for t in range(edge):
                right[t] = zero
    wt = np.empty((n_in, n_out, k, k), x3.dtype)
    for o in range(n_out):
        for c in range(n_in):
            for u in range(k):
                for v in range(k):
                    wt[c, o, k - 1 - u, k - 1 - v] = w[o, c, u, v]
    for task in range(x_lo, x_hi):  # (input map or pair c, input row p)
        c, p = task // h * step, task % h
        both = step == 2 and c + 1 < n_in
        u_lo, u_hi = max(0, k - 1 - p), min(k, k - 1 - p + ho)
        acc = dx3[c, p]
        acc[:] = 0
        if both:
            acc_b = dx3[c + 1, p]
            acc_b[:] = 0
            for t0 in range(0, wd * nb, _BLOCK):
                t1 = min(wd * nb, t0 + _BLOCK)
                _correlate_pair(pad, wt, c, p, t0, acc[t0:t1], acc_b[t0:t1], nb, u_lo, u_hi)
        else:
            for t0 in range(0, wd * nb, _BLOCK):
                _correlate_block(pad, wt, c, p, t0, acc[t0:t0 + _BLOCK], nb, u_lo, u_hi)
