"""Optimisers: update a network's live parameters in place from their gradients."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np

from convprop.errors import ConvpropError


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


OPTIMIZERS = {"sgd": SGD}


def get_optimizer(name: str, lr: float) -> SGD:
    """An optimiser by name (``sgd``) with learning rate ``lr``."""
    if name not in OPTIMIZERS:
        raise ConvpropError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](lr)


def check_learning_rate(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ConvpropError(f"learning rate must be a positive finite number, got {lr!r}")
