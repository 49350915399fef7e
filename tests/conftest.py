from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY_FILE = SHARED / "parity" / "dlt_6c5-2s-12c5-2s_seed0.mat"
MNIST_DIR = SHARED / "datasets" / "mnist"


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to the array x (changed in place
    and restored)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad


@pytest.fixture
def rng():
    return np.random.default_rng(0)
