"""Shared test helpers (imported as ``from conftest import ...``)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY_FILE = SHARED / "parity" / "dlt_6c5-2s-12c5-2s_seed0.mat"
MNIST_DIR = SHARED / "datasets" / "mnist"
SRC = Path(__file__).resolve().parents[1] / "src"
# A CLI child: this checkout's package, no MNIST cache, one BLAS thread (bitwise equality
# between processes needs the same thread count in each).
CLI_ENV = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "CONVPROP_DATA_DIR": "/nonexistent",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args, env=CLI_ENV):
    """``python -m convprop ARGS`` in a child process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "convprop", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(proc, needle):
    """A user mistake: non-zero exit, no traceback, one stderr line ``error: ...`` that
    names the problem (contains ``needle``)."""
    err = proc.stderr
    assert proc.returncode not in (0, None), (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert needle in lines[0], (needle, lines[0])


def blobs(n=200, seed=0, size=12):
    """A tiny learnable problem: each class lights up its own 4x4 patch of a size x size
    image (size >= 12)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.uniform(0, 0.2, (n, size, size))
    for i, c in enumerate(y):
        r, col = divmod(int(c), 3)
        x[i, r * 3 : r * 3 + 4, col * 3 : col * 3 + 4] += 0.8
    return x, y


def numerical_gradient(f, x, eps=1e-6, flat=None):
    """Central differences of the scalar f() with respect to the array x (changed in place
    and restored): the whole gradient, shaped like x, or with ``flat`` (flat indices into
    x) only those entries, as a 1-D array."""
    indices = range(x.size) if flat is None else flat
    out = np.zeros(len(indices), dtype=x.dtype)
    for j, i in enumerate(indices):
        ix = np.unravel_index(i, x.shape)
        old = x[ix]
        x[ix] = old + eps
        fp = f()
        x[ix] = old - eps
        fm = f()
        x[ix] = old
        out[j] = (fp - fm) / (2 * eps)
    return out.reshape(x.shape) if flat is None else out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
