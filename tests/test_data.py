"""convprop.data.mnist: IDX reading and validation, the sample, the cache, load_data, fetch."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_MNIST, find_full_mnist
from convprop.data import mnist as D
from convprop.data.mnist import (
    MNIST_FILES,
    MNIST_SHA256,
    Dataset,
    cache_dir,
    encode_idx,
    fetch_mnist,
    images_to_float,
    load_data,
    load_mnist_dir,
    load_sample,
    mnist_in_cache,
    read_idx,
)
from convprop.errors import ConvpropError, DataError

REPO = Path(__file__).resolve().parents[1]
# Full MNIST where conftest.find_full_mnist looks; a test marked needs_mnist skips without
# it (fails under CONVPROP_REQUIRE_FULL_MNIST=1) through the mnist_dir fixture.
MNIST_DIR = find_full_mnist() or SHARED_MNIST
needs_mnist = pytest.mark.usefixtures("mnist_dir")
SAMPLE = files("convprop.data") / "sample_data"
FULL_SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,),
               "test_images": (10000, 28, 28), "test_labels": (10000,)}
SAMPLE_SHAPES = {"train_images": (10000, 28, 28), "train_labels": (10000,),
                 "test_images": (2000, 28, 28), "test_labels": (2000,)}


def sample_bytes(role: str) -> bytes:
    return (SAMPLE / f"{MNIST_FILES[role]}.gz").read_bytes()


def write_mnist_dir(d: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for role, a in arrays.items():
        raw = encode_idx(np.asarray(a, dtype=np.uint8))
        name = MNIST_FILES[role] + (".gz" if gz else "")
        (d / name).write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return d


def small_arrays(n: int = 5, m: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, n, dtype=np.uint8),
            "test_images": rng.integers(0, 256, (m, 28, 28), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, m, dtype=np.uint8)}


# --------------------------------------------------------------------------- read_idx


@needs_mnist
@pytest.mark.parametrize("role", list(MNIST_FILES))
def test_read_idx_full_mnist_gz_and_raw(role, tmp_path):
    gz_path = MNIST_DIR / f"{MNIST_FILES[role]}.gz"
    a = read_idx(gz_path)
    assert a.shape == FULL_SHAPES[role]
    assert a.dtype == np.uint8 and a.flags.c_contiguous
    assert hashlib.sha256(encode_idx(a)).hexdigest() == MNIST_SHA256[role]
    raw = gzip.decompress(gz_path.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == MNIST_SHA256[role]
    # the same content uncompressed, under a name that says .gz: detection is by magic bytes
    p = tmp_path / f"{MNIST_FILES[role]}.gz"
    p.write_bytes(raw)
    np.testing.assert_array_equal(read_idx(p), a)


@needs_mnist
def test_read_idx_full_mnist_values():
    y = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert sorted(Counter(y.tolist())) == list(range(10))
    x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", ndim=3)
    assert x.max() == 255 and x.min() == 0


def test_read_idx_roundtrip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "a.idx"
    raw.write_bytes(encode_idx(a))
    gz = tmp_path / "a_no_suffix"
    gz.write_bytes(gzip.compress(encode_idx(a)))
    for p in (raw, gz):
        b = read_idx(p)
        np.testing.assert_array_equal(b, a)
        assert b.dtype == np.uint8 and b.flags.c_contiguous and b.flags.writeable
    assert read_idx(str(raw), ndim=3).shape == (2, 3, 4)


def test_read_idx_empty_dimension_is_an_empty_array(tmp_path):
    p = tmp_path / "e.idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    assert read_idx(p).shape == (0, 28, 28)


def _hdr(*dims: int, type_code: int = 8, z0: int = 0, z1: int = 0) -> bytes:
    return bytes([z0, z1, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


MALFORMED = {
    # name: (file bytes, pieces the message must contain)
    "empty": (b"", ["empty"]),
    "short_magic": (b"\x00\x00\x08", ["truncated header", "3 bytes"]),
    "nonzero_first_byte": (_hdr(3, z0=1) + b"\x00" * 3, ["bad magic number 0x01000801"]),
    "nonzero_second_byte": (_hdr(3, z1=7) + b"\x00" * 3, ["bad magic number 0x00070801"]),
    "float_type": (_hdr(3, type_code=0x0D) + b"\x00" * 12,
                   ["bad magic number 0x00000D01", "0x0D", "not supported"]),
    "unknown_type": (_hdr(3, type_code=0x42) + b"\x00" * 3, ["0x00004201", "unknown type"]),
    "zero_dims": (bytes([0, 0, 8, 0]), ["0x00000800", "0 dimensions"]),
    "short_dims": (bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02" + b"\x00\x00", ["truncated header",
                                                                            "3 dimensions"]),
    "truncated_data": (_hdr(2, 3) + b"\x01" * 5, ["truncated data", "2x3 = 6 bytes", "has 5"]),
    "trailing_bytes": (_hdr(2, 3) + b"\x01" * 7, ["trailing bytes", "2x3 = 6 bytes"]),
    "huge_dims": (_hdr(2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\x00" * 10, ["truncated data"]),
    "text_file": (b"hello world\n", ["bad magic number 0x68656C6C", "not an IDX file"]),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_read_idx_malformed(case, compress, tmp_path):
    content, pieces = MALFORMED[case]
    p = tmp_path / f"bad-{case}-idx"
    p.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(DataError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert msg.startswith(str(p) + ": ")
    assert "\n" not in msg
    for piece in pieces:
        assert piece in msg
    if compress and case not in ("nonzero_first_byte", "nonzero_second_byte", "float_type",
                                 "unknown_type", "zero_dims", "text_file"):
        assert "decompressed data" in msg


def test_read_idx_expected_ndim(tmp_path):
    p = tmp_path / "labels"
    p.write_bytes(encode_idx(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"labels: bad magic number 0x00000801 \(expected "
                                        r"0x00000803 for uint8 images\): file declares 1 dim"):
        read_idx(p, ndim=3)
    assert read_idx(p, ndim=1).shape == (4,)


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.gz: no such file"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


@pytest.mark.parametrize("mangle", ["truncated", "garbage_body", "bad_crc", "trailing_garbage"])
def test_read_idx_corrupt_gzip(mangle, tmp_path):
    good = gzip.compress(encode_idx(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    bad = {"truncated": good[: len(good) // 2],
           "garbage_body": good[:10] + b"\xff\xfe" * 40,
           "bad_crc": good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:],
           "trailing_garbage": good + b"garbage!"}[mangle]
    p = tmp_path / "x.gz"
    p.write_bytes(bad)
    with pytest.raises(DataError, match=r"x\.gz: corrupt gzip data"):
        read_idx(p)


def test_data_error_is_a_convprop_error():
    assert issubclass(DataError, ConvpropError)


_VALID_SMALL = encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


def _read_or_data_error(p: Path, content: bytes) -> None:
    p.write_bytes(content)
    try:
        a = read_idx(p)
    except DataError as exc:
        assert str(exc).startswith(str(p)) and "\n" not in str(exc)
    else:
        assert isinstance(a, np.ndarray) and a.dtype == np.uint8
        # a successful read consumed exactly the declared bytes
        assert a.size == len(gzip.decompress(content) if content[:2] == b"\x1f\x8b"
                             else content) - 4 - 4 * a.ndim


_FUZZ = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path, content):
    _read_or_data_error(tmp_path / "fuzz", content)


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_after_gzip_magic(tmp_path, content):
    _read_or_data_error(tmp_path / "fuzz", b"\x1f\x8b" + content)


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_gzipped_random_bytes(tmp_path, content):
    _read_or_data_error(tmp_path / "fuzz", gzip.compress(content))


def _mutations(base: bytes):
    return st.one_of(
        # overwrite bytes
        st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=6).map(
            lambda edits: _apply(base, edits)),
        # truncate
        st.integers(0, len(base)).map(lambda n: base[:n]),
        # append
        st.binary(min_size=1, max_size=20).map(lambda extra: base + extra),
    )


def _apply(base: bytes, edits) -> bytes:
    b = bytearray(base)
    for i, v in edits:
        b[i] = v
    return bytes(b)


@_FUZZ
@given(_mutations(_VALID_SMALL))
def test_fuzz_mutated_valid_idx(tmp_path, content):
    _read_or_data_error(tmp_path / "fuzz", content)


@_FUZZ
@given(_mutations(_VALID_SMALL), st.booleans())
def test_fuzz_mutated_then_gzipped_idx(tmp_path, content, _):
    _read_or_data_error(tmp_path / "fuzz", gzip.compress(content))


@_FUZZ
@given(_mutations(gzip.compress(_VALID_SMALL, mtime=0)))
def test_fuzz_mutated_gzip_of_valid_idx(tmp_path, content):
    _read_or_data_error(tmp_path / "fuzz", content)


# --------------------------------------------------------------------------- directories


def test_load_mnist_dir_small_raw_and_gz(tmp_path):
    arrays = small_arrays()
    for gz in (True, False):
        d = write_mnist_dir(tmp_path / str(gz), arrays, gz=gz)
        ds = load_mnist_dir(d)
        assert isinstance(ds, Dataset)
        np.testing.assert_array_equal(ds.train_x, arrays["train_images"])
        np.testing.assert_array_equal(ds.test_y, arrays["test_labels"])
        assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
        assert ds.train_x.dtype == np.uint8 and ds.train_x.flags.c_contiguous
        assert ds.name == str(d)
        assert "5 train / 3 test" in ds.description and "\n" not in ds.description


def test_load_mnist_dir_mixed_and_gz_preferred(tmp_path):
    arrays = small_arrays()
    d = write_mnist_dir(tmp_path, arrays, gz=True)
    # a raw twin with other content: the verified .gz (what fetch writes) wins
    (d / MNIST_FILES["train_labels"]).write_bytes(encode_idx(np.full(5, 9, np.uint8)))
    np.testing.assert_array_equal(load_mnist_dir(d).train_y, arrays["train_labels"])
    (d / (MNIST_FILES["train_labels"] + ".gz")).unlink()
    assert load_mnist_dir(d).train_y.tolist() == [9] * 5


def test_load_mnist_dir_not_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such directory"):
        load_mnist_dir(tmp_path / "nowhere")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match=r"file\.txt: is a file, not a directory"):
        load_mnist_dir(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no MNIST files in this directory"):
        load_mnist_dir(tmp_path / "empty")


def test_load_mnist_dir_missing_one(tmp_path):
    d = write_mnist_dir(tmp_path, small_arrays())
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r": missing t10k-labels-idx1-ubyte\[\.gz\]$"):
        load_mnist_dir(d)


def test_load_mnist_dir_count_mismatch(tmp_path):
    arrays = small_arrays()
    arrays["train_labels"] = arrays["train_labels"][:4]
    d = write_mnist_dir(tmp_path, arrays)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: label count 4 does not "
                                        r"match the image count 5 of train-images"):
        load_mnist_dir(d)


def test_load_mnist_dir_label_out_of_range(tmp_path):
    arrays = small_arrays()
    arrays["test_labels"] = np.array([1, 12, 10], np.uint8)
    d = write_mnist_dir(tmp_path, arrays)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: label 12 at index 1 is "
                                        r"out of range 0\.\.9 \(2 such labels\)"):
        load_mnist_dir(d)


def test_load_mnist_dir_wrong_image_size(tmp_path):
    arrays = small_arrays()
    arrays["test_images"] = np.zeros((3, 32, 32), np.uint8)
    d = write_mnist_dir(tmp_path, arrays)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: image size 32x32, "
                                        r"expected 28x28"):
        load_mnist_dir(d)


def test_load_mnist_dir_images_with_wrong_ndim(tmp_path):
    arrays = small_arrays()
    arrays["train_images"] = np.zeros((5, 784), np.uint8)
    d = write_mnist_dir(tmp_path, arrays)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: bad magic number "
                                        r"0x00000802 \(expected 0x00000803 for uint8 images\)"):
        load_mnist_dir(d)


def test_load_mnist_dir_no_images(tmp_path):
    arrays = small_arrays()
    arrays["train_images"] = np.zeros((0, 28, 28), np.uint8)
    arrays["train_labels"] = np.zeros(0, np.uint8)
    d = write_mnist_dir(tmp_path, arrays)
    with pytest.raises(DataError, match="image count 0"):
        load_mnist_dir(d)


def test_load_mnist_dir_corrupt_file_named(tmp_path):
    d = write_mnist_dir(tmp_path, small_arrays())
    p = d / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: "):
        load_mnist_dir(d)


@needs_mnist
def test_load_mnist_dir_full():
    ds = load_mnist_dir(MNIST_DIR)
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert ds.train_y.dtype == np.int64 and ds.train_y.max() == 9
    assert "60000 train / 10000 test" in ds.description


# --------------------------------------------------------------------------- the sample


def test_sample_shapes_and_description():
    ds = load_sample()
    assert ds.name == "sample"
    assert ds.description == "MNIST sample shipped with convprop (10000 train / 2000 test)"
    assert ds.train_x.shape == (10000, 28, 28) and ds.test_x.shape == (2000, 28, 28)
    assert ds.train_x.dtype == np.uint8 and ds.train_x.flags.c_contiguous
    assert ds.train_y.shape == (10000,) and ds.train_y.dtype == np.int64
    assert ds.test_y.shape == (2000,) and ds.test_y.dtype == np.int64
    assert set(np.unique(ds.train_y).tolist()) == set(range(10))
    assert ds.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_sample_files_small_gzip_mtime_zero():
    total = 0
    for role, name in MNIST_FILES.items():
        b = sample_bytes(role)
        total += len(b)
        assert b[:3] == b"\x1f\x8b\x08"
        assert b[3] == 0, "no file name (FNAME) in the gzip header"
        assert b[4:8] == b"\x00\x00\x00\x00", "mtime 0"
        assert read_idx_bytes_shape(b) == SAMPLE_SHAPES[role], name
    assert total <= 3_000_000


def read_idx_bytes_shape(gz: bytes) -> tuple[int, ...]:
    raw = gzip.decompress(gz)
    nd = raw[3]
    return tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd))


@needs_mnist
def test_sample_is_prefix_of_mnist_and_script_reproduces_it(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" /
                                                  "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    made = mod.sample_files(MNIST_DIR, 10000, 2000)
    full = load_mnist_dir(MNIST_DIR)
    sample = load_sample()
    np.testing.assert_array_equal(sample.train_x, full.train_x[:10000])
    np.testing.assert_array_equal(sample.train_y, full.train_y[:10000])
    np.testing.assert_array_equal(sample.test_x, full.test_x[:2000])
    np.testing.assert_array_equal(sample.test_y, full.test_y[:2000])
    for role in MNIST_FILES:
        # the content always matches; the compressed bytes do for the same zlib build
        assert gzip.decompress(made[role]) == gzip.decompress(sample_bytes(role))
        assert made[role][:10] == sample_bytes(role)[:10]


# --------------------------------------------------------------------------- cache / load_data


def test_cache_dir_env_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv("CONVPROP_DATA_DIR", "")
    assert cache_dir() == tmp_path / "x" / "convprop" / "mnist"
    monkeypatch.delenv("CONVPROP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "convprop" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "convprop" / "mnist"


def test_cache_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CONVPROP_DATA_DIR", "~/mnist-here")
    assert cache_dir() == tmp_path / "mnist-here"


@pytest.fixture
def empty_cache(monkeypatch, tmp_path) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(d))
    return d


def test_load_data_default_falls_back_to_sample(empty_cache):
    assert not mnist_in_cache()
    ds = load_data(None)
    assert ds.name == "sample" and len(ds.train_x) == 10000
    assert "sample" in ds.description and "convprop data fetch" in ds.description
    assert str(empty_cache) in ds.description and "\n" not in ds.description
    empty_cache.mkdir()
    (empty_cache / "train-images-idx3-ubyte.gz").write_bytes(sample_bytes("train_images"))
    assert not mnist_in_cache()  # incomplete: still the sample
    assert load_data().name == "sample"


def test_load_data_mnist_without_cache(empty_cache):
    with pytest.raises(DataError, match="convprop data fetch") as ei:
        load_data("mnist")
    assert str(empty_cache) in str(ei.value) and "--data" in str(ei.value)


def test_load_data_uses_complete_cache(empty_cache):
    empty_cache.mkdir()
    for role, name in MNIST_FILES.items():  # sample files standing in for full MNIST
        (empty_cache / f"{name}.gz").write_bytes(sample_bytes(role))
    assert mnist_in_cache()
    for source in (None, "mnist"):
        ds = load_data(source)
        assert ds.name == "mnist" and "cache" in ds.description
        assert str(empty_cache) in ds.description


@needs_mnist
def test_load_data_default_picks_full_mnist_in_cache(empty_cache):
    empty_cache.mkdir()
    for name in MNIST_FILES.values():
        (empty_cache / f"{name}.gz").symlink_to(MNIST_DIR / f"{name}.gz")
    ds = load_data(None)
    assert ds.name == "mnist" and ds.train_x.shape == (60000, 28, 28)
    assert ds.description.startswith("full MNIST") and "60000 train / 10000 test" in \
        ds.description


def test_load_data_sample_and_directory(empty_cache, tmp_path):
    assert load_data("sample").name == "sample"
    d = write_mnist_dir(tmp_path / "mine", small_arrays())
    ds = load_data(str(d))
    assert ds.name == str(d) and len(ds.train_x) == 5
    assert load_data(d).name == str(d)  # a Path works too
    with pytest.raises(DataError, match="smaple: no such directory"):
        load_data("smaple")
    with pytest.raises(DataError, match="empty --data"):
        load_data("")


def test_images_to_float():
    x = np.array([[0, 1, 128, 255]], np.uint8)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for dt in (np.float32, np.float64):  # exactly x / 255 in dtype, for every pixel value
        np.testing.assert_array_equal(images_to_float(every, dt),
                                      np.array([v / 255 for v in range(256)], dt).reshape(16, 16))
    for dt in (np.float32, np.float64, "float32"):
        f = images_to_float(x, dt)
        assert f.dtype == np.dtype(dt) and f.shape == x.shape and f.flags.c_contiguous
        np.testing.assert_array_equal(f, (x.astype(dt) / np.dtype(dt).type(255)))
        assert f[0, 0] == 0 and f[0, 3] == 1
    np.testing.assert_allclose(images_to_float(x, np.float64)[0, 2], 128 / 255, rtol=0)
    assert x[0, 3] == 255  # input unchanged
    with pytest.raises(ValueError, match="floating"):
        images_to_float(x, np.int32)


# --------------------------------------------------------------------------- fetch_mnist


class _Server:
    """A loopback HTTP server with routes for every way a mirror can fail."""

    def __init__(self, files_by_name: dict[str, bytes]):
        self.files = files_by_name
        self.requests: list[str] = []
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._corrupt: dict[str, bytes] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                with server.lock:
                    server.requests.append(self.path)
                    server.seen[self.path] += 1
                    count = server.seen[self.path]
                route, _, name = self.path.strip("/").partition("/")
                body = server.files.get(name)
                if route == "missing" or body is None:
                    return self._send(404, b"not found")
                if route == "flaky" and count == 1:
                    return self._send(500, b"try again")
                if route == "corrupt":
                    body = server.corrupt(name)
                if route == "html":
                    body = b"<html>login</html>"
                if route == "short":  # promises more than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                return self._send(200, body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def corrupt(self, name: str) -> bytes:
        """The file with its last content byte changed (a valid gzip, wrong sha256)."""
        with self.lock:
            if name not in self._corrupt:
                raw = gzip.decompress(self.files[name])
                self._corrupt[name] = gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1]), 1, mtime=0)
            return self._corrupt[name]

    def url(self, route: str) -> str:
        return f"{self.base}/{route}/"


@contextmanager
def serve(files_by_name: dict[str, bytes]) -> Iterator[_Server]:
    s = _Server(files_by_name)
    t = threading.Thread(target=s.httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        t.join()


def dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def sample_mirror(monkeypatch):
    """The sample's four files served as if they were MNIST (the sha table patched)."""
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 0.0)
    shas = {role: hashlib.sha256(gzip.decompress(sample_bytes(role))).hexdigest()
            for role in MNIST_FILES}
    monkeypatch.setattr(D, "MNIST_SHA256", shas)
    with serve({f"{MNIST_FILES[r]}.gz": sample_bytes(r) for r in MNIST_FILES}) as s:
        yield s


def dir_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


GZ_NAMES = sorted(f"{n}.gz" for n in MNIST_FILES.values())


def test_fetch_skips_bad_mirrors_then_uses_good_one(sample_mirror, tmp_path, capsys):
    dest = tmp_path / "dl"
    got = fetch_mnist(dest, mirrors=[dead_url(), sample_mirror.url("missing"),
                                     sample_mirror.url("good")], retries=2, timeout=5,
                      progress=True)
    assert got == dest.absolute()
    assert dir_names(dest) == GZ_NAMES
    for role, name in MNIST_FILES.items():
        assert (dest / f"{name}.gz").read_bytes() == sample_bytes(role)
    assert len(load_mnist_dir(dest).train_x) == 10000
    # 404 is permanent: one request per file, no retries of it
    assert sum(p.startswith("/missing/") for p in sample_mirror.requests) == 4
    assert sum(p.startswith("/good/") for p in sample_mirror.requests) == 4
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "sha256 verified" in err


def test_fetch_retries_server_errors(sample_mirror, tmp_path):
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("flaky")], retries=2, timeout=5)
    assert dir_names(tmp_path) == GZ_NAMES
    assert all(n == 2 for n in sample_mirror.seen.values()) and len(sample_mirror.seen) == 4


def test_fetch_retries_exhausted_then_next_mirror(sample_mirror, tmp_path):
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("flaky"), sample_mirror.url("good")],
                retries=1, timeout=5)
    assert dir_names(tmp_path) == GZ_NAMES
    assert sum(p.startswith("/flaky/") for p in sample_mirror.requests) == 4
    assert sum(p.startswith("/good/") for p in sample_mirror.requests) == 4


def test_fetch_short_body_is_retried(sample_mirror, tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: download failed") as ei:
        fetch_mnist(tmp_path, mirrors=[sample_mirror.url("short")], retries=3, timeout=5)
    assert re.search(r"connection closed after \d+ of \d+ bytes", str(ei.value))
    assert sample_mirror.seen["/short/train-images-idx3-ubyte.gz"] == 3
    assert dir_names(tmp_path) == []


def test_fetch_rejects_corrupt_mirror_and_leaves_nothing(sample_mirror, tmp_path):
    with pytest.raises(DataError) as ei:
        fetch_mnist(tmp_path, mirrors=[sample_mirror.url("corrupt")], retries=3, timeout=5)
    msg = str(ei.value)
    assert msg.startswith("train-images-idx3-ubyte.gz: download failed from 1 mirror(s)")
    assert "sha256" in msg and "/corrupt/train-images-idx3-ubyte.gz" in msg
    assert "\n" not in msg
    assert dir_names(tmp_path) == []  # no partial, no corrupt file
    assert sample_mirror.seen["/corrupt/train-images-idx3-ubyte.gz"] == 1  # not retried


def test_fetch_corrupt_then_good(sample_mirror, tmp_path):
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("corrupt"), sample_mirror.url("html"),
                                   sample_mirror.url("good")], retries=2, timeout=5)
    assert dir_names(tmp_path) == GZ_NAMES
    assert len(load_mnist_dir(tmp_path).test_x) == 2000


def test_fetch_total_failure_names_file_and_last_error(sample_mirror, tmp_path):
    dead = dead_url()
    with pytest.raises(DataError) as ei:
        fetch_mnist(tmp_path / "new", mirrors=[sample_mirror.url("missing"), dead],
                    retries=2, timeout=5)
    msg = str(ei.value)
    assert msg.startswith("train-images-idx3-ubyte.gz: download failed from 2 mirror(s)")
    assert f"last error: {dead}train-images-idx3-ubyte.gz" in msg
    assert dir_names(tmp_path / "new") == []


def test_fetch_skips_valid_files_and_replaces_bad_ones(sample_mirror, tmp_path):
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("good")], timeout=5)
    n = len(sample_mirror.requests)
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("good")], timeout=5)
    assert len(sample_mirror.requests) == n  # nothing downloaded again
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("good")], timeout=5)
    assert sample_mirror.requests[n:] == ["/good/t10k-labels-idx1-ubyte.gz"]
    assert bad.read_bytes() == sample_bytes("test_labels")


def test_fetch_accepts_valid_uncompressed_file(sample_mirror, tmp_path):
    raw = gzip.decompress(sample_bytes("train_labels"))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(raw)
    fetch_mnist(tmp_path, mirrors=[sample_mirror.url("good")], timeout=5)
    assert "/good/train-labels-idx1-ubyte.gz" not in sample_mirror.requests
    assert len(sample_mirror.requests) == 3


def test_fetch_default_dest_is_cache(sample_mirror, empty_cache):
    assert fetch_mnist(mirrors=[sample_mirror.url("good")], timeout=5) == empty_cache
    assert mnist_in_cache() and load_data(None).name == "mnist"


def test_fetch_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="mirror list is empty"):
        fetch_mnist(tmp_path, mirrors=[])
    with pytest.raises(DataError, match="retries 0"):
        fetch_mnist(tmp_path, mirrors=["http://127.0.0.1:9/"], retries=0)
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(DataError, match="afile: is a file"):
        fetch_mnist(f, mirrors=["http://127.0.0.1:9/"])


def test_fetch_timeout_is_retried(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 0.0)
    with socket.socket() as sock:  # accepts connections, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(DataError, match=r"last error: .*timed out"):
            fetch_mnist(tmp_path, mirrors=[url], retries=2, timeout=0.2)
    assert dir_names(tmp_path) == []


def test_fetch_file_url_mirror(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setattr(D, "MNIST_SHA256", {
        r: hashlib.sha256(gzip.decompress(sample_bytes(r))).hexdigest() for r in MNIST_FILES})
    src = tmp_path / "src"
    src.mkdir()
    for role, name in MNIST_FILES.items():
        (src / f"{name}.gz").write_bytes(sample_bytes(role))
    dest = fetch_mnist(tmp_path / "dest", mirrors=[(tmp_path / "nothing").as_uri(),
                                                   src.as_uri()])
    assert dir_names(dest) == GZ_NAMES
    assert oct(os.stat(dest / GZ_NAMES[0]).st_mode & 0o777) == oct(0o644)


@needs_mnist
def test_fetch_full_mnist_from_loopback(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 0.0)
    with serve({p.name: p.read_bytes() for p in MNIST_DIR.glob("*.gz")}) as s:
        dest = fetch_mnist(tmp_path, mirrors=[s.url("missing"), s.url("flaky")], timeout=10)
    assert dir_names(dest) == GZ_NAMES
    for role, name in MNIST_FILES.items():
        raw = gzip.decompress((dest / f"{name}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == MNIST_SHA256[role]
    assert load_mnist_dir(dest).train_x.shape == (60000, 28, 28)
