"""The model file (``model.npz``): a network's architecture, parameters and training record.

An uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` arrays), read with
``allow_pickle=False`` so loading never executes code from the file:

- ``__meta__``: a 0-d unicode array holding JSON: ``format`` ("convprop-model"),
  ``version`` (2), ``spec``, ``activation``, ``input_shape`` (C, H, W; C = 3 for
  colour), ``n_outputs``, ``dtype``, ``loss``, ``params`` (parameter names in order),
  ``class_names`` (one string per output, or null: the classes are then 0..K-1),
  ``config`` (the training options) and ``summary`` (the training outcome), the last
  two possibly empty.  Version 1 files (no ``class_names``) still load;
- ``param/<name>``: each entry of ``Network.params``, e.g. ``param/conv1.weight``
  (an activation with learnable parameters adds its own, e.g. ``param/conv1.alpha``).

The network is rebuilt as ``Network(spec, activation, input_shape, n_outputs, dtype,
loss)`` and every parameter must then be present with exactly the shape and dtype that
network has, finite, and nothing else may be in the archive.  Any fault is a one-line
:class:`~convprop.errors.ModelError` naming the file.  Full description: docs/models.md.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError, ModelError, short_reason
from convprop.fileio import NotAnArchive, open_npz, write_npz
from convprop.maths.network import Network

FORMAT = "convprop-model"
VERSION = 2
READABLE = (1, 2)  # version 1: before class names (and colour / fc layers)
META = "__meta__"
PREFIX = "param/"
_FIELDS = {"spec": str, "activation": str, "input_shape": list, "n_outputs": int,
           "dtype": str, "params": list}


def save_model(net: Network, path: str | os.PathLike, config: dict | None = None,
               summary: dict | None = None) -> None:
    """Write ``net`` (and optionally its training config and summary) atomically.

    ``config``/``summary`` default to ``net.config``/``net.summary`` when the network
    came from :func:`load_model`, so load -> save keeps the training record."""
    if config is None:
        config = getattr(net, "config", None)
    if summary is None:
        summary = getattr(net, "summary", None)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": net.spec,
        "activation": net.activation.name,
        "input_shape": list(net.input_shape),
        "n_outputs": net.n_outputs,
        "dtype": net.dtype.name,
        "loss": net.loss.name,
        "params": list(net.params),
        "class_names": _class_names(net),
        "config": _json_safe(config or {}),
        "summary": _json_safe(summary or {}),
    }
    arrays = {META: np.array(json.dumps(meta, allow_nan=False))}
    arrays.update({PREFIX + k: np.asarray(v) for k, v in net.params.items()})
    write_npz(path, arrays)


def load_model(path: str | os.PathLike) -> Network:
    """Load a model file into a :class:`Network`; its ``config`` and ``summary`` are
    attached as ``net.config`` / ``net.summary``.  Raises ModelError for a file that is
    missing, not a convprop model, truncated, of another format version, or whose arrays
    do not fit its spec (missing, extra, wrong shape or dtype, non-finite)."""
    with _archive(path) as archive:
        meta = _meta(archive, path)
        try:
            net = Network(meta["spec"], meta["activation"], meta["input_shape"],
                          meta["n_outputs"], meta["dtype"], meta.get("loss", "mse"))
        except (ConvpropError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: metadata does not describe a network "
                             f"({short_reason(exc)})") from None
        expected = list(net.params)
        if list(meta["params"]) != expected:
            raise ModelError(f"{path}: parameter list {meta['params']} does not fit spec "
                             f"{meta['spec']!r} with activation {meta['activation']!r} "
                             f"(expected {expected})")
        stored = [f for f in archive.files if f != META]
        extra = sorted(set(stored) - {PREFIX + k for k in expected})
        if extra:
            raise ModelError(f"{path}: unexpected array {extra[0]!r} (the spec's parameters "
                             f"are {expected})")
        for key, target in net.params.items():
            arr = _array(archive, PREFIX + key, path)
            if arr.shape != target.shape:
                raise ModelError(f"{path}: parameter {key} has shape {arr.shape}, spec "
                                 f"{meta['spec']!r} needs {target.shape}")
            if arr.dtype != target.dtype:
                raise ModelError(f"{path}: parameter {key} has dtype {arr.dtype}, the "
                                 f"model's dtype is {target.dtype}")
            if not np.isfinite(arr).all():
                raise ModelError(f"{path}: parameter {key} holds non-finite values "
                                 f"(NaN or inf)")
            target[...] = arr
    net.config = meta.get("config") or {}
    net.summary = meta.get("summary") or {}
    net.class_names = meta.get("class_names")
    return net


def _class_names(net: Network) -> list[str] | None:
    names = getattr(net, "class_names", None)
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != net.n_outputs:
        raise ConvpropError(f"{len(names)} class names for a network with {net.n_outputs} "
                            f"outputs")
    return names


def class_label(net: Network, k: int) -> str:
    """Class ``k``'s name when the model has names, else ``k`` as text."""
    names = getattr(net, "class_names", None)
    return str(names[k]) if names else str(k)


def describe_model(net: Network) -> dict[str, Any]:
    """Layers with parameter counts, and the paper's weight-sharing argument: a conv layer
    from C maps of H x W to C' maps of H' x W' shares C·C'·k² kernel weights, where a fully
    connected layer between the same maps would need C·H·W · C'·H'·W' weights."""
    rows, shape = [], net.input_shape
    for name, layer in zip(net.layer_names, net.layers):
        out = layer.output_shape(shape)
        n_w = int(layer.params["weight"].size) if "weight" in layer.params else 0
        fc = int(np.prod(shape)) * int(np.prod(out)) if layer.kind == "conv" else None
        rows.append({"name": name, "kind": layer.kind, "input_shape": list(shape),
                     "output_shape": list(out), "weights": n_w,
                     "params": int(sum(p.size for p in layer.params.values())),
                     "fully_connected_weights": fc})
        shape = out
    return {"spec": net.spec, "activation": net.activation.name,
            "input_shape": list(net.input_shape), "n_outputs": net.n_outputs,
            "dtype": net.dtype.name, "loss": net.loss.name, "layers": rows,
            "class_names": getattr(net, "class_names", None),
            "total_params": net.n_params, "config": getattr(net, "config", {}),
            "summary": getattr(net, "summary", {})}


@contextmanager
def _archive(path: str | os.PathLike) -> Iterator[Any]:
    """The model file's archive (:func:`fileio.open_npz`), every failure a one-line error."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {str(p)!r} does not exist")
    if p.is_dir():
        raise ModelError(f"model file {str(p)!r} is a directory")
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read the model file ({short_reason(exc)})") from None
    if not head.startswith((_ZIP_MAGIC, _NPY_MAGIC)):
        raise ModelError(f"{p}: not a convprop model file but {_what_is(head, p)}; "
                         f"{_EXPECTED}")
    try:
        with open_npz(p) as archive:
            yield archive
    except NotAnArchive as exc:  # raised on opening only, never by the caller's reading
        if exc.exc is None:
            raise ModelError(f"{p}: not a convprop model file but a bare .npy array; "
                             f"{_EXPECTED}") from None
        raise ModelError(f"{p}: not a convprop model file ({_no_pickle(exc.exc)}); "
                         f"{_EXPECTED}") from None


def _array(archive, key: str, path) -> np.ndarray:
    if key not in archive.files:
        raise ModelError(f"{path}: missing array {key!r}")
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        # a truncated or corrupted member: bad CRC, short read, pickled object array
        raise ModelError(f"{path}: array {key!r} is unreadable ({_no_pickle(exc)})") from None


def _meta(archive, path) -> dict[str, Any]:
    if META not in archive.files:
        raise ModelError(f"{path}: not a convprop model file (no {META!r} entry)")
    raw = _array(archive, META, path)
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise ModelError(f"{path}: metadata is not valid JSON ({short_reason(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a convprop model file (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") not in READABLE or isinstance(meta.get("version"), bool):
        raise ModelError(f"{path}: model format version {meta.get('version')!r} is not "
                         f"supported (this convprop reads versions "
                         f"{', '.join(map(str, READABLE))})")
    for field, kind in _FIELDS.items():
        if field not in meta:
            raise ModelError(f"{path}: metadata lacks field {field!r}")
        if not isinstance(meta[field], kind) or isinstance(meta[field], bool):
            raise ModelError(f"{path}: metadata field {field!r} should be a {kind.__name__}, "
                             f"got {meta[field]!r}")
    for field in ("config", "summary"):
        if not isinstance(meta.get(field, {}), dict):
            raise ModelError(f"{path}: metadata field {field!r} should be an object")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != meta["n_outputs"]
                              or not all(isinstance(n, str) for n in names)):
        raise ModelError(f"{path}: metadata field 'class_names' should be null or a list of "
                         f"{meta['n_outputs']} strings, got {str(names)[:80]}")
    return meta


_EXPECTED = "expected a model.npz as `convprop train` writes it"
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"
# (leading bytes, what a file starting with them is)
_SIGNATURES = [(b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
               (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"),
               (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
               (b"\x1f\x8b", "a gzip file"), (b"PK\x05\x06", "an empty zip archive"),
               (b"MATLAB 5.0 MAT-file",
                "a MATLAB .mat file (`convprop import-matlab` converts a toolbox network)")]


def _what_is(head: bytes, path: Path) -> str:
    """A few words saying what a file that is not a NumPy archive is, from its first bytes
    (``head``) and, for text, its name."""
    if not head:
        return "an empty file"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if path.suffix.lower() in (".csv", ".tsv") or ("," in first and "{" not in first):
        return "a text table (CSV)"
    if first.startswith(("{", "[")):
        return "a JSON or other text file"
    return "a text file"


def _no_pickle(exc: BaseException) -> str:
    """The reason in ``exc``, without NumPy's advice to load the file with pickle."""
    text = short_reason(exc)
    if "pickle" in text.lower():
        return "it holds Python objects, not plain arrays"
    return text



def _json_safe(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays as Python ones, non-finite floats as null."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)
