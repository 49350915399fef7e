"""Atomic writes (every file convprop writes appears whole or not at all), and the one
way .npz archives are opened for reading.

Each writer writes a temporary file in the target's own folder, flushes and fsyncs
it, then ``os.replace``s it over the target: a crash leaves the old file or the new
one, never half of either.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from convprop.errors import ConvpropError, short_reason


def ensure_dir(path: str | os.PathLike, files: Sequence[str] = ()) -> Path:
    """Create the output folder (and parents) and check, by creating a file there, that it
    can be written (``os.access`` says yes to root even on a read-only mount); ``files``
    are result names that must not be folders, and whose temporary siblings left by a
    writer that was killed (``.NAME.*.tmp``) are removed.  A clear error if any of that
    fails, before any work is done."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConvpropError(f"output directory {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvpropError(f"cannot create output directory {str(p)!r}: "
                            f"{exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".convprop-probe.")
    except OSError as exc:
        raise ConvpropError(f"output directory {str(p)!r} is not writable: "
                            f"{exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    for name in files:
        if (p / name).is_dir():
            raise ConvpropError(f"cannot write {str(p / name)!r}: it is a directory")
        for stale in p.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    return p


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConvpropError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # as open() would, not mkstemp's 0600
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):  # disk full, target is a folder, ...
            raise ConvpropError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    """The process's umask: from /proc where it is shown (no other thread-safe getter),
    else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray],
              compress: bool = False) -> None:
    with atomic_open(path, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class NotAnArchive(Exception):
    """Raised by :func:`open_npz` when the file is not a readable .npz archive: ``exc`` is
    NumPy's or the OS's error, or None for a single .npy array; ``reason`` says it in
    words, for the caller's one-line error."""

    def __init__(self, exc: BaseException | None):
        super().__init__(exc)
        self.exc = exc
        self.reason = "a bare .npy array" if exc is None else short_reason(exc)


@contextmanager
def open_npz(path: str | os.PathLike) -> Iterator[Any]:
    """The .npz archive at ``path`` (``np.load`` without pickles), closed on leaving.  The
    file handle is ours, so it is closed even when NumPy fails half-way (``np.load``
    leaks its own handle when a zip directory is corrupt).  Failure to open or parse:
    :class:`NotAnArchive`, which each reader turns into its own one-line error."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, whatever happens
    except OSError as exc:
        raise NotAnArchive(exc) from None
    with fh:
        try:
            archive = np.load(fh, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise NotAnArchive(exc) from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise NotAnArchive(None)
        with archive:
            yield archive
