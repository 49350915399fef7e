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
        # 1/(1+e^-z) written through tanh: no overflow warning at z = -1000.
        return 0.5 * np.tanh(0.5 * z) + 0.5

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


_PLAIN = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity}
_PARAMETERISED = {"tanh-linear": TanhLinear, "leaky-relu": LeakyReLU}
ACTIVATION_NAMES = ("sigmoid", "tanh", "tanh-linear:K", "relu", "leaky-relu:A")


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


def _fmt(x: float) -> str:
    """Shortest round-tripping form of a float parameter: 0.13 -> '0.13', 1.0 -> '1'."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text
