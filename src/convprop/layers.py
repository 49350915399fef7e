"""Layers of the paper's CNN, each a ``forward`` / ``backward`` pair with an explicit cache.

``forward(x) -> (out, cache)`` and ``backward(dout, cache) -> (dx, grads)``, where
``dout`` is dL/d(out), ``dx`` is dL/dx and ``grads`` maps a parameter name
(``"weight"``, ``"bias"``) to its gradient.  Nothing is stored on the layer between
the two calls, so backward can be called twice with the same result.

A convolution layer owns its activation, as in the toolbox (``a = sigm(conv + b)``);
pooling layers have none.  Shapes are (N, C, H, W) throughout.
"""

from __future__ import annotations

import numpy as np

from convprop import kernels
from convprop.activations import Activation


class Conv:
    """Valid convolution, every input map to every output map, then f:
    a_j = f(z_j),  z_j = Σ_i a_i ⋆ w_ji + b_j  (⋆ = cross-correlation).

    ``weight`` is (out_maps, in_maps, k, k) in cross-correlation orientation (as
    PyTorch's Conv2d); the toolbox's kernel for the same layer is its 180° rotation."""

    kind = "conv"

    def __init__(self, in_maps: int, out_maps: int, k: int, activation: Activation,
                 dtype: np.dtype):
        self.in_maps, self.out_maps, self.k = in_maps, out_maps, k
        self.activation = activation
        self.activation.map_axis = 1  # learnable activations: z is (N, C, H, W)
        self.params = {
            "weight": np.zeros((out_maps, in_maps, k, k), dtype=dtype),
            "bias": np.zeros(out_maps, dtype=dtype),
            **activation.params,  # learnable activation parameters ("alpha", "k"), live
        }

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = shape
        return self.out_maps, h - self.k + 1, w - self.k + 1

    def forward(self, x):
        """x (N, in_maps, H, W) -> a (N, out_maps, H-k+1, W-k+1)."""
        z, cols = kernels.conv2d_forward(x, self.params["weight"], self.params["bias"])
        a = self.activation(z)
        return a, (x.shape, cols, z, a)

    def backward(self, da, cache, need_dx: bool = True):
        """From dL/da to the layer's error and gradients.

        - Equation (11) (and (8) in general): δ^l = f'(z^l) ∘ dL/da^l, where dL/da^l is
          the pooling layer's up-sampled error (or the output layer's W^T δ).
        - Equation (13): ∂C/∂k_ij = a_i^{l-1} ⋆ δ_j, here a cross-correlation because the
          kernel is stored unrotated (the toolbox's ``convn(flipall(a), d, 'valid')``).
        - Equation (14): ∂C/∂b_j = Σ_{u,v} δ_j.
        - Equation (12): the error of the layer below, Σ_j δ_j *full* rot180(k_ij).
          Skipped with ``need_dx=False`` for the first layer, whose input is the image.
        - Beyond the paper, a learnable activation's parameter p (``prelu``,
          ``tanh-linear-learned``): ∂C/∂p = Σ dL/da ∘ ∂f/∂p.
        The 1/batch of the toolbox is already in dL/da (the loss divides by N)."""
        x_shape, cols, z, a = cache
        delta = da * self.activation.derivative(z, a)
        dx, dw, db = kernels.conv2d_backward(delta, cols, self.params["weight"], x_shape,
                                             need_dx)
        return dx, {"weight": dw, "bias": db, **self.activation.param_grads(z, a, da, 1)}

    def slope(self, cache):
        """f'(z) of the forward pass, (N, out_maps, H', W'): what ``backward`` multiplies
        dL/da by (equation 11).  Used by ``Network.trace`` and the diagnostics."""
        _, _, z, a = cache
        return self.activation.derivative(z, a)


class _Pool:
    kind = "pool"

    def __init__(self, scale: int):
        self.scale = scale
        self.params: dict[str, np.ndarray] = {}

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        return c, h // self.scale, w // self.scale


class MeanPool(_Pool):
    """Mean-pooling over non-overlapping s x s blocks (the toolbox's down-sampling)."""

    def forward(self, a):
        """a (N, C, H, W) -> (N, C, H/s, W/s), each output the mean of its block."""
        return kernels.mean_pool_forward(a, self.scale), None

    def backward(self, delta, cache, need_dx: bool = True):
        """Equation (11), the pooling half: spread each error evenly over its block,
        divided by s² (the toolbox's ``expand(d, [s s 1]) / s^2``).  The conv layer
        below multiplies by f'(z) itself."""
        return kernels.mean_pool_backward(delta, self.scale), {}


class MaxPool(_Pool):
    """Max-pooling over non-overlapping s x s blocks (the paper's other pooling)."""

    def forward(self, a):
        """a (N, C, H, W) -> (N, C, H/s, W/s) block maxima; the cache keeps the arg-max."""
        out, idx = kernels.max_pool_forward(a, self.scale)
        return out, idx

    def backward(self, delta, cache, need_dx: bool = True):
        """Equation (11) for max-pooling: the whole error of a block goes to the unit
        that was its maximum (ties: the first in row-major order, as PyTorch)."""
        return kernels.max_pool_backward(delta, cache, self.scale), {}


class Dense:
    """Fully connected output layer: o = f(W x + b), x the flattened feature maps.

    ``weight`` is (n_outputs, features) with features in (map, row, column) order
    (PyTorch's ``flatten``); the toolbox's ``ffW`` orders each map column-major."""

    kind = "dense"

    def __init__(self, n_in: int, n_out: int, activation: Activation, dtype: np.dtype):
        self.n_in, self.n_out = n_in, n_out
        self.activation = activation
        self.params = {
            "weight": np.zeros((n_out, n_in), dtype=dtype),
            "bias": np.zeros(n_out, dtype=dtype),
        }

    def forward(self, x):
        """x (N, C, H, W) or (N, features) -> o (N, n_out)."""
        fv = x.reshape(x.shape[0], -1)
        z = fv @ self.params["weight"].T
        z += self.params["bias"]
        o = self.activation(z)
        return o, (x.shape, fv, z, o)

    def backward(self, do, cache, need_dx: bool = True):
        """- Equation (4): δ^L = dL/do ∘ f'(z^L), dL/do = (o - y)/N from the loss (2).
        - Equation (9): ∂C/∂W = δ^L (fv)^T;  equation (10): ∂C/∂b = Σ_n δ^L.
        - Equation (8) without its f': W^T δ^L, reshaped back into the feature maps
          (the toolbox's ``fvd``); the layer below applies f' if it has one."""
        x_shape, fv, z, o = cache
        delta = do * self.activation.derivative(z, o)
        grads = {"weight": delta.T @ fv, "bias": delta.sum(axis=0)}
        dx = (delta @ self.params["weight"]).reshape(x_shape) if need_dx else None
        return dx, grads

    def slope(self, cache):
        """f'(z^L) of the forward pass, (N, n_out): the factor of equation (4)."""
        _, _, z, o = cache
        return self.activation.derivative(z, o)
