"""MNIST: IDX directories, the bundled sample, the download cache, ``convprop data fetch``,
and ``load_data``, which also dispatches to the other formats (``sources.py``).

Every fault in a data file or directory is raised as :class:`~convprop.errors.DataError`
with a one-line message that names the file, the field and the value.

>>> data = load_data("sample")                      # doctest: +SKIP
>>> data.train_x.shape, data.train_y.dtype          # doctest: +SKIP
((10000, 28, 28), dtype('int64'))
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convprop.data import sources
from convprop.data.base import Dataset, check_same_size, check_split, classes_from_labels
from convprop.data.idx import (
    _CHUNK,
    _GZIP_MAGIC,
    _label,
    _open_maybe_gzip,
    encode_idx,
    exc_text,
    read_idx,
)
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

_USER_AGENT = "convprop (MNIST fetch; https://pypi.org/project/convprop/)"


# --------------------------------------------------------------------------- data sets


def _find(directory: Path, name: str) -> Path | None:
    """``NAME.gz`` if present (what ``convprop data fetch`` writes and verifies), else ``NAME``."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _load_four(paths: dict[str, Path], labels: dict[str, str],
               n_classes: int | None = N_CLASSES) -> tuple[np.ndarray, ...]:
    """Train/test images and labels; images of any one size, labels in 0..n_classes-1
    (``None``: the classes come from the labels)."""
    arrays: dict[str, np.ndarray] = {}
    for role, path in paths.items():
        arrays[role] = read_idx(path, ndim=3 if role.endswith("images") else 1)
    for split in ("train", "test"):
        check_split(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                    labels[f"{split}_images"], labels[f"{split}_labels"], n_classes)
    check_same_size(arrays["train_images"], arrays["test_images"], labels["train_images"],
                    labels["test_images"], usual=IMAGE_SIZE)
    return tuple(arrays[f"{split}_{kind}"].astype(np.int64) if kind == "labels"
                 else arrays[f"{split}_{kind}"]
                 for split in ("train", "test") for kind in ("images", "labels"))


# EMNIST-style names: PREFIX-train-images-idx3-ubyte, PREFIX-test-labels-idx1-ubyte, ...
_PREFIXED = re.compile(r"^(?P<prefix>.+-)train-images-idx3-ubyte(?:\.gz)?$")


def _prefixed_files(directory: Path, prefix: str) -> dict[str, Path | None]:
    return {f"{split}_{kind}": _find(directory, f"{prefix}{split}-{kind}-idx{nd}-ubyte")
            for split in ("train", "test") for kind, nd in (("images", 3), ("labels", 1))}


def load_mnist_dir(directory: str | os.PathLike) -> Dataset:
    """Load MNIST-format IDX files of any image size from a directory: the four MNIST
    names (each as ``NAME`` or ``NAME.gz``; MNIST, Fashion-MNIST and KMNIST ship so; 10
    classes), or EMNIST-style ``PREFIX-train-images-idx3-ubyte`` ... (the classes come
    from the labels; ``DIR/PREFIX`` picks one set where a directory holds several)."""
    d = Path(directory).expanduser()
    label = _label(directory)
    prefix = None
    if not d.exists() and d.parent.is_dir() and d.name and \
            _find(d.parent, f"{d.name}-train-images-idx3-ubyte"):
        d, prefix = d.parent, f"{d.name}-"
    if not d.exists():
        raise DataError(f"{label}: no such directory (expected a directory of MNIST-"
                        f"format IDX files, a CIFAR-10 binary directory, an image folder, "
                        f"a .npz file, or --data sample / --data mnist)")
    if not d.is_dir():
        raise DataError(f"{label}: is a file, not a directory holding the four MNIST files "
                        f"(nor a .npz file)")
    found = {role: _find(d, name) for role, name in MNIST_FILES.items()}
    missing = [f"{MNIST_FILES[r]}[.gz]" for r, p in found.items() if p is None]
    n_classes: int | None = N_CLASSES
    if prefix is None and len(missing) == len(MNIST_FILES):
        prefixes = sorted({m["prefix"] for f in os.listdir(d) if (m := _PREFIXED.match(f))})
        if len(prefixes) > 1:
            raise DataError(f"{label}: holds {len(prefixes)} IDX data sets ("
                            f"{', '.join(p[:-1] for p in prefixes)}): pick one with --data "
                            f"{Path(label) / prefixes[0][:-1]}")
        prefix = prefixes[0] if prefixes else None
    if prefix is not None:
        found, n_classes = _prefixed_files(d, prefix), None
        missing = [f"{prefix}{r.replace('_', '-')}-idx{3 if 'images' in r else 1}-ubyte[.gz]"
                   for r, p in found.items() if p is None]
    elif len(missing) == len(MNIST_FILES):
        raise DataError(f"{label}: no MNIST files in this directory (expected "
                        f"{', '.join(missing)})")
    if missing:
        raise DataError(f"{label}: missing {', '.join(missing)}")
    paths = {r: p for r, p in found.items() if p is not None}
    tx, ty, vx, vy = _load_four(paths, {r: _label(p) for r, p in paths.items()}, n_classes)
    k = N_CLASSES if n_classes else classes_from_labels(ty, vy)
    what = "MNIST files" if prefix is None else f"IDX files {prefix}*"
    return Dataset(tx, ty, vx, vy, name=str(directory),
                   description=f"{what} in {d} ({len(tx)} train / {len(vx)} test, "
                               f"{tx.shape[1]}x{tx.shape[2]}, {k} classes)", n_classes=k)


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
    ``"mnist"`` (the cache; an error if absent); anything else a path, by what it is:
    a ``.npz`` file (:mod:`convprop.data.npz`), a CIFAR-10 binary directory
    (:mod:`convprop.data.cifar`), an image folder with ``train/`` and ``test/``
    (:mod:`convprop.data.folder`), else a directory of MNIST-format IDX files."""
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
            raise DataError("empty --data value: give 'sample', 'mnist', a directory or a "
                            ".npz file")
    other = sources.load_other(source)
    return other if other is not None else load_mnist_dir(source)


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
            raise _Permanent(exc_text(reason)) from None
        text = exc_text(reason) if isinstance(reason, BaseException) else str(reason)
        raise _Transient(text) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short reads
        raise _Transient(exc_text(exc) or type(exc).__name__) from None
    except ValueError as exc:  # unknown URL type
        raise _Permanent(exc_text(exc)) from None
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
        raise DataError(f"{d}: cannot create the directory ({exc_text(exc)})") from None
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
        raise DataError(f"{d}: cannot write a file here ({exc_text(exc)})") from None
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
