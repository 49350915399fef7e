"""IDX files (the MNIST format): reading with one-line errors, and writing uint8 arrays.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one 4-byte big-endian size per dimension, then the data, row-major.
convprop reads uint8 files, raw or gzip-compressed (detected by the magic bytes).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convprop.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_UINT8 = 0x08
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}
_CHUNK = 1 << 20



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
            raise DataError(f"{label}: corrupt gzip data ({exc_text(exc)})") from None
        raise DataError(f"{label}: cannot read file ({exc_text(exc)})") from None


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


def exc_text(exc: BaseException) -> str:
    """An I/O error's own words (``strerror``), else the first line of the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
