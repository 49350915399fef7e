"""Shared test helpers (imported as ``from conftest import ...``)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convprop.data import cache_dir
from convprop.data.mnist import MNIST_FILES

# The DeepLearnToolbox parity case ships with the tests (80 kB; its README says how it was made).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARITY_FILE = FIXTURES / "parity" / "dlt_6c5-2s-12c5-2s_seed0.mat"
# Where a development checkout keeps full MNIST beside the repository (not in a user's clone).
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
SRC = Path(__file__).resolve().parents[1] / "src"
# A CLI child: this checkout's package, no MNIST cache, one BLAS thread (bitwise equality
# between processes needs the same thread count in each).
CLI_ENV = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "CONVPROP_DATA_DIR": "/nonexistent",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def skip_unless_required(variable: str, reason: str) -> None:
    """Skip the calling test with ``reason``, or fail it when the environment variable
    ``variable`` is ``1`` (``.ci/run`` sets CONVPROP_REQUIRE_FULL_MNIST and
    CONVPROP_REQUIRE_OCTAVE so that CI runs every test)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1 requires it)")
    pytest.skip(f"{reason} (set {variable}=1 to make this a failure)")


def find_full_mnist() -> Path | None:
    """The first directory holding the four full-MNIST ``NAME.gz`` files (what ``convprop
    data fetch`` writes): where the package looks (``$CONVPROP_DATA_DIR``, else the cache,
    see :func:`convprop.data.cache_dir`), then ``../shared/datasets/mnist``; None if none."""
    for d in (cache_dir(), SHARED_MNIST):
        if all((d / f"{name}.gz").is_file() for name in MNIST_FILES.values()):
            return d
    return None


def full_mnist_dir() -> Path:
    """:func:`find_full_mnist`, or skip (fail under CONVPROP_REQUIRE_FULL_MNIST=1)."""
    d = find_full_mnist()
    if d is None:
        skip_unless_required("CONVPROP_REQUIRE_FULL_MNIST",
                             f"full MNIST not found in {cache_dir()} (the cache, "
                             f"$CONVPROP_DATA_DIR) nor in {SHARED_MNIST}; `convprop data "
                             f"fetch` downloads it")
    return d


def octave_cli() -> str:
    """Path of GNU Octave's ``octave-cli``, or skip (fail under CONVPROP_REQUIRE_OCTAVE=1)."""
    exe = shutil.which("octave-cli")
    if exe is None:
        skip_unless_required("CONVPROP_REQUIRE_OCTAVE",
                             "GNU Octave (octave-cli) is not installed; apt-get install octave")
    return exe


@pytest.fixture(autouse=True)
def _scratch_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty directory of its own: what the CLI writes by default
    (``--out runs/train``) lands there, never in the checkout, and the results that
    README's first command (``convprop train``) leaves in a user's clone change no test's
    outcome (they made seven CLI tests fail with "runs/train already holds...")."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def mnist_dir() -> Path:
    """The full-MNIST directory for a test that needs it (see :func:`full_mnist_dir`)."""
    return full_mnist_dir()


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
