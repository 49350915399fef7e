"""An image folder, laid out as torchvision's ``ImageFolder``::

    DIR/train/<class>/*.png|jpg|jpeg|bmp
    DIR/test/<class>/*.png|jpg|jpeg|bmp

The labels are the class directories of ``train/`` in sorted order (``test/`` may lack
some, never add one).  Images are grey when every image is grey (R = G = B, or a grey
mode), RGB otherwise (an alpha channel is dropped); every image must have the same size.
Hidden files (``.DS_Store``) are skipped; any other file is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convprop.data.base import Dataset
from convprop.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def is_image_folder(d: Path) -> bool:
    return (d / "train").is_dir() and (d / "test").is_dir()


def _visible(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _scan(split_dir: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of one split; ``classes`` the train split's."""
    subdirs = [p for p in _visible(split_dir) if p.is_dir()]
    stray = [p for p in _visible(split_dir) if not p.is_dir()]
    if stray:
        raise DataError(f"{stray[0]}: a file directly in {split_dir}; images go in one "
                        f"sub-directory per class ({split_dir}/<class>/)")
    names = [p.name for p in subdirs]
    if not names:
        raise DataError(f"{split_dir}: no class sub-directories (expected "
                        f"{split_dir}/<class>/*.png)")
    if classes is not None:
        extra = [n for n in names if n not in classes]
        if extra:
            raise DataError(f"{split_dir / extra[0]}: class {extra[0]!r} is not among the "
                            f"training classes ({', '.join(classes)})")
    index = {n: i for i, n in enumerate(classes or names)}
    files, labels = [], []
    for sub in subdirs:
        imgs = [p for p in _visible(sub)]
        for p in imgs:
            if p.is_dir() or p.suffix.lower() not in EXTENSIONS:
                raise DataError(f"{p}: not an image file (expected "
                                f"{'/'.join(e[1:] for e in EXTENSIONS)})")
        if not imgs:
            raise DataError(f"{sub}: class directory holds no images")
        files += imgs
        labels += [index[sub.name]] * len(imgs)
    return files, labels, names


def _read(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        text = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(f"{path}: cannot read image ({text})") from None
    return np.asarray(rgb, dtype=np.uint8)


def load_image_folder(directory: str | os.PathLike) -> Dataset:
    """Every image of ``DIR/train`` and ``DIR/test`` as (N, H, W) grey or (N, 3, H, W)."""
    d = Path(directory).expanduser()
    tf, tl, names = _scan(d / "train", None)
    vf, vl, _ = _scan(d / "test", names)
    images = [_read(p) for p in tf + vf]
    sizes: dict[tuple[int, int], Path] = {}
    for p, im in zip(tf + vf, images):
        sizes.setdefault(im.shape[:2], p)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(f"{d}: images differ in size: {p1} is {s1[1]}x{s1[0]}, {p2} is "
                        f"{s2[1]}x{s2[0]} (every image must have one size; width x height)")
    x = np.stack(images)  # (N, H, W, 3)
    grey = bool(np.all(x[..., 0] == x[..., 1]) and np.all(x[..., 1] == x[..., 2]))
    x = np.ascontiguousarray(x[..., 0] if grey else x.transpose(0, 3, 1, 2))
    n = len(tf)
    y = np.array(tl + vl, dtype=np.int64)
    shape = "x".join(map(str, x.shape[1:]))
    return Dataset(x[:n], y[:n], x[n:], y[n:], name=str(directory),
                   description=f"image folder {d} ({n} train / {len(vf)} test, "
                               f"{'grey' if grey else 'RGB'} {shape}, {len(names)} classes)",
                   class_names=tuple(names), n_classes=len(names))
