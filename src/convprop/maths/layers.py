"""Layers of the paper's CNN, each a ``forward`` / ``backward`` pair with an explicit cache.

``forward(x) -> (out, cache)`` and ``backward(dout, cache) -> (dx, grads)``, where
``dout`` is dL/d(out), ``dx`` is dL/dx and ``grads`` maps a parameter name
(``"weight"``, ``"bias"``) to its gradient.  Nothing is stored on the layer between
the two calls, so backward can be called twice with the same result.

One layout throughout: feature maps are *CHWN* (C, H, W, N), the batch innermost, so
the kernels' inner loops are contiguous (``kernels.py``); the dense layer's inputs and
outputs are (features, N) and (n_outputs, N).  :func:`to_chwn` / :func:`to_nchw`
convert at the edges (``Network`` takes and gives (N, ...) arrays).

A convolution layer owns its activation, as in the toolbox (``a = sigm(conv + b)``);
pooling layers have none.  A convolution followed by mean-pooling runs as one fused
step (``Conv.forward(x, pool=s)``: convolution, activation and pooling in one pass,
and back).
"""


from __future__ import annotations

import functools

import numpy as np

from convprop.maths import kernels, kernels_dense, kernels_gemm, kernels_pool
from convprop.maths.activations import (
    Activation,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    TanhLinear,
)

# Built-in activations the kernels evaluate themselves (f and f' fused into the loops).
_FUSED = {
    cls: (code, cls.__call__, cls.derivative)
    for cls, code in [(Identity, kernels.IDENTITY), (Sigmoid, kernels.SIGMOID),
                      (Tanh, kernels.TANH), (TanhLinear, kernels.TANH_LINEAR),
                      (ReLU, kernels.RELU), (LeakyReLU, kernels.LEAKY_RELU)]
}
_NEEDS_Z = (kernels.TANH_LINEAR, kernels.RELU, kernels.LEAKY_RELU, kernels.IDENTITY)  # f'(z)
_NEEDS_A = (kernels.SIGMOID, kernels.TANH, kernels.TANH_LINEAR)  # f' reads a


def fused_code(act: Activation) -> tuple[int, float] | None:
    """(kernel code, parameter) for a built-in activation whose f and f' are the
    original ones; None sends any other activation down the generic path
    (``a = act(z)``, ``δ = da ∘ act.derivative(z, a)``)."""
    entry = _FUSED.get(type(act))
    if entry is None or getattr(act, "params", None):
        return None
    code, call, derivative = entry
    if type(act).__call__ is not call or type(act).derivative is not derivative:
        return None
    return code, float(getattr(act, "k", getattr(act, "alpha", 0.0)))


def kept(code: int, pool: int, keep: bool = True, full_cache: bool = False
         ) -> tuple[bool, bool]:
    """Which of z and a a fused conv layer's forward keeps (``Conv.forward``): what f'
    reads when ``keep`` (both with ``full_cache``), and a itself when no pooling
    follows (it is then the output)."""
    return (keep and (full_cache or code in _NEEDS_Z),
            (keep and (full_cache or code in _NEEDS_A)) or pool == 1)


def to_chwn(x: np.ndarray) -> np.ndarray:
    """Batch axis last, contiguous: (N, C, H, W) -> (C, H, W, N), (N, n) -> (n, N).
    (One 2-D transpose of the (N, C·H·W) rows: faster than moving the axis in 4-D.)"""
    rows = x.reshape(x.shape[0], -1)
    return np.ascontiguousarray(rows.T).reshape(*x.shape[1:], x.shape[0])


def to_nchw(x: np.ndarray) -> np.ndarray:
    """Batch axis first, contiguous: (C, H, W, N) -> (N, C, H, W), (n, N) -> (N, n)."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 0))


_EMPTY = {np.dtype(t): np.empty((0, 0, 0, 0), dtype=t) for t in ("float32", "float64")}


@functools.lru_cache(maxsize=1024)
def kernel_consts(dtype: np.dtype, param: float, inv: float = 1.0) -> np.ndarray:
    """The kernels' constants [1, activation parameter, 1/s²] in ``dtype``, made once
    per value (building the array took longer than some kernels' work).  Shared: never
    written to (left writeable, as numba compiles read-only arrays as another type)."""
    return np.array([1.0, param, inv], dtype=dtype)


class Conv:
    """Valid convolution, every input map to every output map, then f:
    a_j = f(z_j),  z_j = Σ_i a_i ⋆ w_ji + b_j  (⋆ = cross-correlation).

    ``weight`` is (out_maps, in_maps, k, k) in cross-correlation orientation (as
    PyTorch's Conv2d); the toolbox's kernel for the same layer is its 180° rotation.
    For the first layer the input maps are the image's C channels (3 for RGB): the sum
    over i in z_j, and equation (13)'s ∂C/∂k_ij (one kernel per channel and map), run
    over them as over any layer's input maps."""

    kind = "conv"

    def __init__(self, in_maps: int, out_maps: int, k: int, activation: Activation,
                 dtype: np.dtype):
        self.in_maps, self.out_maps, self.k = in_maps, out_maps, k
        self.activation = activation
        self.activation.map_axis = 0  # learnable activations: z is CHWN, maps on axis 0
        # direct kernels, or im2col + GEMM for a wide layer (a fixed rule: kernels_gemm)
        self.gemm = kernels_gemm.use_gemm(in_maps, out_maps, k)
        path = kernels_gemm if self.gemm else kernels
        self._conv_forward, self._conv_backward = path.conv_forward, path.conv_backward
        self.params = {
            "weight": np.zeros((out_maps, in_maps, k, k), dtype=dtype),
            "bias": np.zeros(out_maps, dtype=dtype),
        }
        # A learnable activation's parameters (each (out_maps,) or (1,)) are the layer's.
        self.params.update(getattr(activation, "params", None) or {})

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = shape
        return self.out_maps, h - self.k + 1, w - self.k + 1

    def forward(self, x, pool: int = 1, keep: bool = True, full_cache: bool = False):
        """x (in_maps, H, W, N) -> a = f(z), z_j = Σ_i x_i ⋆ w_ji + b_j, (out_maps, Ho, Wo,
        N); with ``pool`` = s > 1 the s x s block means of a instead (the mean-pooling
        layer that follows, fused).  ``keep=False`` (inference) returns no cache.

        The cache is (x, s, z, a).  For a fused activation it holds only what f' reads
        (sigmoid, tanh: a; relu, leaky-relu, identity: z; tanh-linear: both; the other
        is empty) unless ``full_cache``."""
        w, b = self.params["weight"], self.params["bias"]
        x = np.ascontiguousarray(x, dtype=w.dtype)
        n_out, dt = self.out_maps, x.dtype
        ho, wo, n = x.shape[1] - self.k + 1, x.shape[2] - self.k + 1, x.shape[3]
        fused = fused_code(self.activation)
        code, param = fused if fused is not None else (kernels.IDENTITY, 0.0)
        consts = kernel_consts(dt, param, 1.0 / (pool * pool))
        empty = _EMPTY[dt]
        if fused is not None:
            keep_z, keep_a = kept(code, pool, keep, full_cache)
            z = np.empty((n_out, ho, wo, n), dt) if keep_z else empty
            a = np.empty((n_out, ho, wo, n), dt) if keep_a else empty
            p = np.empty((n_out, ho // pool, wo // pool, n), dt) if pool > 1 else empty
            self._conv_forward(x, w, b, code, consts, pool, z, a, p)
        else:  # generic activation: the kernel gives z, the activation object f(z)
            z = np.empty((n_out, ho, wo, n), dt)
            self._conv_forward(x, w, b, code, consts, pool, empty, z, empty)
            a = self.activation(z)
            p = kernels_pool.mean_pool_forward(a, pool) if pool > 1 else empty
        out = p if pool > 1 else a
        return out, ((x, pool, z, a) if keep else None)

    def backward(self, dout, cache, need_dx: bool = True):
        """From dL/d(out) (CHWN, pooled if the forward pooled) to the layer's error and
        gradients.

        - Equation (11): δ^l = f'(z^l) ∘ up(δ^{l+1}) / s², the pooling layer's error
          spread over its s x s blocks (when fused), times f'(z) (and (8) in general).
        - Equation (13): ∂C/∂k_ij = a_i^{l-1} ⋆ δ_j, here a cross-correlation because the
          kernel is stored unrotated (the toolbox's ``convn(flipall(a), d, 'valid')``).
        - Equation (14): ∂C/∂b_j = Σ_{u,v} δ_j.
        - Equation (12): the error of the layer below, Σ_j δ_j *full* rot180(k_ij).
          Skipped with ``need_dx=False`` for the first layer, whose input is the image.
        The 1/batch of the toolbox is already in dL/da (the loss divides by N).
        A learnable activation adds ``act.param_grads(z, a, dL/da, map_axis=0)``."""
        x, pool, z, a = cache
        w = self.params["weight"]
        dout = np.ascontiguousarray(dout, dtype=x.dtype)
        dw, db = np.empty_like(w), np.empty_like(self.params["bias"])
        dx = np.empty_like(x) if need_dx else _EMPTY[x.dtype]
        fused = fused_code(self.activation)
        extra = {}
        if fused is not None:
            consts = kernel_consts(x.dtype, fused[1], 1.0 / (pool * pool))
            self._conv_backward(x, w, dout, fused[0], consts, pool, z, a, dw, db, dx)
        else:
            da = kernels_pool.mean_pool_backward(dout, pool) if pool > 1 else dout
            delta = np.ascontiguousarray(da * self.activation.derivative(z, a), dtype=x.dtype)
            consts = kernel_consts(x.dtype, 0.0)
            self._conv_backward(x, w, delta, kernels.IDENTITY, consts, 1, z, a, dw, db, dx)
            if getattr(self.activation, "params", None):
                extra = self.activation.param_grads(z, a, da, 0)
        return (dx if need_dx else None), {"weight": dw, "bias": db, **extra}

    def slope(self, cache):
        """f'(z) of the forward pass, (out_maps, H', W', N): what ``backward`` multiplies
        dL/da by (equation 11).  Needs the cache of ``forward(..., full_cache=True)``.
        Used by ``Network.trace`` and the diagnostics."""
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
    """Mean-pooling over non-overlapping s x s blocks (the toolbox's down-sampling).
    After a convolution the network fuses it into the convolution's kernels."""

    def forward(self, a, keep: bool = True):
        """a (C, H, W, N) -> (C, H/s, W/s, N), each output the mean of its block."""
        return kernels_pool.mean_pool_forward(a, self.scale), None

    def backward(self, delta, cache, need_dx: bool = True):
        """Equation (11), the pooling half: spread each error evenly over its block,
        divided by s² (the toolbox's ``expand(d, [s s 1]) / s^2``), (C, H/s, W/s, N) ->
        (C, H, W, N).  The conv layer below multiplies by f'(z) itself."""
        return kernels_pool.mean_pool_backward(delta, self.scale), {}


class MaxPool(_Pool):
    """Max-pooling over non-overlapping s x s blocks (the paper's other pooling)."""

    def forward(self, a, keep: bool = True):
        """a (C, H, W, N) -> (C, H/s, W/s, N) block maxima; the cache keeps the arg-max."""
        out, idx = kernels_pool.max_pool_forward(a, self.scale)
        return out, (idx if keep else None)

    def backward(self, delta, cache, need_dx: bool = True):
        """Equation (11) for max-pooling: the whole error of a block goes to the unit
        that was its maximum (ties: the first in row-major order, as PyTorch);
        (C, H/s, W/s, N) -> (C, H, W, N)."""
        return kernels_pool.max_pool_backward(delta, cache, self.scale), {}


class Dense:
    """Fully connected layer: o = f(W x + b), x the flattened feature maps (or the units
    of the fc layer below).  ``kind`` is ``"dense"`` for the output layer and ``"fc"``
    for a hidden one, whose f is the network's activation (a learnable one with its own
    parameters, one per unit for ``:map`` scope, (n_out,), or one per layer, (1,)).

    ``weight`` is (n_outputs, features) with features in (map, row, column) order
    (PyTorch's ``flatten``); the toolbox's ``ffW`` orders each map column-major.
    In the CHWN layout the features of a batch are simply x.reshape(features, N)."""

    kind = "dense"

    def __init__(self, n_in: int, n_out: int, activation: Activation, dtype: np.dtype,
                 kind: str = "dense"):
        self.n_in, self.n_out, self.kind = n_in, n_out, kind
        self.activation = activation
        if getattr(activation, "params", None):
            activation.map_axis = 0  # z is (n_out, N) inside the layer
        self.params = {
            "weight": np.zeros((n_out, n_in), dtype=dtype),
            "bias": np.zeros(n_out, dtype=dtype),
        }
        self.params.update(getattr(activation, "params", None) or {})

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int]:
        return (self.n_out,)

    def forward(self, x, keep: bool = True):
        """x (C, H, W, N) or (features, N) -> o (n_out, N)."""
        fv = x.reshape(-1, x.shape[-1])
        z = self.params["weight"] @ fv
        fused = fused_code(self.activation)
        if fused is not None:  # z += b and f in one compiled pass
            o = kernels_dense.dense_forward(z, self.params["bias"], fused[0],
                                            kernel_consts(z.dtype, fused[1]))
        else:
            z += self.params["bias"][:, None]
            o = self.activation(z)
        return o, ((x.shape, fv, z, o) if keep else None)

    def backward(self, do, cache, need_dx: bool = True):
        """dL/do (n_out, N) -> (dL/dx shaped like x, grads).

        - Equation (4): δ^L = dL/do ∘ f'(z^L), dL/do = (o - y)/N from the loss (2).
        - Equation (9): ∂C/∂W = δ^L (fv)^T;  equation (10): ∂C/∂b = Σ_n δ^L.
        - Equation (8) without its f': W^T δ^L, reshaped back into the feature maps
          (the toolbox's ``fvd``); the layer below applies f' if it has one.
        A hidden fc layer is the same with δ^l = f'(z^l) ∘ dL/da^l (equation 8).  A
        learnable activation adds ``act.param_grads(z, o, dL/do, map_axis=0)``."""
        x_shape, fv, z, o = cache
        fused = fused_code(self.activation)
        if fused is not None:  # δ and Σ_n δ in one compiled pass
            delta, db = kernels_dense.dense_backward(fused[0], kernel_consts(z.dtype, fused[1]),
                                                     z, o, do)
        else:
            delta = do * self.activation.derivative(z, o)
            db = delta.sum(axis=1)
        grads = {"weight": delta @ fv.T, "bias": db}
        if getattr(self.activation, "params", None):
            grads.update(self.activation.param_grads(z, o, do, 0))
        dx = (self.params["weight"].T @ delta).reshape(x_shape) if need_dx else None
        return dx, grads

    def slope(self, cache):
        """f'(z^L) of the forward pass, (n_out, N): the factor of equation (4)."""
        _, _, z, o = cache
        return self.activation.derivative(z, o)
