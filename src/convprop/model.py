"""The model file (``model.npz``): a network's architecture, parameters and training record.

An uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` arrays), read with
``allow_pickle=False`` so loading never executes code from the file:

- ``__meta__``: a 0-d string array holding JSON: ``format`` ("convprop-model"),
  ``version`` (1), ``spec``, ``activation``, ``input_shape`` (C, H, W), ``n_outputs``,
  ``dtype``, ``loss``, ``params`` (parameter names in order), ``config`` (the training
  options) and ``summary`` (the training outcome), the last two possibly empty;
- ``param/<name>``: each parameter, e.g. ``param/conv1.weight``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError, ModelFileError
from convprop.fileio import write_npz
from convprop.network import Network

FORMAT = "convprop-model"
VERSION = 1


def save_model(net: Network, path: str | os.PathLike, config: dict | None = None,
               summary: dict | None = None) -> None:
    """Write ``net`` (and optionally its training config and summary) atomically."""
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
        "config": config or {},
        "summary": summary or {},
    }
    arrays = {"__meta__": np.array(json.dumps(meta, default=_plain))}
    arrays.update({f"param/{k}": v for k, v in net.params.items()})
    write_npz(path, arrays)


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model file, validated, without building the network."""
    with _open(path) as archive:
        return _meta(archive, path)


def load_model(path: str | os.PathLike) -> Network:
    """Load a model file into a :class:`Network`; its ``config`` and ``summary`` are
    attached as ``net.config`` / ``net.summary``.  Raises ModelFileError for a file
    that is not a convprop model, truncated, of another version, or whose arrays
    do not fit its spec."""
    name = str(path)
    with _open(path) as archive:
        meta = _meta(archive, path)
        try:
            net = Network(meta["spec"], meta["activation"], meta["input_shape"],
                          meta["n_outputs"], meta["dtype"], meta.get("loss", "mse"))
        except ConvpropError as exc:
            raise ModelFileError(f"{name}: {exc}") from None
        if list(net.params) != list(meta["params"]):
            raise ModelFileError(f"{name}: parameter list {meta['params']} does not fit spec "
                                 f"{meta['spec']!r} (expected {list(net.params)})")
        for key, target in net.params.items():
            arr = _array(archive, f"param/{key}", path)
            if arr.shape != target.shape:
                raise ModelFileError(f"{name}: parameter {key} has shape {arr.shape}, spec "
                                     f"{meta['spec']!r} needs {target.shape}")
            if not np.issubdtype(arr.dtype, np.floating):
                raise ModelFileError(f"{name}: parameter {key} has dtype {arr.dtype}, "
                                     f"expected floats")
            target[...] = arr
    net.config = meta.get("config") or {}
    net.summary = meta.get("summary") or {}
    return net


class _open:
    """np.load with allow_pickle=False, turning every failure into a one-line error."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        p = self.path
        if not p.exists():
            raise ModelFileError(f"model file {str(p)!r} does not exist")
        if p.is_dir():
            raise ModelFileError(f"model file {str(p)!r} is a directory")
        try:
            self.archive = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelFileError(f"{p}: not a convprop model file ({_short(exc)})") from None
        if not isinstance(self.archive, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{p}: not a convprop model file (a bare .npy array, "
                                 f"not an .npz archive)")
        return self.archive

    def __exit__(self, *exc):
        self.archive.close()


def _array(archive, key: str, path) -> np.ndarray:
    if key not in archive.files:
        raise ModelFileError(f"{path}: missing array {key!r}")
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: array {key!r} is unreadable ({_short(exc)})") from None


def _meta(archive, path) -> dict[str, Any]:
    raw = _array(archive, "__meta__", path)
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise ModelFileError(f"{path}: metadata is not valid JSON ({_short(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a convprop model file (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ModelFileError(f"{path}: model format version {meta.get('version')!r} is not "
                             f"supported (this convprop reads version {VERSION})")
    for field in ("spec", "activation", "input_shape", "n_outputs", "dtype", "params"):
        if field not in meta:
            raise ModelFileError(f"{path}: metadata lacks field {field!r}")
    return meta


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
