"""Issue 14's data formats, each from a small real-format file made here: IDX of another
image size (MNIST names and EMNIST-style prefixes), CIFAR-10's binary batches, an image
folder and a .npz archive.  Each is read back exactly, makes a round trip through
``train``, ``evaluate`` and ``predict`` on the CLI, and each malformed variant gives one
line naming the file and the fault."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli
from convprop.data import default_spec_for, encode_idx, load_data
from convprop.errors import DataError
from convprop.interop.model import load_model

NAMES = ("circle", "cross", "square")


def patterns(n: int, size: int, seed: int, colour: bool = False):
    """uint8 images (n, size, size) or (n, size, size, 3) of 3 classes: a bright patch
    in the top-left, centre or bottom-right; labels 0..2."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    h = size // 3
    for i, c in enumerate(y):
        x[i, c * h : c * h + h, c * h : c * h + h] = 220
    if colour:
        tint = np.array([[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.3, 1.0]])
        x = (x[..., None] * tint[y][:, None, None, :]).astype(np.uint8)
    return x, y.astype(np.uint8)


# ------------------------------------------------------------------------- writers
def write_idx_dir(d, size=12, prefix=None, n=(60, 30)):
    d.mkdir(parents=True, exist_ok=True)
    tx, ty = patterns(n[0], size, 0)
    vx, vy = patterns(n[1], size, 1)
    if prefix is None:
        names = {"train-images-idx3-ubyte": tx, "train-labels-idx1-ubyte": ty,
                 "t10k-images-idx3-ubyte": vx, "t10k-labels-idx1-ubyte": vy}
    else:
        names = {f"{prefix}-train-images-idx3-ubyte": tx,
                 f"{prefix}-train-labels-idx1-ubyte": ty,
                 f"{prefix}-test-images-idx3-ubyte": vx, f"{prefix}-test-labels-idx1-ubyte": vy}
    for name, a in names.items():
        (d / f"{name}.gz").write_bytes(gzip.compress(encode_idx(a)))
    return d, (tx, ty, vx, vy)


def cifar_bytes(x, y):
    """CIFAR-10 records: 1 label byte, then the R, G and B planes."""
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.hstack([y[:, None], planes]).astype(np.uint8).tobytes()


def write_cifar_dir(d, meta=True):
    d.mkdir(parents=True, exist_ok=True)
    x1, y1 = patterns(30, 32, 0, colour=True)
    x2, y2 = patterns(30, 32, 2, colour=True)
    vx, vy = patterns(15, 32, 1, colour=True)
    (d / "data_batch_1.bin").write_bytes(cifar_bytes(x1, y1))
    (d / "data_batch_2.bin").write_bytes(cifar_bytes(x2, y2))
    (d / "test_batch.bin").write_bytes(cifar_bytes(vx, vy))
    if meta:
        (d / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    return d, (np.concatenate([x1, x2]), np.concatenate([y1, y2]), vx, vy)


def write_folder(d, colour=True, size=12):
    for split, n, seed in (("train", 45, 0), ("test", 15, 1)):
        x, y = patterns(n, size, seed, colour=colour)
        for i, (img, c) in enumerate(zip(x, y)):
            sub = d / split / NAMES[c]
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(sub / f"{i:03d}.png")
    return d


def write_npz(path, colour=True, floats=False, size=12):
    tx, ty = patterns(60, size, 0, colour=colour)
    vx, vy = patterns(30, size, 1, colour=colour)
    if floats:
        tx, vx = tx / 255.0, vx / 255.0
    np.savez(path, x_train=tx, y_train=ty.astype(np.int64), x_test=vx, y_test=vy[:, None])
    return path, (tx, ty, vx, vy)


# ------------------------------------------------------------------------- reading
def test_idx_of_another_size(tmp_path):
    d, (tx, ty, vx, vy) = write_idx_dir(tmp_path / "fashion", size=12)
    data = load_data(str(d))
    assert data.input_shape == (1, 12, 12) and data.n_classes == 10
    assert np.array_equal(data.train_x, tx) and np.array_equal(data.test_y, vy)


def test_idx_with_emnist_prefix_takes_classes_from_labels(tmp_path):
    d, (tx, *_rest) = write_idx_dir(tmp_path / "em", size=10, prefix="emnist-tiny")
    data = load_data(str(d))
    assert data.n_classes == 3 and data.train_x.shape == (60, 10, 10)
    write_idx_dir(tmp_path / "em", size=10, prefix="emnist-other")
    with pytest.raises(DataError, match=r"holds 2 IDX data sets \(emnist-other, emnist-tiny\)"):
        load_data(str(d))
    assert load_data(str(d / "emnist-tiny")).n_classes == 3  # DIR/PREFIX picks one


def test_cifar_binary(tmp_path):
    d, (tx, ty, vx, vy) = write_cifar_dir(tmp_path / "cifar-10-batches-bin")
    data = load_data(str(d))
    assert data.input_shape == (3, 32, 32) and data.class_names == NAMES
    assert np.array_equal(data.train_x, tx.transpose(0, 3, 1, 2))
    assert np.array_equal(data.train_y, ty) and np.array_equal(data.test_y, vy)
    assert load_data(str(tmp_path)).train_x.shape == (60, 3, 32, 32)  # the parent works too


def test_cifar_without_meta_has_the_cifar10_names(tmp_path):
    d, _ = write_cifar_dir(tmp_path / "c", meta=False)
    assert load_data(str(d)).class_names[:2] == ("airplane", "automobile")


def test_image_folder_colour_and_grey(tmp_path):
    data = load_data(str(write_folder(tmp_path / "rgb")))
    assert data.input_shape == (3, 12, 12) and data.class_names == NAMES
    x, y = patterns(45, 12, 0, colour=True)
    order = np.argsort(y, kind="stable")  # files are read class by class, in name order
    assert np.array_equal(data.train_x, x[order].transpose(0, 3, 1, 2))
    assert np.array_equal(data.train_y, y[order])
    grey = load_data(str(write_folder(tmp_path / "grey", colour=False)))
    assert grey.train_x.shape == (45, 12, 12) and grey.n_classes == 3


def test_npz_channels_last_uint8_and_grey_floats(tmp_path):
    p, (tx, ty, vx, vy) = write_npz(tmp_path / "d.npz")
    data = load_data(str(p))
    assert data.input_shape == (3, 12, 12) and data.n_classes == 3
    assert np.array_equal(data.train_x, tx.transpose(0, 3, 1, 2))
    assert np.array_equal(data.test_y, vy)
    p2, (tx2, *_r) = write_npz(tmp_path / "g.npz", colour=False, floats=True)
    grey = load_data(str(p2))
    assert grey.train_x.dtype == np.float64 and grey.input_shape == (1, 12, 12)
    np.testing.assert_array_equal(grey.train_x, tx2)


@pytest.mark.parametrize("shape,spec", [((28, 28), "6c5-2s-12c5-2s"),
                                        ((3, 32, 32), "6c5-2s-12c5-2s"),
                                        ((12, 12), "6c5-2s-12c3-2s"), ((8, 8), "6c5-2s"),
                                        ((2, 2), "100f")])
def test_default_spec_for_fits(shape, spec):
    from convprop.maths.network import Network

    assert default_spec_for(shape) == spec
    Network.from_spec(spec, input_shape=shape)  # builds: every size is whole


# --------------------------------------------------------------------- round trips
def _round_trip(tmp_path, data_arg, image, spec, expect_names):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", data_arg, "--spec", spec, "--iterations", "30",
                   "--batch-size", "10", "--lr", "0.5", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    net = load_model(out / "model.npz")
    assert net.n_outputs == 3 if expect_names else net.n_outputs >= 3
    ev = run_cli("evaluate", out / "model.npz", "--data", data_arg)
    assert ev.returncode == 0, ev.stderr
    assert "test error" in ev.stdout
    pr = run_cli("predict", out / "model.npz", image, "--json")
    assert pr.returncode == 0, pr.stderr
    result = json.loads(pr.stdout)[0]
    assert len(result["scores"]) == net.n_outputs
    if expect_names:
        assert net.class_names == list(NAMES)
        for name in NAMES:
            assert name in ev.stdout  # the confusion matrix is headed by names
        assert result["class"] in NAMES
        info = run_cli("info", out / "model.npz")
        assert "classes: 0=circle, 1=cross, 2=square" in info.stdout
    return net


def test_round_trip_idx(tmp_path):
    d, (_, _, vx, _) = write_idx_dir(tmp_path / "idx", size=16)
    Image.fromarray(vx[0]).save(tmp_path / "x.png")
    net = _round_trip(tmp_path, d, tmp_path / "x.png", "4c5-2s", expect_names=False)
    assert net.input_shape == (1, 16, 16) and net.class_names is None


def test_round_trip_cifar(tmp_path):
    d, (_, _, vx, _) = write_cifar_dir(tmp_path / "cifar")
    Image.fromarray(vx[0]).save(tmp_path / "x.png")
    net = _round_trip(tmp_path, d, tmp_path / "x.png", "4c5-2s-8f", expect_names=True)
    assert net.input_shape == (3, 32, 32)


def test_round_trip_image_folder(tmp_path):
    d = write_folder(tmp_path / "folder")
    net = _round_trip(tmp_path, d, d / "test" / "cross" / "001.png", "4c3-2s",
                      expect_names=True)
    assert net.input_shape == (3, 12, 12)


def test_round_trip_npz(tmp_path):
    p, (_, _, vx, _) = write_npz(tmp_path / "d.npz", colour=False)
    Image.fromarray(vx[0]).save(tmp_path / "x.png")
    net = _round_trip(tmp_path, p, tmp_path / "x.png", "20f", expect_names=False)
    assert net.input_shape == (1, 12, 12) and net.n_outputs == 3


# ----------------------------------------------------------------------- malformed
def _idx_cases(tmp_path):
    d, _ = write_idx_dir(tmp_path / "a", size=12)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(encode_idx(np.zeros((30, 10, 10), np.uint8))))
    e, _ = write_idx_dir(tmp_path / "b", size=12, prefix="emnist-x")
    (e / "emnist-x-test-labels-idx1-ubyte.gz").unlink()
    return {"size": (d, "t10k-images-idx3-ubyte.gz: image size 10x10, expected 12x12"),
            "missing": (e, "missing emnist-x-test-labels-idx1-ubyte[.gz]")}


def _cifar_cases(tmp_path):
    cases = {}
    d, _ = write_cifar_dir(tmp_path / "trunc")
    raw = (d / "data_batch_2.bin").read_bytes()
    (d / "data_batch_2.bin").write_bytes(raw[:-100])
    cases["truncated"] = (d, "data_batch_2.bin: size 92090 bytes is not a whole number of "
                             "3073-byte records")
    d, _ = write_cifar_dir(tmp_path / "label")
    raw = bytearray((d / "test_batch.bin").read_bytes())
    raw[3073 * 4] = 7
    (d / "test_batch.bin").write_bytes(bytes(raw))
    cases["label"] = (d, "test_batch.bin: label 7 at index 4 is out of range 0..2")
    d, _ = write_cifar_dir(tmp_path / "gap")
    (d / "data_batch_1.bin").unlink()
    cases["gap"] = (d, "missing data_batch_1.bin")
    d, _ = write_cifar_dir(tmp_path / "notest")
    (d / "test_batch.bin").unlink()
    cases["no-test"] = (d, "missing test_batch.bin")
    d, _ = write_cifar_dir(tmp_path / "empty")
    (d / "data_batch_1.bin").write_bytes(b"")
    cases["empty"] = (d, "data_batch_1.bin: empty file")
    d, _ = write_cifar_dir(tmp_path / "meta")
    (d / "batches.meta.txt").write_text("cat\ncat\n")
    cases["meta"] = (d, "batches.meta.txt: expected one distinct class name per line")
    return cases


def _folder_cases(tmp_path):
    cases = {}
    d = write_folder(tmp_path / "size")
    Image.new("RGB", (14, 12)).save(d / "test" / "cross" / "odd.png")
    cases["size"] = (d, "images differ in size")
    d = write_folder(tmp_path / "txt")
    (d / "train" / "circle" / "notes.txt").write_text("x")
    cases["not-image"] = (d, "notes.txt: not an image file")
    d = write_folder(tmp_path / "corrupt")
    (d / "train" / "square" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    cases["corrupt"] = (d, "bad.png: cannot read image")
    d = write_folder(tmp_path / "newclass")
    (d / "test" / "zebra").mkdir()
    Image.new("RGB", (12, 12)).save(d / "test" / "zebra" / "z.png")
    cases["test-class"] = (d, "class 'zebra' is not among the training classes")
    d = write_folder(tmp_path / "emptyclass")
    (d / "train" / "empty").mkdir()
    cases["empty-class"] = (d, "empty: class directory holds no images")
    d = write_folder(tmp_path / "stray")
    Image.new("RGB", (12, 12)).save(d / "train" / "loose.png")
    cases["stray"] = (d, "loose.png: a file directly in")
    return cases


def _npz_cases(tmp_path):
    good = dict(np.load(write_npz(tmp_path / "good.npz")[0]))

    def variant(name, **change):
        arrays = {**good, **change}
        arrays = {k: v for k, v in arrays.items() if v is not None}
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 not really")
    return {
        "missing": (variant("m.npz", x_test=None), "m.npz: missing array 'x_test'"),
        "dtype": (variant("t.npz", x_train=good["x_train"].astype(np.int64)),
                  "t.npz: x_train: dtype int64, expected uint8"),
        "range": (variant("r.npz", x_test=good["x_test"] * 2.0),
                  "r.npz: x_test: float pixels range 0..440"),
        "ndim": (variant("n.npz", x_train=good["x_train"].reshape(60, -1)),
                 "n.npz: x_train: shape (60, 432), expected images (n, H, W)"),
        "count": (variant("c.npz", y_train=good["y_train"][:-1]),
                  "c.npz: y_train: label count 59 does not match the image count 60"),
        "float-labels": (variant("f.npz", y_test=good["y_test"] * 1.0),
                         "f.npz: y_test: dtype float64, expected integer"),
        "mixed-sizes": (variant("s.npz", x_test=good["x_test"][:, :10, :10]),
                        "s.npz: x_test: image size 3x10x10, expected 3x12x12"),
        "nan": (variant("nan.npz", x_train=np.full((60, 12, 12), np.nan)),
                "nan.npz: x_train: holds non-finite values"),
        "not-zip": (tmp_path / "zip.npz", "zip.npz: not a NumPy .npz archive"),
        "absent": (tmp_path / "nope.npz", "nope.npz: no such file"),
    }


@pytest.mark.parametrize("maker", [_idx_cases, _cifar_cases, _folder_cases, _npz_cases],
                         ids=["idx", "cifar", "folder", "npz"])
def test_malformed_data_one_line_naming_file_and_fault(tmp_path, maker):
    for case, (path, needle) in maker(tmp_path).items():
        with pytest.raises(DataError) as err:
            load_data(str(path))
        message = str(err.value)
        assert needle in message, (case, message)
        assert "\n" not in message, case


@pytest.mark.parametrize("maker", [_idx_cases, _cifar_cases, _folder_cases, _npz_cases],
                         ids=["idx", "cifar", "folder", "npz"])
def test_cli_train_refuses_malformed_data_before_starting(tmp_path, maker):
    path, needle = next(iter(maker(tmp_path).values()))
    out = tmp_path / "out"
    proc = run_cli("train", "--data", path, "--spec", "2c3", "--iterations", "1",
                   "--out", out, "--no-progress")
    assert_one_line_error(proc, needle)
    assert not (out / "model.npz").exists()


def test_folder_size_error_names_a_file_of_each_size(tmp_path):
    d = write_folder(tmp_path / "f")
    Image.new("RGB", (14, 12)).save(d / "test" / "cross" / "odd.png")
    with pytest.raises(DataError) as err:
        load_data(str(d))
    msg = str(err.value)
    assert "000.png is 12x12" in msg and "odd.png is 14x12" in msg


def test_reproduce_on_another_data_set_picks_a_spec_that_fits(tmp_path, monkeypatch):
    """``reproduce --data DIR`` runs the paper's studies with a spec sized to the images
    (12x12 here: the second conv layer's kernel shrinks to 3x3)."""
    from convprop.cli import main
    from convprop.experiments import reproduce as rep

    d, _ = write_idx_dir(tmp_path / "idx", size=12)
    seen = []
    monkeypatch.setattr(rep, "reproduce", lambda o, out, *a, **k: seen.append(o) or out)
    assert main(["reproduce", "--data", str(d), "--seeds", "1", "--out",
                 str(tmp_path / "r")]) == 0
    assert seen[0].spec == default_spec_for((12, 12)) == "6c5-2s-12c3-2s"
    assert seen[0].data == str(d.resolve())
    runs = [r for s in rep.reproduce_sections(seen[0]) for r in s.plan()]
    assert runs and {r.spec for r in runs} == {"6c5-2s-12c3-2s"}
