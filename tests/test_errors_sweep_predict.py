"""Bad-input cases for `convprop sweep` (issue 4) and `convprop predict` (issue 5).

Pending: these commands land on other branches.  The file name keeps pytest from
collecting it; once both are merged, rename it to ``tests/test_errors_sweep_predict.py``.
Same rules as tests/test_errors.py: a non-zero exit, exactly one line ``error: ...`` on
stderr that names the problem, no traceback.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error, run_cli
from convprop import ConvpropError, Network
from convprop.interop.model import save_model

# ------------------------------------------------------------------ convprop sweep
SWEEP_CASES = {
    "empty-lr-list": (["--lr", ""], "--lr"),
    "empty-item-in-lr-list": (["--lr", "0.1,,2"], "--lr"),
    "empty-seeds": (["--seeds", ""], "--seeds"),
    "negative-lr": (["--lr", "0.1,-1"], "-1"),
    "nan-lr": (["--lr", "nan"], "nan"),
    "lr-not-a-number": (["--lr", "fast"], "fast"),
    "unknown-activation": (["--activation", "swish,relu"], "swish"),
    "activation-bad-parameter": (["--activation", "tanh-linear:abc"], "abc"),
    "bad-spec": (["--spec", "6c5,6x5"], "6x5"),
    "seeds-backwards-range": (["--seeds", "5-2"], "5-2"),
    "seeds-not-integers": (["--seeds", "a-b"], "a-b"),
    "batch-size-zero": (["--batch-size", "0"], "0"),
    "iterations-zero": (["--iterations", "0"], "0"),
    "dtype-unknown": (["--dtype", "float16"], "float16"),
    "grid-too-large": (["--lr", ",".join(str(0.01 * i) for i in range(1, 41)),
                        "--seeds", "0-29"], "--force"),  # 40 x 30 = 1200 runs
    "seed-range-too-large": (["--seeds", "0-1000000000"], "0-1000000000"),
    "data-missing": (["--data", "/no/such/dir"], "/no/such/dir"),
}


@pytest.mark.parametrize("case", SWEEP_CASES)
def test_cli_sweep_bad_grids(tmp_path, case):
    args, needle = SWEEP_CASES[case]
    if "--iterations" not in args:
        args = [*args, "--iterations", "1"]
    if "--data" not in args:
        args = [*args, "--data", "sample"]
    proc = run_cli("sweep", *args, "--out", tmp_path / "sweep")
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "sweep" / "summary.csv").exists()


def test_cli_sweep_output_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = run_cli("sweep", "--lr", "1", "--seeds", "0", "--iterations", "1", "--data", "sample",
                   "--out", tmp_path / "f")
    assert_one_line_error(proc, "f")


@settings(max_examples=100, deadline=None)
@given(lr=st.text(max_size=12), seeds=st.text(max_size=12), activation=st.text(max_size=16))
def test_grid_parser_raises_only_convprop_errors(lr, seeds, activation):
    from convprop.experiments.runs import parse_grid

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            grid = parse_grid(activation=activation or None, lr=lr, seeds=seeds, data="sample")
        except ConvpropError as exc:
            assert "\n" not in str(exc)
            return
    assert grid.size() >= 1


# ------------------------------------------------------------------ convprop predict
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("model") / "model.npz"
    save_model(Network.from_spec("2c5-2s", seed=0, dtype="float64"), p)
    return p


def _png_bytes():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PREDICT_CASES = {
    "missing-image": (None, "missing.png"),
    "random-bytes": (lambda: np.random.default_rng(0).bytes(500), "image.png"),
    "text-file": (lambda: b"this is not an image\n", "image.png"),
    "empty-file": (lambda: b"", "image.png"),
    "truncated-png": (lambda: _png_bytes()[:40], "image.png"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cli_predict_unreadable_images(tmp_path, model, case, json_flag):
    make, needle = PREDICT_CASES[case]
    if make is None:
        image = tmp_path / "missing.png"
    else:
        image = tmp_path / "image.png"
        image.write_bytes(make())
    assert_one_line_error(run_cli("predict", model, image, *json_flag), needle)


def test_cli_predict_image_is_a_directory(tmp_path, model):
    (tmp_path / "dir.png").mkdir()
    assert_one_line_error(run_cli("predict", model, tmp_path / "dir.png"), "dir.png")


def test_cli_predict_malformed_model(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    image = tmp_path / "digit.png"
    image.write_bytes(_png_bytes())
    assert_one_line_error(run_cli("predict", bad, image), "model.npz")
