"""A network spec that fits a data set's image size (``reproduce --data DIR``).

The paper's ``6c5-2s-12c5-2s`` when it fits (28x28, 32x32, 16x16, ...); otherwise the
same two conv + mean-pool stages with 3x3 kernels where needed, then one stage, and for
images too small for any convolution a multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

from convprop.errors import SpecError

PAPER_SPEC = "6c5-2s-12c5-2s"
CANDIDATES = ("6c5-2s-12c5-2s", "6c5-2s-12c3-2s", "6c3-2s-12c5-2s", "6c3-2s-12c3-2s",
              "6c5-2s", "6c3-2s", "100f")


def _fits(spec: str, h: int, w: int) -> bool:
    for token in spec.split("-"):
        if token.endswith("c5") or token.endswith("c3"):
            k = int(token[-1])
            h, w = h - k + 1, w - k + 1
            if h < 1 or w < 1:
                return False
        elif token.endswith("s"):
            s = int(token[:-1])
            if h % s or w % s:
                return False
            h, w = h // s, w // s
    return True


def default_spec_for(input_shape: Sequence[int]) -> str:
    """The first of :data:`CANDIDATES` whose layer sizes are whole numbers for images of
    ``input_shape`` ((H, W) or (C, H, W)); the paper's spec for 28x28."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise SpecError(f"input_shape must be (H, W) or (C, H, W), got {input_shape!r}")
    h, w = shape[-2:]
    return next(spec for spec in CANDIDATES if _fits(spec, h, w))
