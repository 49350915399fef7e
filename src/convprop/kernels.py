"""The hot loops: convolution and pooling kernels, shared by every layer.

Everything here works on the (N, C, H, W) layout that the layers use and is
free of paper notation; the layers (``layers.py``) say which equation each call
implements.  Speed work happens in this module only.

Orientation: ``conv2d_forward`` computes a *cross-correlation* (as PyTorch's
Conv2d); the toolbox's ``convn`` is a true convolution with the kernel rotated by
180 degrees, so the two agree when the kernels are stored rotated.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """(N, C, H, W) -> (N·Ho·Wo, C·k·k): one row per output pixel, its k x k window of
    every input map, in (c, u, v) order.  Ho = H - k + 1, Wo = W - k + 1."""
    n, c, h, w = x.shape
    ho, wo = h - k + 1, w - k + 1
    windows = sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, Ho, Wo, k, k), a view
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(
        n * ho * wo, c * k * k
    )


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], k: int) -> np.ndarray:
    """The adjoint of :func:`im2col` (not its inverse): every window entry is added back
    onto the input pixel it was copied from.  (N·Ho·Wo, C·k·k) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    ho, wo = h - k + 1, w - k + 1
    blocks = cols.reshape(n, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)  # (N,C,k,k,Ho,Wo)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    for u in range(k):
        for v in range(k):
            dx[:, :, u : u + ho, v : v + wo] += blocks[:, :, u, v]
    return dx


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid cross-correlation of x (N, C, H, W) with w (O, C, k, k), plus b (O,).

    Returns z (N, O, Ho, Wo) and the im2col matrix, which the backward pass reuses."""
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    cols = im2col(x, k)
    z = cols @ w.reshape(o, -1).T
    z += b
    return z.reshape(n, h - k + 1, wd - k + 1, o).transpose(0, 3, 1, 2), cols


def conv2d_backward(
    delta: np.ndarray,
    cols: np.ndarray,
    w: np.ndarray,
    x_shape: tuple[int, ...],
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a valid cross-correlation, given delta = dL/dz (N, O, Ho, Wo).

    Returns (dx, dw, db): dx = the "full" correlation of delta with the kernel rotated
    by 180 degrees, computed as col2im(delta · W); dw = delta correlated with x;
    db = delta summed over batch and positions."""
    o = w.shape[0]
    d = delta.transpose(0, 2, 3, 1).reshape(-1, o)  # (N·Ho·Wo, O)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = col2im(d @ w.reshape(o, -1), x_shape, w.shape[2]) if need_dx else None
    return dx, dw, db


def mean_pool_forward(a: np.ndarray, s: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H/s, W/s): the mean of each non-overlapping s x s block."""
    n, c, h, w = a.shape
    return a.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))


def mean_pool_backward(delta: np.ndarray, s: int) -> np.ndarray:
    """Spread each pooled error evenly over its s x s block, divided by s²."""
    up = np.repeat(np.repeat(delta, s, axis=2), s, axis=3)
    up *= 1.0 / (s * s)
    return up


def max_pool_forward(a: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) -> (N, C, H/s, W/s) block maxima, and the arg-max of each block
    (an index 0..s²-1 in row-major order; ties go to the first, as in PyTorch)."""
    n, c, h, w = a.shape
    blocks = a.reshape(n, c, h // s, s, w // s, s).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, h // s, w // s, s * s)
    idx = blocks.argmax(axis=4)
    return np.take_along_axis(blocks, idx[..., None], axis=4)[..., 0], idx


def max_pool_backward(delta: np.ndarray, idx: np.ndarray, s: int) -> np.ndarray:
    """Route each pooled error to the position of its block's maximum; zeros elsewhere."""
    n, c, ho, wo = delta.shape
    blocks = np.zeros((n, c, ho, wo, s * s), dtype=delta.dtype)
    np.put_along_axis(blocks, idx[..., None], delta[..., None], axis=4)
    return blocks.reshape(n, c, ho, wo, s, s).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, ho * s, wo * s
    )
