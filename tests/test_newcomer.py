"""A newcomer's first hour (issue 12): what a wrong model file, a failed download and a
missing optional extra say, and the test helpers that skip without full MNIST or Octave."""

import gzip
import importlib.util
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import (
    CLI_ENV,
    PARITY_FILE,
    SRC,
    assert_one_line_error,
    run_cli,
    skip_unless_required,
)
from convprop import ModelError, Network, load_model, save_model
from convprop.errors import ConvpropError

EXPECTED = "expected a model.npz"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (28, 28), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


WRONG_FILES = {
    "metrics.csv": (b"iteration,loss\n1,0.5\n2,0.4\n", "a text table (CSV)"),
    "digit.png": (_png(), "a PNG image"),
    "photo.jpg": (_jpeg(), "a JPEG image"),
    "model.npz": (b"", "an empty file"),  # named like a model, but empty
    "notes.txt": (b"my model is in runs/train\n", "a text file"),
    "summary.json": (b'{"test_error": 0.13}\n', "a JSON or other text file"),
    "data.gz": (gzip.compress(b"x" * 100, mtime=0), "a gzip file"),
    "blob.bin": (bytes(range(128, 256)) * 2, "unrecognised binary data"),
}


@pytest.mark.parametrize("name", sorted(WRONG_FILES))
def test_a_file_that_is_not_a_model_is_named_for_what_it_is(tmp_path, name):
    data, what = WRONG_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ModelError) as exc:
        load_model(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    assert what in message and EXPECTED in message, message
    assert "pickle" not in message.lower(), message


def test_the_toolbox_mat_file_as_a_model_points_at_import_matlab():
    with pytest.raises(ModelError) as exc:
        load_model(PARITY_FILE)
    assert "a MATLAB .mat file" in str(exc.value) and "import-matlab" in str(exc.value)
    assert EXPECTED in str(exc.value)


def test_an_archive_holding_python_objects_never_suggests_pickle(tmp_path):
    """A .npz whose metadata is an object array: NumPy's own message advises
    allow_pickle; ours says what is wrong instead."""
    net = Network.from_spec("2c3-2s", input_shape=(8, 8))
    save_model(net, tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__meta__"] = np.array([{"format": "convprop"}], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelError) as exc:
        load_model(tmp_path / "evil.npz")
    assert "pickle" not in str(exc.value).lower(), str(exc.value)
    assert "Python objects" in str(exc.value)


@pytest.mark.parametrize("command", ["evaluate", "info"])
def test_cli_given_a_csv_or_png_as_model_prints_one_line(tmp_path, command):
    csv = tmp_path / "metrics.csv"
    csv.write_bytes(WRONG_FILES["metrics.csv"][0])
    png = tmp_path / "digit.png"
    png.write_bytes(_png())
    for path, what in [(csv, "a text table (CSV)"), (png, "a PNG image")]:
        proc = run_cli(command, path)
        assert_one_line_error(proc, what)
        assert EXPECTED in proc.stderr and "pickle" not in proc.stderr.lower()


def test_data_fetch_failure_suggests_data_dir(tmp_path):
    proc = run_cli("data", "fetch", "--dir", tmp_path / "mnist", "--mirror",
                   (tmp_path / "no-mirror").as_uri() + "/", "--retries", "1")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: train-images-idx3-ubyte.gz: download failed"), last
    assert "--data DIR" in last and "Traceback" not in proc.stderr


def test_ray_executor_without_ray_fails_before_any_run_trains(tmp_path, monkeypatch):
    """The optional extra is checked up front: nothing is trained or written."""
    from convprop.experiments import executors as ex_exec
    from convprop.experiments import runs as ex_runs
    from convprop.experiments import sweep as ex_sweep

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    trained = []
    monkeypatch.setattr(ex_exec, "execute_run", lambda *a, **k: trained.append(a))
    runs = [ex_runs.Run(seed=0, iterations=5), ex_runs.Run(seed=1, iterations=5)]
    with pytest.raises(ConvpropError, match=r"--executor ray needs Ray: pip install"):
        ex_sweep.run_sweep(runs, tmp_path / "out", executor="ray")
    assert trained == [] and not (tmp_path / "out").exists()


def test_matplotlib_is_a_core_dependency():
    import tomllib

    with open(SRC.parent / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    assert any(d.startswith("matplotlib") for d in project["dependencies"])
    source = "\n".join(p.read_text() for p in (SRC / "convprop").rglob("*.py"))
    assert "needs matplotlib" not in source


# ------------------------------------------------------------- skip or fail (conftest)

SKIP_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from conftest import skip_unless_required
def test_it():
    skip_unless_required("CONVPROP_REQUIRE_SOMETHING", "something is missing")
"""


@pytest.mark.parametrize("required", [False, True])
def test_skip_unless_required_skips_with_the_reason_or_fails(tmp_path, required):
    (tmp_path / "test_x.py").write_text(SKIP_CHECK.format(tests=str(SRC.parent / "tests")))
    env = dict(CLI_ENV, CONVPROP_REQUIRE_SOMETHING="1" if required else "0")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:randomly",
                           "-p", "no:cacheprovider", str(tmp_path / "test_x.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out = proc.stdout
    assert "something is missing" in out, out
    if required:
        assert proc.returncode == 1 and "1 failed" in out, out
    else:
        assert proc.returncode == 0 and "1 skipped" in out, out
    assert callable(skip_unless_required)
