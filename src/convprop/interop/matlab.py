"""DeepLearnToolbox (MATLAB/Octave) conventions, and conversion to and from them.

The toolbox differs from convprop in three ways (see ``tests/fixtures/parity/README.md``):

- ``convn`` is a true convolution, so its kernel ``k{i}{j}`` is convprop's
  ``conv.weight[j, i]`` rotated by 180 degrees;
- its arrays are column-major: an input batch is ``x(r, c, n)``;
- its feature vector flattens each last-layer map column-major (row fastest),
  where convprop flattens (map, row, column).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convprop.errors import ConvpropError, ModelError, short_reason
from convprop.fileio import atomic_open
from convprop.maths.layers import MeanPool
from convprop.maths.network import Network


def kernels_from_toolbox(k: np.ndarray) -> np.ndarray:
    """Toolbox kernels ``K(:, :, i, j)`` (k, k, in, out) -> convprop weight (out, in, k, k)."""
    k = np.asarray(k)
    if k.ndim == 3:  # one input map: the size-1 third dimension was dropped
        k = k[:, :, None, :]
    return np.ascontiguousarray(k[::-1, ::-1].transpose(3, 2, 0, 1))


def kernels_to_toolbox(w: np.ndarray) -> np.ndarray:
    """convprop weight (out, in, k, k) -> toolbox kernels (k, k, in, out)."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0)[::-1, ::-1])


def features_from_toolbox(ffw: np.ndarray, feature_shape: tuple[int, int, int]) -> np.ndarray:
    """Toolbox ``ffW`` (outputs, features in (map, column, row) order) -> convprop's
    (map, row, column) order."""
    c, h, w = feature_shape
    ffw = np.asarray(ffw)
    return np.ascontiguousarray(
        ffw.reshape(-1, c, w, h).transpose(0, 1, 3, 2).reshape(ffw.shape[0], -1))


def features_to_toolbox(weight: np.ndarray, feature_shape: tuple[int, int, int]) -> np.ndarray:
    """convprop ``out.weight`` -> toolbox ``ffW`` (each map flattened column-major)."""
    c, h, w = feature_shape
    weight = np.asarray(weight)
    return np.ascontiguousarray(
        weight.reshape(-1, c, h, w).transpose(0, 1, 3, 2).reshape(weight.shape[0], -1))


def images_from_toolbox(x: np.ndarray) -> np.ndarray:
    """Toolbox batch ``x(r, c, n)`` -> convprop (N, H, W)."""
    return np.ascontiguousarray(np.asarray(x).transpose(2, 0, 1))


# --------------------------------------------------------------- import / export

#: The variable ``export_matlab`` writes and ``import_matlab`` looks for first.
VARIABLE = "cnn"


def import_matlab(path: str | os.PathLike, variable: str | None = None) -> Network:
    """A DeepLearnToolbox network saved with ``save('net.mat', 'cnn')`` (-v7 or -v6) ->
    a float64 sigmoid :class:`Network` with the same outputs.

    The struct is what ``cnnsetup``/``cnntrain`` build: ``layers`` a cell array whose
    first entry has ``type`` 'i', then 'c' (``outputmaps``, ``kernelsize``, kernels
    ``k{i}{j}``, biases ``b{j}``) and 's' (``scale``, or ``xscale`` = ``yscale``) layers;
    ``ffW`` (outputs, features) and ``ffb`` (outputs, 1).  The input size is read from
    ``layers{1}.a{1}`` when ``cnntrain`` left a batch there, else it is the square size
    whose features match ``ffW``.  Kernels are rotated 180 degrees and ``ffW``'s columns
    reordered (see the module docstring); nothing else changes.  Every fault is a
    one-line ModelError naming the file and the field."""
    sio = _scipy_io()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"MATLAB file {str(p)!r} does not exist" if not p.exists()
                         else f"MATLAB file {str(p)!r} is not a file")
    try:
        data = sio.loadmat(p, struct_as_record=False, squeeze_me=False)
    except NotImplementedError:
        raise ModelError(f"{p}: MATLAB -v7.3 (HDF5) files are not supported; save with "
                         f"-v7 or -v6") from None
    except Exception as exc:  # scipy raises many kinds for a damaged file
        raise ModelError(f"{p}: not a readable MATLAB .mat file ({short_reason(exc)})") from None
    cnn = _find_network(data, variable, p)
    return _ToolboxReader(p).network(cnn)


def export_matlab(net: Network, path: str | os.PathLike, version: str = "7") -> None:
    """Write ``net`` as a DeepLearnToolbox struct ``cnn`` that ``cnnff`` runs (atomically).

    The toolbox has sigmoid conv layers, mean-pooling and sigmoid outputs only; any other
    network is refused with a ModelError.  ``version`` '7' (compressed, MATLAB's default)
    or '6'.  Pooling layers carry ``scale`` and also ``xscale``, ``yscale``,
    ``meanFilter`` so both the older and the newer ``cnnff`` accept them.  Parameters
    are written as doubles."""
    sio = _scipy_io()
    if version not in ("6", "7"):
        raise ModelError(f"MATLAB file version must be '6' or '7', got {version!r}")
    faults = []
    if net.activation.name != "sigmoid":
        faults.append(f"activation {net.activation.name!r}")
    if net.loss.name != "mse":
        faults.append(f"loss {net.loss.name!r}")
    if net.input_shape[0] != 1:
        faults.append(f"{net.input_shape[0]} input channels")
    faults += [f"max-pooling ({name})" for name, layer in zip(net.layer_names, net.layers)
               if layer.kind == "pool" and not isinstance(layer, MeanPool)]
    fc = [name for name, layer in zip(net.layer_names, net.layers) if layer.kind == "fc"]
    if fc:
        faults.append(f"hidden fully connected layers ({', '.join(fc)})")
    extra = [k for k in net.params if k.rsplit(".", 1)[-1] not in ("weight", "bias")
             and not k.startswith("fc")]
    faults += [f"parameter {k}" for k in extra]
    if faults:
        raise ModelError(f"the DeepLearnToolbox supports sigmoid conv layers, mean-pooling "
                         f"and one grey input only (no colour, no hidden fully connected "
                         f"layers); this network has {', '.join(faults)}")
    layers = [{"type": "i"}]
    maps = 1
    for name, layer in zip(net.layer_names, net.layers):
        if layer.kind == "conv":
            w = np.asarray(net.params[f"{name}.weight"], dtype=np.float64)
            b = np.asarray(net.params[f"{name}.bias"], dtype=np.float64)
            kt = kernels_to_toolbox(w)  # (k, k, in, out)
            k = _cell([_cell([np.ascontiguousarray(kt[:, :, i, j]) for j in range(w.shape[0])])
                       for i in range(w.shape[1])])
            layers.append({"type": "c", "outputmaps": float(layer.out_maps),
                           "kernelsize": float(layer.k), "k": k,
                           "b": _cell([float(v) for v in b])})
            maps = layer.out_maps
        elif layer.kind == "pool":
            s = float(layer.scale)
            layers.append({"type": "s", "scale": s, "xscale": s, "yscale": s,
                           "meanFilter": np.full((layer.scale, layer.scale), 1 / s ** 2),
                           "b": _cell([0.0] * maps)})
    cnn = {
        "layers": _cell(layers, column=True),
        "ffW": features_to_toolbox(np.asarray(net.params["out.weight"], np.float64),
                                   net.feature_shape),
        "ffb": np.asarray(net.params["out.bias"], np.float64).reshape(-1, 1),
    }
    with atomic_open(path, "wb") as fh:
        sio.savemat(fh, {VARIABLE: cnn}, do_compression=version == "7", oned_as="column")


def _scipy_io():
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a runtime dependency
        raise ConvpropError("MATLAB files need scipy: pip install scipy") from None
    return scipy.io


def _cell(items: list, column: bool = False) -> np.ndarray:
    """A MATLAB cell array (1 x n, or n x 1) for scipy.io.savemat."""
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out.flat[i] = item
    return out


def _find_network(data: dict, variable: str | None, path: Path):
    names = [k for k in data if not k.startswith("__")]
    if variable is not None:
        if variable not in data:
            raise ModelError(f"{path}: no variable {variable!r} (it holds {', '.join(names)})")
        return data[variable]
    if VARIABLE in data:
        return data[VARIABLE]
    found = [k for k in names if _fields(data[k]) and "layers" in _fields(data[k])]
    if len(found) == 1:
        return data[found[0]]
    raise ModelError(f"{path}: no DeepLearnToolbox network in it (a struct 'cnn' with "
                     f"'layers', 'ffW', 'ffb'); variables: {', '.join(names) or 'none'}")


def _fields(value) -> list[str]:
    v = value
    if isinstance(v, np.ndarray) and v.dtype == object and v.size == 1:
        v = v.flat[0]
    return list(getattr(v, "_fieldnames", None) or [])


class _ToolboxReader:
    """Reads the toolbox struct (scipy's mat_struct objects) with errors naming fields."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str):
        raise ModelError(f"{self.path}: {where}: {what}")

    def struct(self, value, where: str):
        if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
            value = value.flat[0]
        if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.names is None \
                and value.dtype != object:
            self.fail(where, "is a number, expected a struct")
        if not hasattr(value, "_fieldnames"):
            self.fail(where, "is not a struct")
        return value

    def field(self, s, name: str, where: str):
        if name not in s._fieldnames:
            self.fail(where, f"has no field {name!r}")
        return getattr(s, name)

    def cell(self, value, where: str) -> list:
        if not (isinstance(value, np.ndarray) and value.dtype == object):
            self.fail(where, "is not a cell array")
        if value.ndim > 2 or min(value.shape, default=0) > 1:
            self.fail(where, f"is a {'x'.join(map(str, value.shape))} cell, expected a row "
                             f"or column")
        return list(value.ravel(order="F"))

    def number(self, value, where: str) -> float:
        arr = np.asarray(value)
        if arr.dtype == object or arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
            self.fail(where, "is not a number")
        x = float(arr.ravel()[0])
        if not np.isfinite(x):
            self.fail(where, f"is {x}")
        return x

    def integer(self, value, where: str) -> int:
        x = self.number(value, where)
        if x != int(x) or x < 1:
            self.fail(where, f"must be a positive integer, got {x:g}")
        return int(x)

    def matrix(self, value, shape: tuple[int, ...], where: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) \
                or np.iscomplexobj(arr):
            self.fail(where, "is not a real numeric array")
        if arr.shape != shape:
            self.fail(where, f"has size {'x'.join(map(str, arr.shape))}, expected "
                             f"{'x'.join(map(str, shape))}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            self.fail(where, "holds non-finite values (NaN or Inf)")
        return arr

    def text(self, value, where: str) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind != "U":
            self.fail(where, "is not a string")
        return "".join(arr.ravel().tolist())

    def network(self, cnn) -> Network:
        s = self.struct(cnn, "cnn")
        layers = [self.struct(v, f"cnn.layers{{{i + 1}}}")
                  for i, v in enumerate(self.cell(self.field(s, "layers", "cnn"),
                                                  "cnn.layers"))]
        if not layers or self.text(self.field(layers[0], "type", "cnn.layers{1}"),
                                   "cnn.layers{1}.type") != "i":
            self.fail("cnn.layers{1}", "must be the input layer (type 'i')")
        tokens, convs, maps = [], [], 1
        for n, layer in enumerate(layers[1:], start=2):
            where = f"cnn.layers{{{n}}}"
            kind = self.text(self.field(layer, "type", where), f"{where}.type")
            if kind == "c":
                out = self.integer(self.field(layer, "outputmaps", where), f"{where}.outputmaps")
                k = self.integer(self.field(layer, "kernelsize", where), f"{where}.kernelsize")
                kc = self.cell(self.field(layer, "k", where), f"{where}.k")
                if len(kc) != maps:
                    self.fail(f"{where}.k", f"has {len(kc)} entries, expected {maps} (one per "
                                            f"input map)")
                w = np.empty((out, maps, k, k))
                for i, row in enumerate(kc):
                    row = self.cell(row, f"{where}.k{{{i + 1}}}")
                    if len(row) != out:
                        self.fail(f"{where}.k{{{i + 1}}}", f"has {len(row)} kernels, expected "
                                                           f"{out} (outputmaps)")
                    for j, kern in enumerate(row):
                        m = self.matrix(kern, (k, k), f"{where}.k{{{i + 1}}}{{{j + 1}}}")
                        w[j, i] = m[::-1, ::-1]  # convn's true convolution -> correlation
                bc = self.cell(self.field(layer, "b", where), f"{where}.b")
                if len(bc) != out:
                    self.fail(f"{where}.b", f"has {len(bc)} entries, expected {out}")
                b = np.array([self.number(v, f"{where}.b{{{j + 1}}}") for j, v in enumerate(bc)])
                convs.append((w, b))
                tokens.append(f"{out}c{k}")
                maps = out
            elif kind == "s":
                tokens.append(f"{self.scale(layer, where)}s")
            else:
                self.fail(f"{where}.type", f"is {kind!r}; the toolbox's layers are 'c' and 's'")
        spec = "-".join(tokens)
        ffw = np.asarray(self.field(s, "ffW", "cnn"))
        if ffw.ndim != 2:
            self.fail("cnn.ffW", "is not a matrix")
        shape = self.input_size(layers[0], spec, ffw.shape[1])
        try:
            net = Network(spec, "sigmoid", shape, ffw.shape[0], "float64")
        except ConvpropError as exc:
            self.fail("cnn.layers", f"do not form a network ({exc})")
        ffw = self.matrix(ffw, (net.n_outputs, int(np.prod(net.feature_shape))), "cnn.ffW")
        ffb = self.matrix(self.field(s, "ffb", "cnn"), (net.n_outputs, 1), "cnn.ffb")
        for n, (w, b) in enumerate(convs, start=1):
            net.params[f"conv{n}.weight"] = w
            net.params[f"conv{n}.bias"] = b
        net.params["out.weight"] = features_from_toolbox(ffw, net.feature_shape)
        net.params["out.bias"] = ffb[:, 0]
        net.config = {"imported_from": str(self.path), "format": "DeepLearnToolbox"}
        net.summary = {}
        if "rL" in s._fieldnames and np.asarray(s.rL).size:
            rl = np.asarray(s.rL, dtype=np.float64).ravel()
            net.summary = {"iterations": int(rl.size), "final_rL": float(rl[-1])}
        return net

    def scale(self, layer, where: str) -> int:
        if "scale" in layer._fieldnames:
            return self.integer(layer.scale, f"{where}.scale")
        x = self.integer(self.field(layer, "xscale", where), f"{where}.xscale")
        y = self.integer(self.field(layer, "yscale", where), f"{where}.yscale")
        if x != y:
            self.fail(where, f"xscale {x} differs from yscale {y}; convprop pools squares")
        return x

    def input_size(self, first, spec: str, n_features: int) -> tuple[int, int]:
        """The input map size: from a batch ``cnntrain`` left in layers{1}.a{1}, else the
        square size whose feature count matches ffW's columns."""
        if "a" in first._fieldnames:
            a = self.cell(first.a, "cnn.layers{1}.a")
            if a and np.asarray(a[0]).ndim >= 2:
                return tuple(int(d) for d in np.asarray(a[0]).shape[:2])
        for size in range(1, 4097):
            try:
                net = Network(spec, "sigmoid", (size, size), 1, "float64")
            except ConvpropError:
                continue
            if int(np.prod(net.feature_shape)) == n_features:
                return size, size
        self.fail("cnn.ffW", f"{n_features} columns fit no square input for layers {spec!r}")
        raise AssertionError  # unreachable


