"""MNIST: reading IDX files, the bundled sample, the download cache and ``convprop data fetch``.

Every fault in a data file or directory is raised as :class:`~convprop.errors.DataError`
with a one-line message that names the file, the field and the value.

>>> data = load_data("sample")                      # doctest: +SKIP
>>> data.train_x.shape, data.train_y.dtype          # doctest: +SKIP
((10000, 28, 28), dtype('int64'))
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convprop.errors import DataError

__all__ = [
    "DEFAULT_MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "Dataset",
    "cache_dir",
    "encode_idx",
    "fetch_mnist",
    "images_to_float",
    "load_data",
    "load_mnist_dir",
    "load_sample",
    "mnist_in_cache",
    "read_idx",
]

#: role -> standard MNIST file name (without ``.gz``).
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: role -> sha256 of the *uncompressed* file.
MNIST_SHA256: dict[str, str] = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public base URLs serving the four ``NAME.gz`` files, tried in this order.
DEFAULT_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

ENV_DATA_DIR = "CONVPROP_DATA_DIR"
SAMPLE_DIR = "sample_data"
IMAGE_SIZE = (28, 28)
N_CLASSES = 10

#: Seconds to wait before the 2nd try of a mirror; doubled before each further try.
RETRY_BACKOFF_S = 0.5

_GZIP_MAGIC = b"\x1f\x8b"
_UINT8 = 0x08
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}
_CHUNK = 1 << 20
_USER_AGENT = "convprop (MNIST fetch; https://pypi.org/project/convprop/)"


@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8, N x 28 x 28) and labels (int64, 0..9)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    name: str
    description: str


# --------------------------------------------------------------------------- IDX files


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX encoding (uncompressed) of a uint8 array with 1 to 255 dimensions."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"encode_idx writes uint8 arrays only, got {a.dtype}")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"encode_idx needs 1 to 255 dimensions, got {a.ndim}")
    header = bytes([0, 0, _UINT8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + np.ascontiguousarray(a).tobytes()


def _label(path: str | os.PathLike) -> str:
    return os.fspath(path)


def _expected_magic(ndim: int | None) -> str:
    if ndim is None:
        return "expected 0x000008NN: two zero bytes, type code 0x08 for uint8, NN dimensions"
    what = {3: "uint8 images", 1: "uint8 labels"}.get(ndim, f"a {ndim}-dimensional uint8 array")
    return f"expected 0x{_UINT8 << 8 | ndim:08X} for {what}"


@contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[tuple[BinaryIO, bool]]:
    """Open ``path`` for reading, decompressing if its first bytes are the gzip magic."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz, True
        else:
            yield raw, False


def _read_upto(f: BinaryIO, n: int) -> bytearray:
    """Read up to ``n`` bytes in chunks (never allocating more than what the file holds)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _check_path(path: Path, label: str) -> None:
    if not path.exists():
        raise DataError(f"{label}: no such file")
    if path.is_dir():
        raise DataError(f"{label}: is a directory, expected an IDX file")


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read a uint8 IDX file (raw, or gzip detected by its magic bytes) as a C-contiguous
    array; ``ndim``, if given, is the number of dimensions the file must have."""
    p = Path(path)
    label = _label(path)
    _check_path(p, label)
    try:
        with _open_maybe_gzip(p) as (f, compressed):
            return _parse_idx(f, label, ndim, compressed)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        # BadGzipFile is an OSError; EOFError: a gzip stream cut short.
        if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
            raise DataError(f"{label}: corrupt gzip data ({_exc_text(exc)})") from None
        raise DataError(f"{label}: cannot read file ({_exc_text(exc)})") from None


def _parse_idx(f: BinaryIO, label: str, ndim: int | None, compressed: bool) -> np.ndarray:
    kind = "decompressed data" if compressed else "file"
    magic = bytes(_read_upto(f, 4))
    if not magic:
        raise DataError(f"{label}: empty {kind}, expected an IDX header")
    if len(magic) < 4:
        raise DataError(f"{label}: truncated header: {kind} has {len(magic)} bytes, the IDX "
                        f"magic number needs 4")
    value = int.from_bytes(magic, "big")
    hint = _expected_magic(ndim)
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{label}: bad magic number 0x{value:08X} ({hint}); not an IDX file")
    if magic[2] != _UINT8:
        typename = _IDX_TYPES.get(magic[2])
        what = f"type code 0x{magic[2]:02X} ({typename}) is not supported" if typename \
            else f"unknown type code 0x{magic[2]:02X}"
        raise DataError(f"{label}: bad magic number 0x{value:08X} ({hint}): {what}")
    nd = magic[3]
    if nd == 0 or (ndim is not None and nd != ndim):
        raise DataError(f"{label}: bad magic number 0x{value:08X} ({hint}): file declares "
                        f"{nd} dimension{'s' if nd != 1 else ''}")
    dims_raw = bytes(_read_upto(f, 4 * nd))
    if len(dims_raw) < 4 * nd:
        raise DataError(f"{label}: truncated header: {nd} dimensions need {4 * nd} bytes of "
                        f"sizes after the magic number, {kind} has {len(dims_raw)}")
    shape = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(nd))
    size = 1
    for d in shape:
        size *= d
    shape_text = "x".join(str(d) for d in shape)
    data = _read_upto(f, size + 1)
    if len(data) < size:
        raise DataError(f"{label}: truncated data: header declares {shape_text} = {size} bytes "
                        f"after the header, {kind} has {len(data)}")
    if len(data) > size:
        raise DataError(f"{label}: trailing bytes: header declares {shape_text} = {size} bytes "
                        f"after the header, but the {kind} is longer")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- data sets


def _find(directory: Path, name: str) -> Path | None:
    """``NAME.gz`` if present (what ``convprop data fetch`` writes and verifies), else ``NAME``."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _load_four(paths: dict[str, Path], labels: dict[str, str]) -> tuple[np.ndarray, ...]:
    arrays: dict[str, np.ndarray] = {}
    for role, path in paths.items():
        arrays[role] = read_idx(path, ndim=3 if role.endswith("images") else 1)
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xl, yl = labels[f"{split}_images"], labels[f"{split}_labels"]
        if x.shape[1:] != IMAGE_SIZE:
            raise DataError(f"{xl}: image size {x.shape[1]}x{x.shape[2]}, expected 28x28")
        if x.shape[0] == 0:
            raise DataError(f"{xl}: image count 0, the file holds no images")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{yl}: label count {y.shape[0]} does not match the image count "
                            f"{x.shape[0]} of {Path(xl).name}")
        bad = np.flatnonzero(y >= N_CLASSES)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{yl}: label {int(y[i])} at index {i} is out of range 0..9"
                            + (f" ({bad.size} such labels)" if bad.size > 1 else ""))
        out += [x, y.astype(np.int64)]
    return tuple(out)


def load_mnist_dir(directory: str | os.PathLike) -> Dataset:
    """Load the four MNIST files (each as ``NAME`` or ``NAME.gz``) from a directory."""
    d = Path(directory).expanduser()
    label = _label(directory)
    if not d.exists():
        raise DataError(f"{label}: no such directory (expected a directory holding the four "
                        f"MNIST files, or --data sample / --data mnist)")
    if not d.is_dir():
        raise DataError(f"{label}: is a file, not a directory holding the four MNIST files")
    found = {role: _find(d, name) for role, name in MNIST_FILES.items()}
    missing = [f"{MNIST_FILES[r]}[.gz]" for r, p in found.items() if p is None]
    if len(missing) == len(MNIST_FILES):
        raise DataError(f"{label}: no MNIST files in this directory (expected "
                        f"{', '.join(missing)})")
    if missing:
        raise DataError(f"{label}: missing {', '.join(missing)}")
    paths = {r: p for r, p in found.items() if p is not None}
    tx, ty, vx, vy = _load_four(paths, {r: _label(p) for r, p in paths.items()})
    return Dataset(tx, ty, vx, vy, name=str(directory),
                   description=f"MNIST files in {d} ({len(tx)} train / {len(vx)} test)")


def load_sample() -> Dataset:
    """The MNIST sample shipped with convprop (first 10000 train / 2000 test images)."""
    root = files("convprop.data") / SAMPLE_DIR
    with ExitStack() as stack:
        paths = {role: stack.enter_context(as_file(root / f"{name}.gz"))
                 for role, name in MNIST_FILES.items()}
        tx, ty, vx, vy = _load_four(paths, {r: f"sample {p.name}" for r, p in paths.items()})
    return Dataset(tx, ty, vx, vy, name="sample",
                   description=f"MNIST sample shipped with convprop ({len(tx)} train / "
                               f"{len(vx)} test)")


def cache_dir() -> Path:
    """``$CONVPROP_DATA_DIR``, else ``$XDG_CACHE_HOME/convprop/mnist``, else
    ``~/.cache/convprop/mnist`` (the directory may not exist yet)."""
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "convprop" / "mnist"


def mnist_in_cache() -> bool:
    """Whether all four MNIST files are in :func:`cache_dir` (presence only, not checked)."""
    d = cache_dir()
    return d.is_dir() and all(_find(d, name) is not None for name in MNIST_FILES.values())


def load_data(source: str | os.PathLike | None = None) -> Dataset:
    """``None``: full MNIST from the cache if there, else the sample; ``"sample"``;
    ``"mnist"`` (the cache; an error if absent); anything else: a directory path."""
    if source is None:
        if mnist_in_cache():
            return _from_cache()
        s = load_sample()
        return Dataset(s.train_x, s.train_y, s.test_x, s.test_y, name="sample",
                       description=f"{s.description}; full MNIST is not in {cache_dir()}, "
                                   f"run `convprop data fetch` to get it")
    if isinstance(source, str):
        if source == "sample":
            return load_sample()
        if source == "mnist":
            if not mnist_in_cache():
                raise DataError(f"full MNIST is not in the cache {cache_dir()}: run `convprop "
                                f"data fetch` to download it, or point --data at a directory "
                                f"holding the four MNIST files")
            return _from_cache()
        if not source.strip():
            raise DataError("empty --data value: give 'sample', 'mnist' or a directory")
    return load_mnist_dir(source)


def _from_cache() -> Dataset:
    d = cache_dir()
    ds = load_mnist_dir(d)
    return Dataset(ds.train_x, ds.train_y, ds.test_x, ds.test_y, name="mnist",
                   description=f"full MNIST from the cache {d} ({len(ds.train_x)} train / "
                               f"{len(ds.test_x)} test)")


def images_to_float(x_uint8: np.ndarray, dtype: np.dtype | type | str) -> np.ndarray:
    """Pixels scaled to [0, 1]: ``x / 255`` computed in ``dtype`` (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"images_to_float needs a floating dtype, got {dt}")
    out = np.asarray(x_uint8).astype(dt, order="C", copy=True)
    out /= dt.type(255)
    return out


# --------------------------------------------------------------------------- download


class _Transient(Exception):
    """A failure worth retrying on the same mirror."""


class _Permanent(Exception):
    """A failure that makes us move on to the next mirror at once."""


def _content_sha256(path: Path) -> str | None:
    """sha256 of the (decompressed, if gzip) content, or None if it cannot be read."""
    h = hashlib.sha256()
    try:
        with _open_maybe_gzip(path) as (f, _):
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _download(url: str, out: BinaryIO, timeout: float) -> int:
    """Stream ``url`` into ``out``; classify failures as transient or permanent."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            n = 0
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                n += len(chunk)
    except urllib.error.HTTPError as exc:
        msg = f"HTTP {exc.code} {exc.reason}"
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Transient(msg) from None
        raise _Permanent(msg) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            raise _Permanent(_exc_text(reason)) from None
        text = _exc_text(reason) if isinstance(reason, BaseException) else str(reason)
        raise _Transient(text) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short reads
        raise _Transient(_exc_text(exc) or type(exc).__name__) from None
    except ValueError as exc:  # unknown URL type
        raise _Permanent(_exc_text(exc)) from None
    if length is not None and length.isdigit() and int(length) != n:
        raise _Transient(f"connection closed after {n} of {length} bytes")
    return n


def _mirror_url(base: str, filename: str) -> str:
    return base if base.endswith(filename) else base.rstrip("/") + "/" + filename


def fetch_mnist(dest: str | os.PathLike | None = None, mirrors: list[str] | None = None,
                retries: int = 3, timeout: float = 30.0, progress: bool = False) -> Path:
    """Download the four MNIST ``.gz`` files into ``dest`` (default :func:`cache_dir`),
    trying each mirror in turn with ``retries`` tries each, and keep a file only once its
    decompressed sha256 matches :data:`MNIST_SHA256`. Returns the directory."""
    d = (Path(dest) if dest is not None else cache_dir()).expanduser().absolute()
    mirror_list = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    if not mirror_list:
        raise DataError("fetch: the mirror list is empty")
    if retries < 1:
        raise DataError(f"fetch: retries {retries}, expected at least 1")
    if d.exists() and not d.is_dir():
        raise DataError(f"{d}: is a file, cannot download MNIST into it")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{d}: cannot create the directory ({_exc_text(exc)})") from None
    for role, name in MNIST_FILES.items():
        _fetch_one(d, role, name, mirror_list, retries, timeout, progress)
    return d


def _fetch_one(d: Path, role: str, name: str, mirrors: list[str], retries: int,
               timeout: float, progress: bool) -> None:
    want = MNIST_SHA256[role]
    gz, raw = d / f"{name}.gz", d / name
    if gz.is_file():
        if _content_sha256(gz) == want:
            _say(progress, f"{gz.name}: already present and verified")
            return
        _say(progress, f"{gz.name}: present but does not match its sha256; downloading again")
    elif raw.is_file() and _content_sha256(raw) == want:
        _say(progress, f"{raw.name}: already present and verified")
        return
    filename = f"{name}.gz"
    last = "no attempt made"
    for base in mirrors:
        url = _mirror_url(base, filename)
        for attempt in range(1, retries + 1):
            if attempt > 1:
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 2))
            _say(progress, f"{filename}: downloading {url}"
                           + (f" (try {attempt}/{retries})" if attempt > 1 else ""))
            try:
                n = _download_verified(url, d, filename, want, timeout, gz)
            except _Transient as exc:
                last = f"{url}: {exc}"
                _say(progress, f"{filename}: failed: {exc}")
                continue
            except _Permanent as exc:
                last = f"{url}: {exc}"
                _say(progress, f"{filename}: failed: {exc}; trying the next mirror")
                break
            size = f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
            _say(progress, f"{filename}: {size}, sha256 verified, saved in {d}")
            return
    raise DataError(f"{filename}: download failed from {len(mirrors)} mirror(s); last error: "
                    f"{last}")


def _download_verified(url: str, d: Path, filename: str, want: str, timeout: float,
                       target: Path) -> int:
    """Download into a temporary file in ``d``, check its sha256, then move it to ``target``."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=d, prefix=f".{filename}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"{d}: cannot write a file here ({_exc_text(exc)})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            n = _download(url, out, timeout)
            out.flush()
            os.fsync(out.fileno())
        with open(tmp, "rb") as f:
            if f.read(2) != _GZIP_MAGIC:
                raise _Permanent("the server did not send a gzip file")
        got = _content_sha256(tmp)
        if got is None:
            raise _Transient("corrupt gzip data")
        if got != want:
            raise _Permanent(f"sha256 of the decompressed content is {got}, expected {want}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return n
    finally:
        tmp.unlink(missing_ok=True)
