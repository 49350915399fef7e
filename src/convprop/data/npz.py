"""A NumPy archive ``FILE.npz`` as Keras' ``datasets`` give them: ``x_train``,
``y_train``, ``x_test``, ``y_test``.  Images (n, H, W) grey or (n, H, W, C)
channels-last (C = 1, 3 or 4; stored as (n, C, H, W), C = 1 as grey), uint8 0..255 or
floats in [0, 1]; labels integers (n,) or (n, 1).  An optional ``class_names`` (K,)
string array names the classes.  NumPy's ``savez`` writes such a file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from convprop.data.base import Dataset, check_same_size, check_split, classes_from_labels
from convprop.errors import DataError, short_reason
from convprop.fileio import NotAnArchive, open_npz

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(a: np.ndarray, label: str) -> np.ndarray:
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[3] not in (1, 3, 4)):
        raise DataError(f"{label}: shape {a.shape}, expected images (n, H, W) or "
                        f"(n, H, W, C) channels-last with C = 1, 3 or 4")
    if a.dtype == np.uint8:
        pass
    elif a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{label}: holds non-finite values (NaN or inf)")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise DataError(f"{label}: float pixels range {lo:g}..{hi:g}, expected [0, 1] "
                            f"(or store uint8 0..255)")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float32)
    else:
        raise DataError(f"{label}: dtype {a.dtype}, expected uint8 (0..255) or floats in "
                        f"[0, 1]")
    if a.ndim == 4:
        a = a[..., 0] if a.shape[3] == 1 else a.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a)


def _labels(a: np.ndarray, label: str) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise DataError(f"{label}: shape {a.shape}, expected labels (n,) or (n, 1)")
    if a.dtype.kind not in "iu":
        raise DataError(f"{label}: dtype {a.dtype}, expected integer class labels")
    if a.size and a.min() < 0:
        i = int(np.flatnonzero(a < 0)[0])
        raise DataError(f"{label}: label {int(a[i])} at index {i} is negative")
    return a.astype(np.int64)


def load_npz(path: str | os.PathLike) -> Dataset:
    """The four arrays of ``path``, checked; the classes are 0..max label (or
    ``class_names``)."""
    p = Path(path).expanduser()
    label = str(path)
    if not p.exists():
        raise DataError(f"{label}: no such file")
    try:
        with open_npz(p) as archive:
            missing = [k for k in KEYS if k not in archive.files]
            if missing:
                raise DataError(f"{label}: missing array {missing[0]!r} (expected "
                                f"{', '.join(KEYS)}; it has "
                                f"{', '.join(archive.files) or 'none'})")
            arrays = {}
            for k in KEYS + (("class_names",) if "class_names" in archive.files else ()):
                try:
                    arrays[k] = archive[k]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
                    raise DataError(f"{label}: array {k!r} is unreadable "
                                    f"({short_reason(exc)})") from None
    except NotAnArchive as exc:
        if exc.exc is None:
            raise DataError(f"{label}: a bare .npy array, expected an .npz archive holding "
                            f"{', '.join(KEYS)}") from None
        raise DataError(f"{label}: not a NumPy .npz archive ({exc.reason})") from None
    tx = _images(arrays["x_train"], f"{label}: x_train")
    vx = _images(arrays["x_test"], f"{label}: x_test")
    ty = _labels(arrays["y_train"], f"{label}: y_train")
    vy = _labels(arrays["y_test"], f"{label}: y_test")
    names = None
    if "class_names" in arrays:
        c = arrays["class_names"]
        if c.ndim != 1 or c.dtype.kind != "U" or len(set(c.tolist())) != len(c):
            raise DataError(f"{label}: class_names must be a 1-D array of distinct strings")
        names = tuple(str(s) for s in c)
    k = len(names) if names else classes_from_labels(ty, vy)
    check_split(tx, ty, f"{label}: x_train", f"{label}: y_train", k)
    check_split(vx, vy, f"{label}: x_test", f"{label}: y_test", k)
    if tx.shape[1:] != vx.shape[1:]:
        check_same_size(tx, vx, f"{label}: x_train", f"{label}: x_test")
    shape = "x".join(map(str, tx.shape[1:]))
    # the absolute path: a checkpoint's resume loads it again from any directory
    return Dataset(tx, ty, vx, vy, name=str(p.resolve()),
                   description=f"arrays in {p} ({len(tx)} train / {len(vx)} test, {shape}, "
                               f"{k} classes)", class_names=names, n_classes=k)

