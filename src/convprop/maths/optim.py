"""Optimisers: update a network's live parameters in place from their gradients.

- ``sgd``: the paper's (and the toolbox's ``cnnapplygrads``) p <- p - lr · g.
- ``momentum`` (beyond the paper): v <- μ v + g, p <- p - lr · v (PyTorch's SGD with
  ``momentum=μ``, no dampening, not Nesterov); v starts at 0, so v_1 = g_1.
- ``adam`` (beyond the paper, Kingma & Ba 2015, as ``torch.optim.Adam``):
  m <- β1 m + (1-β1) g,  v <- β2 v + (1-β2) g²,
  p <- p - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε),  t = 1, 2, ...

Each has ``state_dict()`` (name -> array, e.g. ``velocity/conv1.weight``, ``step``) and
``load_state_dict(state)``, so a checkpoint can continue a run exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from convprop.errors import ConvpropError

DEFAULT_MOMENTUM = 0.9
DEFAULT_BETAS = (0.9, 0.999)  # PyTorch's
ADAM_EPS = 1e-8


class SGD:
    """Plain stochastic gradient descent, the toolbox's ``cnnapplygrads``: p <- p - lr · g."""

    name = "sgd"

    def __init__(self, lr: float):
        check_learning_rate(lr)
        self.lr = lr

    def step(self, params: MutableMapping[str, np.ndarray], grads: Mapping[str, np.ndarray]):
        for name, g in grads.items():
            p = params[name]
            p -= self.lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        pass


class _Stateful:
    """Shared state handling: ``self.slots`` names the per-parameter buffers."""

    slots: tuple[str, ...] = ()

    def _init_state(self) -> None:
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}

    def _buffer(self, slot: str, name: str, p: np.ndarray) -> np.ndarray:
        buf = self.state[slot].get(name)
        if buf is None:
            buf = self.state[slot][name] = np.zeros_like(p)
        return buf

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array(self.t, dtype=np.int64)}
        for slot, bufs in self.state.items():
            out.update({f"{slot}/{name}": buf.copy() for name, buf in bufs.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self._init_state()
        for key, arr in state.items():
            if key == "step":
                self.t = int(arr)
                continue
            slot, _, name = key.partition("/")
            if slot not in self.state or not name:
                raise ConvpropError(f"{self.name} optimizer state: unexpected entry {key!r}")
            self.state[slot][name] = np.array(arr, copy=True)


class Momentum(_Stateful):
    """SGD with momentum: v <- μ v + g, p <- p - lr · v (``torch.optim.SGD(momentum=μ)``)."""

    name = "momentum"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = DEFAULT_MOMENTUM):
        check_learning_rate(lr)
        if not (np.isfinite(momentum) and 0 <= momentum < 1):
            raise ConvpropError(f"momentum must be in [0, 1), got {momentum!r}")
        self.lr, self.momentum = lr, momentum
        self._init_state()

    def step(self, params: MutableMapping[str, np.ndarray], grads: Mapping[str, np.ndarray]):
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            v = self._buffer("velocity", name, p)
            v *= self.momentum
            v += g
            p -= self.lr * v


class Adam(_Stateful):
    """Adam with bias correction, written as ``torch.optim.Adam`` computes it."""

    name = "adam"
    slots = ("m", "v")

    def __init__(self, lr: float, betas: Sequence[float] = DEFAULT_BETAS,
                 eps: float = ADAM_EPS):
        check_learning_rate(lr)
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(np.isfinite(b) and 0 <= b < 1 for b in betas):
            raise ConvpropError(f"Adam betas must be two numbers in [0, 1), got {betas!r}")
        self.lr, self.betas, self.eps = lr, betas, eps
        self._init_state()

    def step(self, params: MutableMapping[str, np.ndarray], grads: Mapping[str, np.ndarray]):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, g in grads.items():
            p = params[name]
            m, v = self._buffer("m", name, p), self._buffer("v", name, p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v) / np.sqrt(c2) + self.eps
            p -= (self.lr / c1) * m / denom


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def get_optimizer(name: str, lr: float, momentum: float = DEFAULT_MOMENTUM,
                  betas: Sequence[float] = DEFAULT_BETAS) -> SGD | Momentum | Adam:
    """An optimiser by name (``sgd``, ``momentum``, ``adam``) with learning rate ``lr``;
    ``momentum`` is used by ``momentum`` only, ``betas`` by ``adam`` only."""
    if name not in OPTIMIZERS:
        raise ConvpropError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    if name == "momentum":
        return Momentum(lr, momentum)
    if name == "adam":
        return Adam(lr, betas)
    return SGD(lr)


def check_learning_rate(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ConvpropError(f"learning rate must be a positive finite number, got {lr!r}")
