"""Activation functions f and their derivatives f' (the paper's section 3).

Each activation is named by the exact string the CLI and the Python API accept:

==================  ======================================  ===========================
name                f(z)                                     f'(z)
==================  ======================================  ===========================
``sigmoid``         1 / (1 + e^-z)                           f (1 - f)
``tanh``            tanh z  (equation 15)                    1 - tanh² z
``tanh-linear:K``   tanh z + K z  (the paper's improved tanh)  1 - tanh² z + K
``relu``            max(0, z)                                1 if z > 0 else 0
``leaky-relu:A``    z if z >= 0 else A z                     1 if z > 0 else A
``identity``        z                                        1
==================  ======================================  ===========================

Learnable activations (beyond the paper): the parameter is learned by
back-propagation along with the weights, one value per feature map (``:map``) or one
per layer (``:layer``), from an optional initial value (the third field):

- ``prelu:map[:A0]``, ``prelu:layer[:A0]``: z if z >= 0 else α z (He et al. 2015),
  α learned, default start 0.25 as in He et al.; ``prelu`` alone is ``prelu:map``.
  df/dα = min(z, 0).
- ``tanh-linear-learned:map[:K0]``, ``tanh-linear-learned:layer[:K0]``: tanh z + k z,
  k learned, default start 0.13 (the paper's grid-searched best); the bare name is
  ``:map``.  df/dk = z.

dL/dparam = Σ dL/da · df/dparam, summed over every axis except the map axis for a
per-map parameter, over everything for a per-layer one.  The map axis is the
activation's ``map_axis`` attribute: 0, the layers' (C, H, W, N) layout.

At exactly z = 0 the ReLU-family derivative is the left one (0 for ``relu``, A for
``leaky-relu``), as PyTorch and the toolbox-style ``(z > 0)`` test give.

Layers cache the pre-activation z *and* the output a = f(z), and call
``derivative(z, a)``: cheap activations reuse a (sigmoid: a (1 - a)), while
tanh + K z needs z, because 1 - tanh² z + K cannot be recovered from a alone.
"""

from __future__ import annotations

import math

import numpy as np

from convprop.errors import SpecError


class Activation:
    """Base class: ``name`` is the canonical string, ``max_slope`` the largest |f'|."""

    name: str = ""
    max_slope: float = 1.0
    saturating: bool = False  # sigmoid/tanh family: |f'| -> 0 for large |z|
    rectifier: bool = False  # ReLU family: units can "die" (output 0 for every input)
    # Learnable parameters (name -> array (n_maps,) or (1,)); empty for fixed activations.
    params: dict[str, np.ndarray] = {}
    map_axis: int = 0  # the feature-map axis of z (0: CHWN, as the layers use)

    def for_layer(self, n_maps: int, dtype: np.dtype) -> Activation:
        """The instance one layer of ``n_maps`` maps uses: a fresh one with its own
        parameters for a learnable activation, ``self`` for a fixed one."""
        return self

    def param_grads(self, z: np.ndarray, a: np.ndarray, da: np.ndarray,
                    map_axis: int | None = None) -> dict[str, np.ndarray]:
        """dL/dparam for each learnable parameter, from dL/da (shaped as z)."""
        return {}

    def reset_params(self) -> None:
        """Put learnable parameters back to their initial value (network initialisation)."""

    def __call__(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """f'(z), given z and a = f(z) (both shaped alike)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class Sigmoid(Activation):
    name = "sigmoid"
    max_slope = 0.25
    saturating = True

    def __call__(self, z):
        # 1/(1+e^-z), -z cut to ±87 (float32) or ±708 (float64) as in the kernels: no
        # overflow warning at z = -1000, and no subnormal result (σ is then within an ulp
        # of its least normal value).  NumPy's exp is vectorised; its tanh (the
        # 0.5 tanh(z/2) + 0.5 of before) is not, 4x slower in float32.
        z = np.asarray(z)
        e = np.array(z, dtype=np.result_type(z, np.float32))
        np.negative(e, out=e)
        lim = 87.0 if e.dtype == np.float32 else 708.0
        np.minimum(e, lim, out=e)  # (np.clip's argument checks cost more than its work)
        np.maximum(e, -lim, out=e)  # nor underflow at z = +1000
        np.exp(e, out=e)
        e += 1
        np.reciprocal(e, out=e)
        return e if e.ndim else e[()]

    def derivative(self, z, a):
        return a * (1 - a)


class Tanh(Activation):
    name = "tanh"
    saturating = True

    def __call__(self, z):
        return np.tanh(z)

    def derivative(self, z, a):
        return 1 - a * a


class TanhLinear(Activation):
    """tanh(z) + K z: the slope never falls below K, so the error keeps flowing."""

    saturating = True  # its tanh part saturates; the K term keeps |f'| >= K

    def __init__(self, k: float):
        self.k = k
        self.name = f"tanh-linear:{_fmt(k)}"
        self.max_slope = 1.0 + k

    def __call__(self, z):
        return np.tanh(z) + self.k * z

    def derivative(self, z, a):
        t = a - self.k * z  # tanh(z), recovered without a second tanh
        return 1 - t * t + self.k


class ReLU(Activation):
    name = "relu"
    rectifier = True

    def __call__(self, z):
        return np.maximum(z, 0)

    def derivative(self, z, a):
        return (z > 0).astype(z.dtype)


class LeakyReLU(Activation):
    """z for z >= 0, A z below (the paper's "correction coefficient" A)."""

    rectifier = True

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.name = f"leaky-relu:{_fmt(alpha)}"
        self.max_slope = max(1.0, abs(alpha))

    def __call__(self, z):
        return np.where(z >= 0, z, self.alpha * z)

    def derivative(self, z, a):
        return np.where(z > 0, 1, self.alpha).astype(z.dtype)


class Identity(Activation):
    """f(z) = z: the output layer's activation when the loss applies its own (softmax)."""

    name = "identity"

    def __call__(self, z):
        return z

    def derivative(self, z, a):
        return np.ones_like(z)


class _Learned(Activation):
    """Base of the learnable activations: one parameter ``param`` per map or per layer.

    Subclasses give ``f(z, p)``, ``fprime(z, a, p)`` and ``dparam(z, a, p)`` = df/dp,
    with p already broadcast along ``map_axis``."""

    base = ""
    param = ""
    default = 0.0

    def __init__(self, scope: str = "map", init: float | None = None):
        self.scope = scope
        self.init = self.default if init is None else float(init)
        self.name = f"{self.base}:{scope}:{_fmt(self.init)}"
        self.params = {self.param: np.full(1, self.init)}  # the prototype's; layers own theirs

    def for_layer(self, n_maps: int, dtype: np.dtype) -> Activation:
        new = type(self)(self.scope, self.init)
        size = n_maps if self.scope == "map" else 1
        new.params = {self.param: np.full(size, self.init, dtype=dtype)}
        new.map_axis = self.map_axis
        return new

    def reset_params(self) -> None:
        self.params[self.param][...] = self.init

    def _p(self, z: np.ndarray, map_axis: int | None = None):
        """The parameter shaped to broadcast against z along the map axis."""
        p = self.params[self.param]
        if p.size == 1:
            return p[0]
        shape = [1] * z.ndim
        shape[self.map_axis if map_axis is None else map_axis] = -1
        return p.reshape(shape)

    def __call__(self, z):
        return self.f(z, self._p(z))

    def derivative(self, z, a):
        return self.fprime(z, a, self._p(z))

    def param_grads(self, z, a, da, map_axis=None):
        """dL/dp = Σ dL/da · df/dp over every axis but the map axis (per map), or over
        all axes (per layer)."""
        axis = self.map_axis if map_axis is None else map_axis
        g = da * self.dparam(z, a, self._p(z, axis))
        p = self.params[self.param]
        if self.scope == "layer":
            return {self.param: np.full(1, g.sum(), dtype=p.dtype)}
        axes = tuple(i for i in range(g.ndim) if i != axis % g.ndim)
        return {self.param: g.sum(axis=axes).astype(p.dtype, copy=False)}

    @property
    def value(self) -> np.ndarray:
        """The current parameter values (a copy)."""
        return self.params[self.param].copy()


class PReLU(_Learned):
    """Parametric ReLU (He et al. 2015): z for z >= 0, α z below, α learned.
    f'(z) = 1 if z > 0 else α (left derivative at 0, as ``leaky-relu``); df/dα = min(z, 0)."""

    base, param, default = "prelu", "alpha", 0.25
    rectifier = True

    @property
    def max_slope(self) -> float:  # type: ignore[override]
        return max(1.0, float(np.abs(self.params["alpha"]).max()))

    def f(self, z, alpha):
        return np.where(z >= 0, z, alpha * z)

    def fprime(self, z, a, alpha):
        return np.where(z > 0, 1, alpha).astype(z.dtype, copy=False)

    def dparam(self, z, a, alpha):
        return np.minimum(z, 0)


class TanhLinearLearned(_Learned):
    """tanh(z) + k z with k learned.  f'(z) = 1 - tanh² z + k; df/dk = z."""

    base, param, default = "tanh-linear-learned", "k", 0.13
    saturating = True

    @property
    def max_slope(self) -> float:  # type: ignore[override]
        return 1.0 + float(self.params["k"].max())

    def f(self, z, k):
        return np.tanh(z) + k * z

    def fprime(self, z, a, k):
        t = a - k * z  # tanh(z), recovered without a second tanh
        return 1 - t * t + k

    def dparam(self, z, a, k):
        return z


_PLAIN = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity}
_PARAMETERISED = {"tanh-linear": TanhLinear, "leaky-relu": LeakyReLU}
_LEARNED = {"prelu": PReLU, "tanh-linear-learned": TanhLinearLearned}
ACTIVATION_NAMES = ("sigmoid", "tanh", "tanh-linear:K", "relu", "leaky-relu:A",
                    "prelu:map|layer[:A0]", "tanh-linear-learned:map|layer[:K0]")


def get_activation(name: str | Activation) -> Activation:
    """Parse an activation string (``"tanh-linear:0.13"``) into an :class:`Activation`."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise SpecError(f"activation must be a string such as 'sigmoid', got {name!r}")
    text = name.strip().lower()
    if text in _PLAIN:
        return _PLAIN[text]()
    base, sep, arg = text.partition(":")
    if base in _LEARNED:
        return _parse_learned(name, base, arg)
    if base in _PARAMETERISED:
        if not sep or not arg:
            raise SpecError(f"activation {name!r} needs a parameter, e.g. '{base}:0.1'")
        try:
            value = float(arg)
        except ValueError:
            raise SpecError(f"activation {name!r}: parameter {arg!r} is not a number") from None
        if not math.isfinite(value):
            raise SpecError(f"activation {name!r}: parameter must be finite, got {arg}")
        return _PARAMETERISED[base](value)
    if base in _PLAIN:
        raise SpecError(f"activation {base!r} takes no parameter, got {name!r}")
    known = ", ".join(ACTIVATION_NAMES)
    raise SpecError(f"unknown activation {name!r} (known: {known})")


def _parse_learned(name: str, base: str, arg: str) -> Activation:
    """``prelu``, ``prelu:map``, ``prelu:layer:0.05`` -> the learnable activation."""
    scope, _, init = arg.partition(":")
    scope = scope or "map"
    if scope not in ("map", "layer"):
        raise SpecError(f"activation {name!r}: expected '{base}:map' or '{base}:layer' "
                        f"(optionally ':' and an initial value), got scope {scope!r}")
    value = None
    if init:
        try:
            value = float(init)
        except ValueError:
            raise SpecError(f"activation {name!r}: initial value {init!r} is not a "
                            f"number") from None
        if not math.isfinite(value):
            raise SpecError(f"activation {name!r}: initial value must be finite, got {init}")
    return _LEARNED[base](scope, value)


def _fmt(x: float) -> str:
    """Shortest round-tripping form of a float parameter: 0.13 -> '0.13', 1.0 -> '1'."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


format_number = _fmt  # the public name, for modules outside maths
