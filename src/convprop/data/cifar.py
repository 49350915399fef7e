"""CIFAR-10's binary version: ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin``, each a run of 3073-byte records: 1 label byte (0..9) then 3072 pixel
bytes, the 32x32 red plane, then green, then blue, each row-major.  Class names come
from ``batches.meta.txt`` (one per line) when present.  The directory may also be the
one holding ``cifar-10-batches-bin/`` (what the archive unpacks to).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convprop.data.base import Dataset, check_split
from convprop.errors import DataError

SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32
N_CLASSES = 10
SUBDIR = "cifar-10-batches-bin"
META = "batches.meta.txt"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")


def _root(d: Path) -> Path:
    return d / SUBDIR if (d / SUBDIR).is_dir() else d


def is_cifar_dir(d: Path) -> bool:
    r = _root(d)
    return (r / "data_batch_1.bin").exists() or (r / "test_batch.bin").exists()


def read_batch(path: Path, n_classes: int = N_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    label = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    if not raw:
        raise DataError(f"{label}: empty file, expected records of {RECORD} bytes (1 label "
                        f"+ 3072 pixels)")
    if len(raw) % RECORD:
        raise DataError(f"{label}: size {len(raw)} bytes is not a whole number of "
                        f"{RECORD}-byte records (1 label byte + 3x32x32 pixels): truncated, "
                        f"or not CIFAR-10's binary version")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    x = np.ascontiguousarray(rec[:, 1:].reshape(-1, *SHAPE))
    y = rec[:, 0].astype(np.int64)
    check_split(x, y, label, label, n_classes)
    return x, y


def _class_names(root: Path) -> tuple[str, ...]:
    p = root / META
    if not p.exists():
        return CLASS_NAMES
    try:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read class names ({exc})") from None
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise DataError(f"{p}: expected one distinct class name per line, got {names[:12]}")
    return tuple(names)


def load_cifar_dir(directory: str | os.PathLike) -> Dataset:
    """``data_batch_1.bin`` .. ``data_batch_K.bin`` (K <= 5, no gaps) for training and
    ``test_batch.bin`` for testing."""
    root = _root(Path(directory).expanduser())
    names = _class_names(root)
    k = len(names)
    batches = sorted((p for p in root.glob("data_batch_*.bin")),
                     key=lambda p: (len(p.name), p.name))
    expected = [f"data_batch_{i}.bin" for i in range(1, len(batches) + 1)]
    if [p.name for p in batches] != expected or not batches:
        have = {p.name for p in batches}
        gap = next((e for e in expected + [f"data_batch_{len(batches) + 1}.bin"]
                    if e not in have), "data_batch_1.bin")
        raise DataError(f"{root}: missing {gap} (CIFAR-10 training batches are "
                        f"data_batch_1.bin .. data_batch_5.bin)")
    test = root / "test_batch.bin"
    if not test.exists():
        raise DataError(f"{root}: missing test_batch.bin")
    parts = [read_batch(p, k) for p in batches]
    tx = np.concatenate([p[0] for p in parts])
    ty = np.concatenate([p[1] for p in parts])
    vx, vy = read_batch(test, k)
    return Dataset(tx, ty, vx, vy, name=str(directory),
                   description=f"CIFAR-10 binary batches in {root} ({len(tx)} train / "
                               f"{len(vx)} test, 3x32x32, {k} classes)",
                   class_names=names, n_classes=k)
