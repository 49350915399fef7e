"""Digit images from files, converted the way MNIST was made.

MNIST's digits are white on black, 28 x 28: each NIST digit was fitted into a 20 x 20
box preserving its aspect ratio (anti-aliased, hence grey levels), then placed in a
28 x 28 field so that its centre of mass sits at the centre.  :func:`prepare` does the
same to any picture of a single digit:

1. grey (ITU-R 601 luma; transparent pixels over white);
2. the background is the median of the border pixels: light backgrounds are inverted,
   so the digit is light on dark, then the background level is subtracted and the
   contrast stretched to [0, 1] (faint noise below 10 % is cleared);
3. crop to the bounding box of the ink (pixels >= 25 % of the maximum);
4. resize so the longer side is 20 pixels, aspect ratio kept (Lanczos, anti-aliased);
5. paste into 28 x 28 so the centre of mass lands on the centre (whole-pixel shift);
6. round to uint8 0..255, as the MNIST files store it.

A 28 x 28 picture that already looks like MNIST (grey, light on a dark border) passes
through untouched, so an MNIST image written as PNG gives back its exact bytes.

:func:`load_image_for` picks what a model needs: this MNIST conversion for grey models
(resized to the model's H x W when that is not 28 x 28; a picture already of the
model's size is used as it is), and for colour models the RGB pixels, only resized to
the model's input (no grey, no inversion, no centring).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convprop.errors import ConvpropError, short_reason

SIZE = 28  # MNIST field
BOX = 20  # the digit's box inside it
INK = 0.25  # fraction of the maximum that counts as ink for the bounding box
NOISE = 0.10  # below this (after stretching) a pixel is background


class ImageError(ConvpropError):
    """An image file that cannot be used: unreadable, empty, or with no digit in it."""


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as grey levels, float64 (H, W) in 0..255.  Transparent
    pixels are composited over white.  Raises ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageError(f"image {str(p)!r} does not exist")
    if p.is_dir():
        raise ImageError(f"image {str(p)!r} is a directory")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file, not an image")
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            grey = img.convert("L") if img.mode != "L" else img
            arr = np.asarray(grey, dtype=np.float64)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{p}: not a readable image ({short_reason(exc)})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageError(f"{p}: cannot decode image ({short_reason(exc)})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"{p}: image has no pixels")
    return arr


def is_mnist_like(grey: np.ndarray) -> bool:
    """28 x 28 whole grey levels with a dark border: already in MNIST's form."""
    if grey.shape != (SIZE, SIZE) or not np.array_equal(grey, np.round(grey)):
        return False
    return bool(np.median(_border(grey)) < 128)


def prepare(grey: np.ndarray, always_preprocess: bool = False,
            name: str = "image") -> np.ndarray:
    """Grey levels (H, W) in 0..255 -> an MNIST-style uint8 (28, 28) image (see the
    module docstring).  Raises ImageError for a blank image."""
    grey = np.asarray(grey, dtype=np.float64)
    if not always_preprocess and is_mnist_like(grey):
        return grey.astype(np.uint8)
    g = grey if np.median(_border(grey)) < 128 else 255.0 - grey
    g = g - np.median(_border(g))
    top = g.max()
    if top < 255 * 0.05:
        raise ImageError(f"{name}: no digit found (the image is blank or has no contrast)")
    g = np.clip(g / top, 0, 1)
    g[g < NOISE] = 0
    rows, cols = np.nonzero(g >= INK)
    g = g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = _fit(g, BOX)
    return _centre(box, SIZE)


def load_digit(path: str | os.PathLike, always_preprocess: bool = False) -> np.ndarray:
    """Read and :func:`prepare` one image file: uint8 (28, 28), light digit on black."""
    return prepare(read_grey(path), always_preprocess, name=str(path))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3) RGB, transparent pixels over white.
    Raises ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    read_grey(path)  # the same checks and messages for missing / empty / corrupt files
    with Image.open(path) as img:
        try:
            img.load()
            rgba = img.convert("RGBA")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{path}: cannot decode image ({short_reason(exc)})") from None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) resized to (h, w) (Lanczos), still uint8."""
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    img = Image.fromarray(np.ascontiguousarray(a))
    return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)


def load_image_for(net, path: str | os.PathLike,
                   always_preprocess: bool = False) -> np.ndarray:
    """One image file as the input ``net`` takes: uint8 (H, W) for a grey model (MNIST
    conversion, see the module docstring), uint8 (C, H, W) for a colour one (RGB resized
    to H x W; C must be 3)."""
    c, h, w = net.input_shape
    if c == 1:
        if (h, w) == (SIZE, SIZE):
            return load_digit(path, always_preprocess)
        grey = read_grey(path)
        if grey.shape == (h, w) and not always_preprocess:
            return np.clip(np.round(grey), 0, 255).astype(np.uint8)
        return _resize(prepare(grey, always_preprocess, name=str(path)), h, w)
    if c != 3:
        raise ImageError(f"{path}: image files give 1 (grey) or 3 (RGB) channels, the model "
                         f"takes {c}")
    return _resize(read_rgb(path), h, w).transpose(2, 0, 1).copy()


def scores(net, images: np.ndarray) -> np.ndarray:
    """Network outputs (N, n_outputs) for uint8 images (N, H, W) or (N, C, H, W), scaled
    to [0, 1] with the pixel conversion of training
    (:func:`convprop.training.trainer.to_float`)."""
    from convprop.training.trainer import to_float

    return net.forward(to_float(np.asarray(images, dtype=np.uint8), net.dtype))


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _fit(g: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, aspect ratio kept, anti-aliased."""
    from PIL import Image

    h, w = g.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(g.astype(np.float32))  # mode "F"
    return np.clip(np.asarray(img.resize(size, Image.Resampling.LANCZOS), np.float64), 0, 1)


def _centre(g: np.ndarray, size: int) -> np.ndarray:
    """Paste ``g`` into a size x size field, its centre of mass on the field's centre."""
    h, w = g.shape
    total = g.sum()
    r = (g.sum(axis=1) @ np.arange(h)) / total
    c = (g.sum(axis=0) @ np.arange(w)) / total
    centre = (size - 1) / 2
    top = int(np.clip(round(centre - r), 0, size - h))
    left = int(np.clip(round(centre - c), 0, size - w))
    out = np.zeros((size, size))
    out[top : top + h, left : left + w] = g
    return np.round(out * 255).astype(np.uint8)


