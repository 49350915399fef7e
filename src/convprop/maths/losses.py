"""Loss functions: the value L and dL/do for a batch of outputs o (N, n_outputs).

``mse`` is the paper's cost (1) with the toolbox's division by the batch size:
L = 1/2 · Σ (o - y)² / N, so dL/do = (o - y) / N (equation 2, averaged).
Its outputs o are sigmoid units, as in the paper.

``cross-entropy`` (beyond the paper, today's default): the output layer is linear
(o = W x + b, the *logits*) and the loss applies the softmax itself,
L = -Σ_n Σ_j y_nj log softmax(o_n)_j / N, so dL/do = (softmax(o) - y) / N.
"""

from __future__ import annotations

import functools

import numpy as np

from convprop.errors import SpecError


class MSE:
    """L = 1/2 · Σ_n Σ_j (o_nj - y_nj)² / N, the toolbox's ``1/2 * sum(e(:).^2) / m``."""

    name = "mse"
    output_activation = "sigmoid"

    def __call__(self, o: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (L, dL/do) for outputs o and targets y, both (N, n_outputs)."""
        n = o.shape[0]
        e = o - y
        return 0.5 * float(np.vdot(e, e)) / n, e / n

    @staticmethod
    def constant_baseline(p: np.ndarray) -> float:
        """The loss of the best constant output (o = class frequencies p) on one-hot
        targets: 1/2 · (1 - Σ p_j²), about 0.45 on MNIST.  A network stuck near it has
        learned nothing beyond the label frequencies."""
        p = np.asarray(p, dtype=float)
        return 0.5 * float(1.0 - np.dot(p, p))


class CrossEntropy:
    """Softmax + cross-entropy on logits o: L = -Σ y · log softmax(o) / N."""

    name = "cross-entropy"
    output_activation = "identity"  # the softmax is part of the loss

    def __call__(self, o: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (L, dL/do) for logits o and targets y (rows summing to 1), (N, n)."""
        n = o.shape[0]
        shifted = o - o.max(axis=1, keepdims=True)  # softmax is shift-invariant; no overflow
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -float(np.vdot(y, log_p)) / n
        return loss, (np.exp(log_p) - y) / n

    @staticmethod
    def constant_baseline(p: np.ndarray) -> float:
        """The loss of the best constant output (softmax = class frequencies p): the
        entropy -Σ p_j log p_j, about 2.30 on MNIST."""
        p = np.asarray(p, dtype=float)
        p = p[p > 0]
        return float(-np.dot(p, np.log(p)))


LOSSES = {"mse": MSE, "cross-entropy": CrossEntropy}


def get_loss(name: str) -> MSE | CrossEntropy:
    try:
        return LOSSES[name]()
    except (KeyError, TypeError):
        raise SpecError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})") from None


# ------------------------------------------------------------- targets
def non_integer_label(y: np.ndarray) -> str | None:
    """repr of the first label that is not a whole number (a string, complex, NaN, inf,
    2.5, None), or None when all are whole numbers."""
    if y.dtype.kind in "iu" or y.size == 0:
        return None
    if y.dtype.kind != "f":
        first = y.flat[0]
        return repr(first.item() if isinstance(first, np.generic) else first)[:40]
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(y) & (np.mod(y, 1) == 0))
    return repr(float(y[bad][0])) if bad.any() else None


@functools.lru_cache(maxsize=64)
def one_hot(n: int, dtype: np.dtype) -> np.ndarray:
    """The n x n identity in ``dtype``, made once (rows are the one-hot targets);
    read-only."""
    eye = np.eye(n, dtype=dtype)
    eye.flags.writeable = False
    return eye
