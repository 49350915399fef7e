"""Which loader reads a ``--data`` path: a ``.npz`` file, a CIFAR-10 binary directory
or an image folder.  ``None`` leaves the path to the IDX loader (``mnist.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from convprop.data import cifar, folder, npz
from convprop.data.base import Dataset


def load_other(source: str | os.PathLike) -> Dataset | None:
    """The data set at ``source`` if it is one of the non-IDX formats, else None."""
    p = Path(source).expanduser()
    if p.suffix.lower() == ".npz" and not p.is_dir():
        return npz.load_npz(source)
    if p.is_dir():
        if cifar.is_cifar_dir(p):
            return cifar.load_cifar_dir(source)
        if folder.is_image_folder(p):
            return folder.load_image_folder(source)
    return None
