"""Pooling kernels in the layers' CHWN layout (C, H, W, N), in NumPy: mean- and
max-pooling over non-overlapping s x s blocks and their backward passes.  (A mean-pool
after a convolution runs fused into the convolution kernels instead.)"""

from __future__ import annotations

import numpy as np


def mean_pool_forward(a: np.ndarray, s: int) -> np.ndarray:
    """(C, H, W, N) -> (C, H/s, W/s, N): the mean of each non-overlapping s x s block."""
    c, h, w, n = a.shape
    return a.reshape(c, h // s, s, w // s, s, n).mean(axis=(2, 4))


def mean_pool_backward(delta: np.ndarray, s: int) -> np.ndarray:
    """(C, H/s, W/s, N) -> (C, H, W, N): each pooled error spread evenly over its s x s
    block, divided by s²."""
    up = np.repeat(np.repeat(delta, s, axis=1), s, axis=2)
    up *= 1.0 / (s * s)
    return up


def max_pool_forward(a: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W, N) -> (C, H/s, W/s, N) block maxima, and the arg-max of each block
    (C, H/s, W/s, N), an index 0..s²-1 in row-major order within the block; ties go to
    the first, as in PyTorch."""
    c, h, w, n = a.shape
    blocks = a.reshape(c, h // s, s, w // s, s, n).transpose(0, 1, 3, 5, 2, 4)
    blocks = blocks.reshape(c, h // s, w // s, n, s * s)
    idx = blocks.argmax(axis=4)
    out = np.take_along_axis(blocks, idx[..., None], axis=4)[..., 0]
    return out, idx


def max_pool_backward(delta: np.ndarray, idx: np.ndarray, s: int) -> np.ndarray:
    """(C, H/s, W/s, N) -> (C, H, W, N): each pooled error routed to the position of its
    block's maximum (``idx`` from :func:`max_pool_forward`); zeros elsewhere."""
    c, ho, wo, n = delta.shape
    blocks = np.zeros((c, ho, wo, n, s * s), dtype=delta.dtype)
    np.put_along_axis(blocks, idx[..., None], delta[..., None], axis=4)
    return np.ascontiguousarray(
        blocks.reshape(c, ho, wo, n, s, s).transpose(0, 1, 4, 2, 5, 3)
    ).reshape(c, ho * s, wo * s, n)
