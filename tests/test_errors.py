"""The bad-input battery: every user mistake gives exactly one line ``error: ...`` that
names the problem, a non-zero exit, and never a traceback, on the CLI (a real
``python -m convprop`` process) and in the Python API."""

import gzip
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from convprop import ConvpropError, Network, get_activation, parse_spec
from convprop.data.mnist import MNIST_FILES, encode_idx, read_idx
from convprop.interop.model import load_model, save_model

# ------------------------------------------------------------------ data directories
RNG = np.random.default_rng(0)
ARRAYS = {"train_images": RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8),
          "train_labels": RNG.integers(0, 10, 20).astype(np.uint8),
          "test_images": RNG.integers(0, 256, (10, 28, 28), dtype=np.uint8),
          "test_labels": RNG.integers(0, 10, 10).astype(np.uint8)}


def mnist_dir(root, gz=False, **replace):
    """The four files of a tiny valid data set in ``root``; ``replace[role]`` gives the
    raw (uncompressed) bytes of a file instead, or None to leave it out."""
    root.mkdir(parents=True, exist_ok=True)
    for role, name in MNIST_FILES.items():
        content = replace.get(role, encode_idx(ARRAYS[role]))
        if content is None:
            continue
        path = root / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(content) if gz else content)
    return root


def idx(array):
    return encode_idx(np.asarray(array, dtype=np.uint8))


GOOD_IMAGES = encode_idx(ARRAYS["train_images"])
GOOD_LABELS = encode_idx(ARRAYS["train_labels"])

# name -> (replace for mnist_dir, gz?, the text the message must contain)
DATA_CASES = {
    "truncated-images-raw": ({"train_images": GOOD_IMAGES[:-100]}, False, "truncated data"),
    "truncated-images-gz": ({"train_images": GOOD_IMAGES[:-100]}, True, "truncated data"),
    "truncated-header-raw": ({"train_labels": GOOD_LABELS[:6]}, False, "truncated header"),
    "wrong-magic-raw": ({"train_images": b"\x00\x00\x09\x03" + GOOD_IMAGES[4:]}, False,
                        "bad magic number 0x00000903"),
    "wrong-magic-gz": ({"train_labels": b"\x00\x00\x08\x03" + GOOD_LABELS[4:]}, True,
                       "bad magic number 0x00000803"),
    "not-idx-at-all": ({"test_images": b"\x89PNG\r\n\x1a\n" + bytes(100)}, False,
                       "not an IDX file"),
    "wrong-image-size": ({"train_images": idx(np.zeros((20, 20, 20)))}, False,
                         "image size 20x20, expected 28x28"),
    "trailing-bytes": ({"test_labels": encode_idx(ARRAYS["test_labels"]) + b"xx"}, False,
                       "trailing bytes"),
    "count-mismatch-raw": ({"train_labels": idx(np.zeros(19))}, False,
                           "label count 19 does not match the image count 20"),
    "count-mismatch-gz": ({"test_labels": idx(np.zeros(11))}, True,
                          "label count 11 does not match the image count 10"),
    "label-out-of-range": ({"train_labels": idx([10] + [0] * 19)}, False,
                           "label 10 at index 0 is out of range 0..9"),
    "label-255-in-test-gz": ({"test_labels": idx([1] * 9 + [255])}, True,
                             "label 255 at index 9 is out of range"),
    "empty-file": ({"train_images": b""}, False, "empty file"),
    "empty-gz": ({"train_images": b""}, True, "empty decompressed data"),
    "zero-images": ({"train_images": idx(np.zeros((0, 28, 28))),
                     "train_labels": idx(np.zeros(0))}, False, "image count 0"),
    "missing-one-file": ({"test_labels": None}, False, "missing t10k-labels-idx1-ubyte"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_cli_bad_data_files(tmp_path, case):
    replace, gz, needle = DATA_CASES[case]
    d = mnist_dir(tmp_path / "data", gz=gz, **replace)
    proc = run_cli("train", "--data", d, "--iterations", 1, "--batch-size", 5,
                   "--out", tmp_path / "out")
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_cli_corrupt_gzip_stream(tmp_path):
    d = mnist_dir(tmp_path / "data", gz=True)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:10] + b"\xff" * 200)
    proc = run_cli("train", "--data", d, "--iterations", 1, "--batch-size", 5, "--out",
                   tmp_path / "out")
    assert_one_line_error(proc, "corrupt gzip data")


@pytest.mark.parametrize("what,needle", [
    ("missing", "no such directory"),
    ("empty", "no MNIST files in this directory"),
    ("a-file", "is a file, not a directory"),
    ("blank", "empty --data value"),
    ("mnist-not-cached", "full MNIST is not in the cache"),
])
def test_cli_bad_data_directories(tmp_path, what, needle):
    arg = {"missing": tmp_path / "nope", "empty": tmp_path, "a-file": tmp_path / "f",
           "blank": " ", "mnist-not-cached": "mnist"}[what]
    (tmp_path / "f").write_text("x")
    assert_one_line_error(run_cli("train", "--data", arg, "--iterations", 1), needle)


# ------------------------------------------------------------------ model files
@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    save_model(Network.from_spec("2c5-2s", seed=0, dtype="float64"), d / "model.npz")
    return d / "model.npz"


def rewrite(src, dst, meta=None, drop=(), arrays=None):
    """Copy a model file, changing its metadata or arrays."""
    with np.load(src, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files if k not in drop}
    if meta is not None:
        m = json.loads(str(content["__meta__"][()]))
        m.update(meta)
        content["__meta__"] = np.array(json.dumps(m))
    content.update(arrays or {})
    with open(dst, "wb") as fh:
        np.savez(fh, **content)


MODEL_CASES = {
    "missing": (lambda good, p: None, "does not exist"),
    "directory": (lambda good, p: p.mkdir(), "is a directory"),
    "random-bytes": (lambda good, p: p.write_bytes(os.urandom(300)), "not a convprop model"),
    "truncated": (lambda good, p: p.write_bytes(good.read_bytes()[:2000]),
                  "not a convprop model"),
    "bare-npy": (lambda good, p: np.save(open(p, "wb"), np.zeros(3)), "bare .npy"),
    "no-metadata": (lambda good, p: rewrite(good, p, drop=("__meta__",)),
                    "'__meta__'"),
    "metadata-not-json": (lambda good, p: rewrite(good, p, arrays={
        "__meta__": np.array("{not json")}), "metadata is not valid JSON"),
    "other-format": (lambda good, p: rewrite(good, p, meta={"format": "keras"}),
                     "format 'keras'"),
    "other-version": (lambda good, p: rewrite(good, p, meta={"version": 99}),
                      "version 99 is not supported"),
    "field-missing": (lambda good, p: (rewrite(good, p), _drop_meta_field(p, "spec")),
                      "lacks field 'spec'"),
    "bad-spec-inside": (lambda good, p: rewrite(good, p, meta={"spec": "2c5-7s"}),
                        "layer size must be integer"),
    "param-wrong-shape": (lambda good, p: rewrite(good, p, arrays={
        "param/out.bias": np.zeros(7)}), "parameter out.bias has shape (7,)"),
    "param-not-float": (lambda good, p: rewrite(good, p, arrays={
        "param/out.bias": np.zeros(10, dtype=np.int64)}), "dtype int64"),
    "param-missing": (lambda good, p: rewrite(good, p, drop=("param/conv1.bias",)),
                      "missing array 'param/conv1.bias'"),
    "pickled-object": (lambda good, p: rewrite(good, p, arrays={
        "param/out.bias": np.array([object()] * 10)}), "param/out.bias"),
}


def _drop_meta_field(p, field):
    with np.load(p, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    m = json.loads(str(content["__meta__"][()]))
    del m[field]
    content["__meta__"] = np.array(json.dumps(m))
    with open(p, "wb") as fh:
        np.savez(fh, **content)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_cli_evaluate_malformed_model_files(tmp_path, good_model, case):
    make, needle = MODEL_CASES[case]
    p = tmp_path / "model.npz"
    make(good_model, p)
    data = mnist_dir(tmp_path / "data")
    assert_one_line_error(run_cli("evaluate", p, "--data", data), needle)


def test_cli_evaluate_model_for_other_image_size(tmp_path):
    p = tmp_path / "model.npz"
    save_model(Network.from_spec("2c5-2s", input_shape=(12, 12), seed=0), p)
    proc = run_cli("evaluate", p, "--data", mnist_dir(tmp_path / "data"))
    assert_one_line_error(proc, "the model takes 12x12 images, the test set has 28x28")


# ------------------------------------------------------------------ options
OPTION_CASES = {
    "spec-bad-token": (["--spec", "6x5"], "bad layer '6x5'"),
    "spec-empty": (["--spec", ""], "non-empty string"),
    "spec-double-dash": (["--spec", "6c5--2s"], "bad layer ''"),
    "spec-size-not-integer": (["--spec", "6c5-5s"], "layer size must be integer"),
    "spec-kernel-too-large": (["--spec", "6c40"], "kernel 40x40"),
    "spec-zero-maps": (["--spec", "0c5"], "maps and kernel size must be >= 1"),
    "spec-huge-number": (["--spec", "1234567890c5"], "1234567890c5"),
    "activation-unknown": (["--activation", "swish"], "unknown activation 'swish'"),
    "activation-bad-number": (["--activation", "leaky-relu:abc"], "'abc' is not a number"),
    "activation-missing-param": (["--activation", "tanh-linear"], "needs a parameter"),
    "activation-nan-param": (["--activation", "tanh-linear:nan"], "must be finite"),
    "activation-extra-param": (["--activation", "relu:2"], "takes no parameter"),
    "lr-negative": (["--lr", "-1"], "'-1'"),
    "lr-zero": (["--lr", "0"], "'0'"),
    "lr-nan": (["--lr", "nan"], "'nan'"),
    "lr-inf": (["--lr", "inf"], "'inf'"),
    "lr-text": (["--lr", "fast"], "'fast'"),
    "batch-size-zero": (["--batch-size", "0"], "--batch-size"),
    "batch-larger-than-data": (["--batch-size", "21", "--data", "DATA"],
                               "batch size 21 is larger than the 20 training images"),
    "iterations-zero": (["--iterations", "0"], "--iterations"),
    "iterations-negative": (["--iterations", "-5"], "'-5'"),
    "epochs-zero": (["--epochs", "0"], "--epochs"),
    "epochs-and-iterations": (["--epochs", "1", "--iterations", "5"], "not allowed with"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "dtype-unsupported": (["--dtype", "float16"], "invalid choice: 'float16'"),
    "checkpoint-every-zero": (["--checkpoint-every", "0"], "--checkpoint-every"),
    "unknown-option": (["--learning-rate", "1"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_cli_bad_training_options(tmp_path, case):
    args, needle = OPTION_CASES[case]
    data = mnist_dir(tmp_path / "data")
    args = [str(data) if a == "DATA" else a for a in args]
    if "--data" not in args:
        args += ["--data", str(data)]
    proc = run_cli("train", *args, "--out", tmp_path / "out")
    assert_one_line_error(proc, needle)
    assert proc.returncode == 2


# ------------------------------------------------------------------ output folders
def test_cli_output_folder_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = run_cli("train", "--data", mnist_dir(tmp_path / "d"), "--out", tmp_path / "f")
    assert_one_line_error(proc, "exists and is not a directory")


def test_cli_output_folder_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("x")  # a folder below a regular file: fails even for root
    proc = run_cli("train", "--data", mnist_dir(tmp_path / "d"), "--out", tmp_path / "f" / "run")
    assert_one_line_error(proc, "cannot create output directory")


def test_cli_output_folder_not_writable(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through chmod; a result file that is a folder fails
        (out / "metrics.csv").mkdir()
        needle = "metrics.csv': it is a directory"
    else:
        out.chmod(0o500)
        needle = "is not writable"
    try:
        proc = run_cli("train", "--data", mnist_dir(tmp_path / "d"), "--iterations", 2,
                       "--batch-size", 5, "--out", out)
    finally:
        out.chmod(0o700)
    assert_one_line_error(proc, needle)


def test_cli_result_file_is_a_folder(tmp_path):
    out = tmp_path / "run"
    (out / "summary.json").mkdir(parents=True)
    proc = run_cli("train", "--data", mnist_dir(tmp_path / "d"), "--iterations", 2,
                   "--batch-size", 5, "--out", out)
    assert_one_line_error(proc, "summary.json': it is a directory")


# ------------------------------------------------------------------ resume
def test_cli_resume_missing_folder(tmp_path):
    assert_one_line_error(run_cli("train", "--resume", tmp_path / "nope"),
                          "run folder")
    assert not (tmp_path / "nope").exists()


def test_cli_resume_finished_run(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", mnist_dir(tmp_path / "d"), "--iterations", 2,
                   "--batch-size", 5, "--out", out, "--checkpoint-every", 1)
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(run_cli("train", "--resume", out), "no checkpoint.npz")


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:500]), "not a convprop checkpoint"),
    (lambda p: p.write_bytes(b"\x00" * 64), "not a convprop checkpoint"),
    (lambda p: rewrite(p, p, meta={"version": 7}), "checkpoint version 7"),
    (lambda p: rewrite(p, p, meta={"format": "convprop-model"}), "format 'convprop-model'"),
    (lambda p: rewrite(p, p, arrays={"losses": np.zeros(5)}), "losses is float64(5,)"),
    (lambda p: rewrite(p, p, arrays={"perm": np.zeros(20, dtype=np.int64)}),
     "not a permutation"),
    (lambda p: rewrite(p, p, meta={"pos": 999}), "position 999"),
    (lambda p: rewrite(p, p, meta={"every": 0}), "checkpoint interval 0"),
    (lambda p: rewrite(p, p, meta={"iteration": 11}), "iteration 11 is out of range"),
    (lambda p: rewrite(p, p, meta={"config": {"lr": -1}}), "stored config is not usable"),
    (lambda p: rewrite(p, p, drop=("param/out.bias",)), "missing array 'param/out.bias'"),
    (lambda p: rewrite(p, p, meta={"rng": {"bit_generator": "MT19937"}}),
     "RNG state is not usable"),
], ids=["truncated", "zeros", "version", "format", "losses", "perm", "pos", "every",
        "iteration", "config", "param", "rng"])
def test_cli_resume_corrupt_checkpoint(tmp_path, damage, needle):
    from convprop.data.mnist import load_mnist_dir
    from convprop.training.checkpoint import checkpoint_path, save_checkpoint
    from convprop.training.config import TrainConfig
    from convprop.training.trainer import Trainer

    d = mnist_dir(tmp_path / "d")
    data = load_mnist_dir(d)
    cfg = TrainConfig(spec="2c5-2s", iterations=10, batch_size=5, data=str(d)).validate()
    t = Trainer(Network.from_spec("2c5-2s", dtype="float32"), data.train_x, data.train_y, cfg)
    for _ in range(3):
        t.step()
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(t, checkpoint_path(out), str(d))
    damage(checkpoint_path(out))
    assert_one_line_error(run_cli("train", "--resume", out), needle)


def test_cli_resume_with_conflicting_option(tmp_path):
    from convprop.data.mnist import load_mnist_dir
    from convprop.training.checkpoint import checkpoint_path, save_checkpoint
    from convprop.training.config import TrainConfig
    from convprop.training.trainer import Trainer

    d = mnist_dir(tmp_path / "d")
    data = load_mnist_dir(d)
    cfg = TrainConfig(spec="2c5-2s", iterations=10, batch_size=5, data=str(d), lr=0.5,
                      seed=4).validate()
    t = Trainer(Network.from_spec("2c5-2s", dtype="float32"), data.train_x, data.train_y, cfg)
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(t, checkpoint_path(out), str(d))
    assert_one_line_error(run_cli("train", "--resume", out, "--lr", "2"),
                          "--lr 2.0 conflicts with the stored 0.5")
    # typed on the command line, though equal to the default: still a conflict
    assert_one_line_error(run_cli("train", "--resume", out, "--lr", "1"),
                          "--lr 1.0 conflicts with the stored 0.5")
    assert_one_line_error(run_cli("train", "--resume", out, "--seed=0"),
                          "--seed 0 conflicts with the stored 4")
    assert_one_line_error(run_cli("train", "--resume", out, "--out", tmp_path / "x"),
                          "do not give --out")
    # the stored values themselves, and the run folder as --out, are fine
    proc = run_cli("train", "--resume", out, "--lr", "0.5", "--seed", "4", "--out", out,
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["iterations"] == 10


# ------------------------------------------------------------------ Python API
def _net():
    return Network.from_spec("2c5-2s", seed=0, dtype="float64")


X3 = np.zeros((3, 28, 28))
API_CASES = {
    "labels-strings": (lambda: _net().loss_and_grads(X3, np.array(["1", "2", "3"])), "'1'"),
    "labels-complex": (lambda: _net().loss_and_grads(X3, np.array([1 + 1j, 2, 3])), "1j"),
    "labels-nan": (lambda: _net().loss_and_grads(X3, np.array([np.nan, 1, 2])), "nan"),
    "labels-inf": (lambda: _net().loss_and_grads(X3, np.array([1, np.inf, 2])), "inf"),
    "labels-fraction": (lambda: _net().loss_and_grads(X3, [1.5, 1, 2]), "1.5"),
    "labels-out-of-range": (lambda: _net().loss_and_grads(X3, [0, 1, 10]), "0..9"),
    "labels-negative": (lambda: _net().loss_and_grads(X3, [0, -1, 1]), "0..9"),
    "labels-count": (lambda: _net().loss_and_grads(X3, [0, 1]), "2 labels for 3 inputs"),
    "onehot-nan": (lambda: _net().loss_and_grads(X3, np.full((3, 10), np.nan)), "non-finite"),
    "inputs-strings": (lambda: _net().forward(np.full((2, 28, 28), "a")), "real numbers"),
    "inputs-wrong-shape": (lambda: _net().forward(np.zeros((2, 27, 28))), "expected (N, 28, 28)"),
    "inputs-empty": (lambda: _net().forward(np.zeros((0, 28, 28))), "empty"),
    "dtype-none": (lambda: Network("2c5-2s", dtype=None), "got None"),
    "dtype-int": (lambda: Network("2c5-2s", dtype="int32"), "'int32'"),
    "spec-none": (lambda: parse_spec(None), "non-empty string"),
    "spec-int": (lambda: Network(65), "65"),
    "activation-unknown": (lambda: get_activation("softplus"), "softplus"),
    "activation-not-string": (lambda: get_activation(3), "got 3"),
    "n-outputs-zero": (lambda: Network("2c5-2s", n_outputs=0), "n_outputs"),
    "read-idx-random": (lambda: read_idx(_tmp_file(b"\x13\x37" * 50)), "bad magic number"),
    "load-model-text": (lambda: load_model(_tmp_file(b"hello")), "not a convprop model"),
    "lr-nan-config": (lambda: _config(lr=float("nan")).validate(), "learning rate"),
    "batch-zero-config": (lambda: _config(batch_size=0).validate(), "batch size"),
    "iterations-negative-config": (lambda: _config(iterations=-3).validate(), "iterations"),
    "unknown-config-key": (lambda: _config_from({"learning_rate": 1}), "learning_rate"),
    "checkpoint-every-zero": (lambda: _train(checkpoint_every=0), "checkpoint interval"),
    "batch-larger-than-data": (lambda: _train(batch_size=21), "larger than the 20"),
    "resume-missing": (lambda: _resume(), "no checkpoint.npz"),
}

_TMP: list[Path] = []


def _tmp_file(content):
    p = _TMP[0] / "f.bin"
    p.write_bytes(content)
    return p


def _config(**kw):
    from convprop.training.config import TrainConfig

    return TrainConfig(**kw)


def _config_from(d):
    from convprop.training.config import TrainConfig

    return TrainConfig.from_dict(d)


def _train(checkpoint_every=None, batch_size=5):
    from convprop.data.mnist import load_mnist_dir
    from convprop.training.jobs import run_training

    data = load_mnist_dir(mnist_dir(_TMP[0] / "data"))
    return run_training(_config(spec="2c5-2s", iterations=2, batch_size=batch_size),
                        _TMP[0] / "out", dataset=data, checkpoint_every=checkpoint_every)


def _resume():
    from convprop.training.jobs import resume_training

    return resume_training(_TMP[0] / "no-run-here")


@pytest.mark.parametrize("case", API_CASES)
def test_api_bad_input_raises_one_line_convprop_error(tmp_path, case):
    call, needle = API_CASES[case]
    _TMP[:] = [tmp_path]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning on the way counts as a failure
        with pytest.raises(ConvpropError) as err:
            call()
    message = str(err.value)
    assert "\n" not in message and needle in message, message
