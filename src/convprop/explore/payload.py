"""What the explorer's JSON API reads and writes: checked images and labels in, a trace out.

An image arrives as 28 x 28 numbers in [0, 1] (used as they are: the network's input)
or as a PNG data URL (a drawing or an upload), which is decoded, shrunk to at most
112 pixels a side (:func:`shrink`), prepared the way MNIST was made
(:func:`convprop.interop.images.prepare`) and scaled to [0, 1].  Every
fault is an :class:`ApiError` with a one-line message and the HTTP status to answer.

:func:`trace_payload` turns :meth:`Network.trace` of one image into the JSON the page
draws: per layer its maps ``a`` (C, H, W), and with a label its error maps, each tagged
with the paper's equation that produced it.  Arrays are sent as float32 (7 significant
digits), through orjson, which writes NumPy arrays directly (a 24 000-number trace in
about a millisecond).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import numpy as np
import orjson

from convprop.errors import ConvpropError
from convprop.interop.images import prepare
from convprop.maths.layers import MaxPool
from convprop.maths.network import Network

MAX_BODY = 2_000_000  # bytes of one request body; more is refused with 413
MAX_SIDE = 2048  # pixels per side of an uploaded PNG
WORK_SIDE = 112  # larger pictures are first shrunk (block means) to at most this side
PNG_PREFIX = "data:image/png;base64,"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZE = 28


class ApiError(ConvpropError):
    """A request the API refuses: ``status`` is the HTTP status (4xx), the text says why."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def dumps(obj: Any) -> bytes:
    """JSON bytes; NumPy arrays and scalars written natively."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"request body is not valid JSON ({str(exc).splitlines()[0]})",
                       400) from None
    if not isinstance(obj, dict):
        raise ApiError(f"request body must be a JSON object, got {type(obj).__name__}", 400)
    return obj


def parse_label(value: Any) -> int | None:
    """``None`` or a whole number 0..9 (a JSON integer, or its text from a form)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ApiError(f"label must be an integer 0..9, got {str(value)[:20]!r}")
    return value


def parse_image(value: Any) -> np.ndarray:
    """The network's input, float64 (28, 28) in [0, 1], from the ``image`` field."""
    if value is None:
        raise ApiError("missing 'image': give 28 x 28 numbers in [0, 1] or a PNG data URL")
    if isinstance(value, str):
        return _from_png(value)
    if not isinstance(value, list) or len(value) != SIZE or not all(
            isinstance(row, list) and len(row) == SIZE for row in value):
        raise ApiError("'image' must be 28 rows of 28 numbers in [0, 1] (or a PNG data URL)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
               for row in value for v in row):
        raise ApiError("'image' must hold numbers only")
    x = np.array(value, dtype=np.float64)
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise ApiError("'image' values must be finite numbers in [0, 1]")
    return x


def _from_png(url: str) -> np.ndarray:
    """Decode a PNG data URL (never a path), shrink it (:func:`shrink`) and prepare it
    as MNIST was made."""
    from PIL import Image, UnidentifiedImageError

    if not url.startswith(PNG_PREFIX):
        raise ApiError("'image' text must be a PNG data URL starting 'data:image/png;base64,'")
    try:
        raw = base64.b64decode(url[len(PNG_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("'image' data URL is not valid base64") from None
    if not raw.startswith(PNG_MAGIC):
        raise ApiError("'image' data URL does not hold a PNG")
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as img:
            w, h = img.size
            if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
                raise ApiError(f"'image' is {w} x {h} pixels; at most {MAX_SIDE} x "
                               f"{MAX_SIDE} are accepted")
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            grey = np.asarray(shrink(img.convert("L")), dtype=np.float64)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as exc:
        raise ApiError(f"'image' PNG cannot be decoded ({' '.join(str(exc).split())[:120]})"
                       ) from None
    try:
        u8 = prepare(grey, name="image")
    except ConvpropError as exc:
        raise ApiError(str(exc)) from None
    return u8.astype(np.float64) / 255


def shrink(img):
    """A grey PIL image with its longer side cut to at most :data:`WORK_SIDE` pixels:
    averaged over k x k blocks, k = ceil(side / WORK_SIDE) (anti-aliased, aspect kept;
    a 280 x 280 drawing becomes 94 x 94).  The digit ends up in a 20-pixel box anyway;
    preparing the drawing at full size would take about ten times as long."""
    k = -(-max(img.size) // WORK_SIDE)
    return img if k <= 1 else img.reduce(k)


def equation(net: Network, i: int) -> str:
    """The paper's equation that gives layer i's error map in :meth:`Network.trace`:
    (4) output layer; (8) the layer feeding the fully connected output (reshaped to
    maps; for a conv layer times f'); (11) a conv layer under a pooling layer; (12) a
    pooling layer under a conv layer (a conv under a conv: (12), then times f')."""
    kinds = [layer.kind for layer in net.layers]
    if kinds[i] == "dense":
        return "4"
    above = kinds[i + 1]
    if above == "dense":
        return "8"
    if kinds[i] == "conv":
        return "11" if above == "pool" else "12"
    return "12"


def trace_payload(net: Network, x: np.ndarray, label: int | None) -> dict[str, Any]:
    """Forward (and, given a label, backward) pass of one image x (28, 28) in [0, 1].

    Returns ``{"digit", "scores", "input", "loss", "label", "layers"}``; each layer has
    ``name``, ``kind``, ``shape`` and ``maps``: its output a as (C, H, W) (the output
    layer's n scores as (1, 1, n)); conv layers add ``kernels`` (out, in, k, k).  With a
    label, each layer adds ``delta`` (conv and output: δ = f'(z) ∘ dL/da, equations (4),
    (8), (11); pooling: the error dL/da it receives, equations (8), (12)), ``equation``,
    ``slope`` f'(z) (layers with an activation) and ``error`` dL/da from above; layers
    with weights add ``weight_grad`` ((out, in, k, k), equation (13), or (n_out, n_in),
    equation (9)) and ``bias_grad`` (equations (10), (14)).  Without a label the same
    trace runs (its backward half against label 0) but no error is reported."""
    xb = x[None].astype(net.dtype)
    tr = net.trace(xb, np.array([0 if label is None else label]))
    scores = tr.outputs[0]
    out: dict[str, Any] = {
        "digit": int(np.argmax(scores)),
        "scores": _f32(scores),
        "input": _f32(x),
        "label": label,
        "loss": float(tr.loss) if label is not None else None,
        "activation": net.activation.name,
        "layers": [],
    }
    for i, (layer, rec) in enumerate(zip(net.layers, tr.layers)):
        shape = rec.a.shape[1:]
        as_maps = (lambda a: a[0]) if len(shape) == 3 else (lambda a: a[0][None, None])
        item: dict[str, Any] = {"name": rec.name, "kind": rec.kind,
                                "shape": list(as_maps(rec.a).shape),
                                "maps": _f32(as_maps(rec.a))}
        if isinstance(layer, MaxPool):
            item["pooling"] = "max"
        elif rec.kind == "pool":
            item["pooling"] = "mean"
        if rec.kind == "conv":
            item["kernels"] = _f32(layer.params["weight"])
        if label is not None:
            err = rec.delta if rec.delta is not None else rec.d_out
            item["equation"] = equation(net, i)
            item["delta"] = _f32(as_maps(err))
            item["error"] = _f32(as_maps(rec.d_out))
            if rec.slope is not None:
                item["slope"] = _f32(as_maps(rec.slope))
            if "weight" in rec.grads:
                item["weight_grad"] = _f32(rec.grads["weight"])
                item["bias_grad"] = _f32(rec.grads["bias"])
        out["layers"].append(item)
    return out


def _f32(a: np.ndarray) -> np.ndarray:
    """float32 copy for the wire; a non-finite value (a diverged live network) becomes 0
    and is reported by the loss instead (JSON has no NaN)."""
    a = np.asarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(a)


def finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None
