"""The readable reference of the convolution kernels, in the (N, C, H, W) layout: im2col
and one matrix product, as a textbook writes it.  Used only by the tests, which check
the CHWN kernels the network runs (``convprop.maths.kernels``) against it.

Orientation: a *cross-correlation* (as PyTorch's Conv2d); the toolbox's ``convn`` is a
true convolution with the kernel rotated by 180 degrees.
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


