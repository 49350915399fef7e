"""The :class:`Dataset` every loader returns, and the checks every format shares.

Images are stored as the file holds them: uint8 (0..255, scaled by 1/255 when a batch
is made) or floats already in [0, 1]; grey images as (N, H, W), colour ones as
(N, C, H, W).  Labels are int64 in 0..n_classes-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convprop.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8 or floats in [0, 1]; (N, H, W) grey or (N, C, H, W))
    and labels (int64, 0..n_classes-1).  ``class_names`` (one per class) when the data
    name them (an image folder's sub-directories, CIFAR-10's ``batches.meta.txt``)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    name: str
    description: str
    class_names: tuple[str, ...] | None = None
    n_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: C = 1 for grey images."""
        s = self.train_x.shape[1:]
        return (1, *s) if len(s) == 2 else tuple(s)  # type: ignore[return-value]

    def class_name(self, label: int) -> str:
        """The name of class ``label``, or the label itself as text when unnamed."""
        return self.class_names[label] if self.class_names else str(label)


def size_text(shape: tuple[int, ...]) -> str:
    """(H, W) or (C, H, W) as ``28x28`` / ``3x32x32``."""
    return "x".join(str(int(d)) for d in shape)


def check_split(x: np.ndarray, y: np.ndarray, x_label: str, y_label: str,
                n_classes: int | None = None) -> None:
    """The faults every format checks: no images, label count, labels out of range."""
    if x.shape[0] == 0:
        raise DataError(f"{x_label}: image count 0, the file holds no images")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{y_label}: label count {y.shape[0]} does not match the image count "
                        f"{x.shape[0]}" + ("" if x_label == y_label else
                                           f" of {x_label.rsplit('/', 1)[-1]}"))
    if n_classes is not None:
        bad = np.flatnonzero((y < 0) | (y >= n_classes))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{y_label}: label {int(y[i])} at index {i} is out of range "
                            f"0..{n_classes - 1}"
                            + (f" ({bad.size} such labels)" if bad.size > 1 else ""))


def check_same_size(train_x: np.ndarray, test_x: np.ndarray, train_label: str,
                    test_label: str, usual: tuple[int, ...] | None = None) -> None:
    """Train and test images must have one size; the message names the odd one out (the
    one that is not ``usual``, else the test file)."""
    a, b = train_x.shape[1:], test_x.shape[1:]
    if a == b:
        return
    odd, other, odd_label, other_label = b, a, test_label, train_label
    if usual is not None and b == usual:
        odd, other, odd_label, other_label = a, b, train_label, test_label
    raise DataError(f"{odd_label}: image size {size_text(odd)}, expected {size_text(other)} "
                    f"(the size of {other_label.rsplit('/', 1)[-1]})")


def classes_from_labels(*labels: np.ndarray) -> int:
    """The number of classes when only labels are known: the largest label + 1."""
    return int(max(int(y.max(initial=0)) for y in labels)) + 1
