"""DeepLearnToolbox (MATLAB/Octave) conventions, and conversion to and from them.

The toolbox differs from convprop in three ways (see ``shared/parity/README.md``):

- ``convn`` is a true convolution, so its kernel ``k{i}{j}`` is convprop's
  ``conv.weight[j, i]`` rotated by 180 degrees;
- its arrays are column-major: an input batch is ``x(r, c, n)``;
- its feature vector flattens each last-layer map column-major (row fastest),
  where convprop flattens (map, row, column).
"""

from __future__ import annotations

import numpy as np


def kernels_from_toolbox(k: np.ndarray) -> np.ndarray:
    """Toolbox kernels ``K(:, :, i, j)`` (k, k, in, out) -> convprop weight (out, in, k, k)."""
    k = np.asarray(k)
    if k.ndim == 3:  # one input map: the size-1 third dimension was dropped
        k = k[:, :, None, :]
    return np.ascontiguousarray(k[::-1, ::-1].transpose(3, 2, 0, 1))


def kernels_to_toolbox(w: np.ndarray) -> np.ndarray:
    """convprop weight (out, in, k, k) -> toolbox kernels (k, k, in, out)."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0)[::-1, ::-1])


def features_from_toolbox(ffw: np.ndarray, feature_shape: tuple[int, int, int]) -> np.ndarray:
    """Toolbox ``ffW`` (outputs, features in (map, column, row) order) -> convprop's
    (map, row, column) order."""
    c, h, w = feature_shape
    ffw = np.asarray(ffw)
    return np.ascontiguousarray(
        ffw.reshape(-1, c, w, h).transpose(0, 1, 3, 2).reshape(ffw.shape[0], -1))


def features_to_toolbox(weight: np.ndarray, feature_shape: tuple[int, int, int]) -> np.ndarray:
    """convprop ``out.weight`` -> toolbox ``ffW`` (each map flattened column-major)."""
    c, h, w = feature_shape
    weight = np.asarray(weight)
    return np.ascontiguousarray(
        weight.reshape(-1, c, h, w).transpose(0, 1, 3, 2).reshape(weight.shape[0], -1))


def images_from_toolbox(x: np.ndarray) -> np.ndarray:
    """Toolbox batch ``x(r, c, n)`` -> convprop (N, H, W)."""
    return np.ascontiguousarray(np.asarray(x).transpose(2, 0, 1))
