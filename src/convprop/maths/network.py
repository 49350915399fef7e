"""The network: layers built from a toolbox-style architecture string, composed.

``6c5-2s-12c5-2s`` reads as DeepLearnToolbox's ``cnnsetup`` layers: ``Nc K`` a
convolution to N maps with a K x K kernel, ``Ss`` mean-pooling with scale S,
``Sm`` max-pooling with scale S; ``Nf`` a hidden fully connected layer of N units with
the network's activation (after every conv/pool layer; ``300f-100f`` alone is a
multilayer perceptron); a fully connected output layer always follows.

The input is (C, H, W): C maps of H x W, e.g. (3, 32, 32) for RGB; (H, W) means one
grey channel.  A conv layer's equation (13) then sums over the C input maps.

Parameters (``Network.params``, in layer order):

- ``conv{i}.weight`` (out_maps, in_maps, k, k), cross-correlation orientation,
  ``conv{i}.bias`` (out_maps,), i = 1, 2, ... counting conv layers only;
- ``fc{i}.weight`` (N, inputs), ``fc{i}.bias`` (N,), i = 1, 2, ... counting fc
  layers, inputs the flattened maps (map, row, column) or the previous fc layer's units;
- ``out.weight`` (n_outputs, features), ``out.bias`` (n_outputs,), features in
  (map, row, column) order;
- with a learnable activation (``prelu``, ``tanh-linear-learned``), also
  ``conv{i}.alpha`` or ``conv{i}.k``, (out_maps,) per map or (1,) per layer, and
  ``fc{i}.alpha`` / ``fc{i}.k``, (N,) per unit or (1,) per layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import numpy as np

from convprop.errors import ConvpropError, SpecError
from convprop.maths import compiling, kernels, split, team, tracing
from convprop.maths.activations import Activation, get_activation
from convprop.maths.layers import Conv, Dense, MaxPool, MeanPool, fused_code, to_chwn
from convprop.maths.losses import get_loss, non_integer_label, one_hot
from convprop.maths.parallel import batch_parts, parallel_map, single_threaded_blas
from convprop.maths.parallel import get_num_threads as get_num_threads  # re-exported
from convprop.maths.parallel import set_num_threads as set_num_threads  # re-exported
from convprop.maths.tracing import LayerTrace as LayerTrace  # re-exported
from convprop.maths.tracing import Trace as Trace  # re-exported

DEFAULT_SPEC = "6c5-2s-12c5-2s"
DTYPES = ("float32", "float64")
INITS = ("dlt", "he")

_TOKEN = re.compile(r"^(?:(?P<maps>\d{1,9})c(?P<k>\d{1,9})|(?P<scale>\d{1,9})(?P<pool>[sm])"
                    r"|(?P<units>\d{1,9})f)$")


def parse_spec(spec: str) -> list[tuple[str, int, int]]:
    """``"6c5-2s-100f"`` -> ``[("conv", 6, 5), ("mean", 2, 0), ("fc", 100, 0)]``;
    pooling entries are ``("mean" | "max", scale, 0)``, hidden fully connected layers
    ``("fc", units, 0)``.  Raises SpecError naming the bad token, or a conv/pool layer
    after an fc layer (its units have no maps to convolve)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"architecture spec must be a non-empty string like "
                        f"'{DEFAULT_SPEC}', got {spec!r}")
    layers = []
    for token in spec.strip().lower().split("-"):
        m = _TOKEN.match(token.strip())
        if m is None:
            raise SpecError(f"bad layer {token!r} in spec {spec!r}: expected e.g. '6c5' "
                            f"(6 maps, 5x5 kernel), '2s' (mean-pool 2), '2m' (max-pool 2) "
                            f"or '100f' (fully connected, 100 units)")
        if m["units"] is not None:
            if int(m["units"]) < 1:
                raise SpecError(f"bad layer {token!r} in spec {spec!r}: units must be >= 1")
            layers.append(("fc", int(m["units"]), 0))
            continue
        if layers and layers[-1][0] == "fc":
            raise SpecError(f"bad layer {token!r} in spec {spec!r}: conv and pooling layers "
                            f"must come before the fully connected ('f') layers")
        if m["maps"] is not None:
            maps, k = int(m["maps"]), int(m["k"])
            if maps < 1 or k < 1:
                raise SpecError(f"bad layer {token!r} in spec {spec!r}: maps and kernel "
                                f"size must be >= 1")
            layers.append(("conv", maps, k))
        else:
            scale = int(m["scale"])
            if scale < 1:
                raise SpecError(f"bad layer {token!r} in spec {spec!r}: scale must be >= 1")
            layers.append(("mean" if m["pool"] == "s" else "max", scale, 0))
    return layers

def get_dtype(dtype: Any) -> np.dtype:
    """``"float32"`` / ``"float64"`` (or the NumPy types) as a dtype; anything else, None
    included (NumPy would read None as float64), is a SpecError."""
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise SpecError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dt


class ParamDict(MutableMapping):
    """name -> live parameter array.  Assigning ``params[name] = value`` copies the
    value into the existing array (shape checked), so the network sees the change and
    every reference to the array stays valid."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __setitem__(self, name: str, value: Any) -> None:
        target = self._arrays.get(name)
        if target is None:
            raise KeyError(f"no parameter {name!r}; the network has {list(self._arrays)}")
        if value is target:  # ``params[k] -= g``: the array is already updated in place
            return
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ConvpropError(f"parameter {name}: shape {value.shape} does not fit "
                                f"{target.shape}")
        target[...] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("parameters cannot be removed from a network")

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def items(self):  # the dict's own views: read-only, faster than Mapping's
        return self._arrays.items()

    def values(self):
        return self._arrays.values()

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        return "ParamDict(" + ", ".join(f"{k}: {v.shape}" for k, v in self.items()) + ")"


class Network:
    """A CNN: conv/pool layers and hidden fully connected layers from a spec, then a
    fully connected output layer.

    Build it with :meth:`from_spec`; ``forward`` gives outputs, ``loss_and_grads`` the
    loss and every parameter's gradient by back-propagation (equations 1-14)."""

    slice_bytes = 256  # images per inference slice x bytes per value (see forward)
    part_images: int | None = None  # images per training part at most: part_limit()

    def __init__(self, spec: str, activation: str | Activation = "sigmoid",
                 input_shape: Sequence[int] = (28, 28), n_outputs: int = 10,
                 dtype: Any = "float64", loss: str = "mse"):
        self.spec = spec
        self.activation = get_activation(activation)
        self.dtype = get_dtype(dtype)
        self.loss = get_loss(loss)
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise SpecError(f"input_shape must be (H, W) or (C, H, W), got {input_shape!r}")
        if not (isinstance(n_outputs, (int, np.integer)) and n_outputs >= 1):
            raise SpecError(f"n_outputs must be a positive integer, got {n_outputs!r}")
        self.input_shape: tuple[int, int, int] = shape
        self.n_outputs = int(n_outputs)

        self.layers: list[Any] = []
        self.layer_names: list[str] = []
        self.class_names: list[str] | None = None  # set from the data set / model file
        counts = {"conv": 0, "pool": 0, "fc": 0}
        n_in = 0
        for kind, a, b in parse_spec(spec):
            if kind == "fc":
                n_in = int(np.prod(shape)) if not n_in else n_in
                layer = Dense(n_in, a, self.activation.for_layer(a, self.dtype), self.dtype,
                              kind="fc")
                counts["fc"] += 1
                self.layers.append(layer)
                self.layer_names.append(f"fc{counts['fc']}")
                n_in = a
                continue
            c, h, w = shape
            if kind == "conv":
                if b > h or b > w:
                    raise SpecError(f"spec {spec!r}: kernel {b}x{b} of conv layer "
                                    f"{counts['conv'] + 1} is larger than its {h}x{w} input")
                # one activation instance per layer: learnable ones own their parameters
                layer: Any = Conv(c, a, b, self.activation.for_layer(a, self.dtype),
                                  self.dtype)
                counts["conv"] += 1
                name = f"conv{counts['conv']}"
            else:
                if h % a or w % a:
                    raise SpecError(f"spec {spec!r}: layer size must be integer: {h}x{w} maps "
                                    f"do not divide by pooling scale {a}")
                layer = MeanPool(a) if kind == "mean" else MaxPool(a)
                counts["pool"] += 1
                name = f"pool{counts['pool']}"
            shape = layer.output_shape(shape)
            self.layers.append(layer)
            self.layer_names.append(name)
        self.feature_shape = shape  # the last conv/pool layer's maps (C, H, W)
        n_features = n_in or int(np.prod(shape))
        out_act = get_activation(self.loss.output_activation)
        self.layers.append(Dense(n_features, self.n_outputs, out_act, self.dtype))
        self.layer_names.append("out")
        # Steps of the fast path: (first layer, mean-pool scale fused into a conv or 1).
        self._steps: list[tuple[int, int]] = []
        i = 0
        while i < len(self.layers):
            fuse = (self.layers[i].kind == "conv" and i + 1 < len(self.layers)
                    and isinstance(self.layers[i + 1], MeanPool))
            self._steps.append((i, self.layers[i + 1].scale if fuse else 1))
            i += 2 if fuse else 1
        self.params = ParamDict({
            f"{lname}.{pname}": arr
            for lname, layer in zip(self.layer_names, self.layers)
            for pname, arr in layer.params.items()
        })

    @classmethod
    def from_spec(cls, spec: str = DEFAULT_SPEC, activation: str | Activation = "sigmoid",
                  input_shape: Sequence[int] = (28, 28), n_outputs: int = 10, seed: int = 0,
                  dtype: Any = "float64", init: str = "dlt", loss: str = "mse") -> Network:
        """Build the network and initialise it, seeded (same seed, same weights)."""
        net = cls(spec, activation, input_shape, n_outputs, dtype, loss)
        net.initialize(seed, init)
        return net

    def initialize(self, seed: int = 0, init: str = "dlt") -> None:
        """``dlt``: DeepLearnToolbox's ``cnnsetup``: weights uniform in
        ±sqrt(6/(fan_in+fan_out)), conv fan_in = in_maps·k², fan_out = out_maps·k².
        ``he`` (He et al. 2015, as PyTorch's ``kaiming_uniform_`` with gain sqrt 2):
        uniform in ±sqrt(6/fan_in), variance 2/fan_in.  Fully connected layers (hidden
        and output): fan_in = inputs, fan_out = units.  Biases 0; learnable activation
        parameters back to their initial value."""
        if init not in INITS:
            raise SpecError(f"unknown init {init!r} (known: {', '.join(INITS)})")
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            if not layer.params:
                continue
            w = layer.params["weight"]
            if layer.kind == "conv":  # fc and dense: n_in, n_out
                fan_in, fan_out = layer.in_maps * layer.k ** 2, layer.out_maps * layer.k ** 2
            else:
                fan_in, fan_out = layer.n_in, layer.n_out
            r = np.sqrt(6.0 / (fan_in + fan_out) if init == "dlt" else 6.0 / fan_in)
            w[...] = rng.uniform(-r, r, size=w.shape)
            layer.params["bias"][...] = 0
            layer.activation.reset_params()

    # ----------------------------------------------------------------- inputs
    def _inputs(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise ConvpropError(f"inputs must be real numbers, got dtype {x.dtype}")
        if x.ndim == 3 and self.input_shape[0] == 1:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            want = self.input_shape[1:] if self.input_shape[0] == 1 else self.input_shape
            raise ConvpropError(f"input batch has shape {x.shape}, expected (N, "
                                f"{', '.join(map(str, want))})")
        if x.shape[0] == 0:
            raise ConvpropError("input batch is empty")
        return x.astype(self.dtype, copy=False)

    def _targets(self, y: Any, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 1:
            if y.shape[0] != n:
                raise ConvpropError(f"{y.shape[0]} labels for {n} inputs")
            bad = non_integer_label(y)
            if bad is not None:
                raise ConvpropError(f"labels must be integers (or give one-hot targets), got "
                                    f"{bad} (dtype {y.dtype})")
            y = y.astype(np.int64, copy=False)
            # one pass: a negative label, seen as unsigned, is beyond any class count
            if y.size and int(y.view(np.uint64).max()) >= self.n_outputs:
                raise ConvpropError(f"labels must be in 0..{self.n_outputs - 1}, got "
                                    f"{y.min()}..{y.max()}")
            return one_hot(self.n_outputs, self.dtype).take(y, axis=0)
        if y.shape != (n, self.n_outputs):
            raise ConvpropError(f"targets have shape {y.shape}, expected ({n},) labels or "
                                f"({n}, {self.n_outputs}) one-hot")
        if y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)):
            raise ConvpropError(f"one-hot targets must be finite real numbers, got dtype "
                                f"{y.dtype}" + ("" if y.dtype.kind not in "biuf" else
                                                " with non-finite values"))
        return y.astype(self.dtype, copy=False)

    # ---------------------------------------------------------- computation
    def forward(self, x: Any) -> np.ndarray:
        """Outputs o (N, n_outputs) for inputs x (N, H, W) or (N, C, H, W).

        Inference runs in slices of :attr:`slice_bytes` / itemsize images (64 in float32,
        32 in float64): the kernels' rows then stay in the L1/L2 caches, which a
        1000-image batch would overflow.  With :func:`set_num_threads` > 1 the slices run
        in parallel."""
        x = self._inputs(x)
        step = max(1, self.slice_bytes // x.dtype.itemsize)
        o = np.empty((x.shape[0], self.n_outputs), dtype=self.dtype)

        def run_slice(i: int) -> None:
            oi, _ = self._run(to_chwn(x[i : i + step]), keep=False)
            o[i : i + step] = oi.T

        parallel_map(run_slice, range(0, x.shape[0], step))
        return o

    def _run(self, a: np.ndarray, keep: bool) -> tuple[np.ndarray, list[Any]]:
        """The layers in the CHWN layout (a convolution and the mean-pooling after it as
        one fused step); outputs (n_outputs, N) and one cache per layer (None for a
        pooling layer fused into its convolution)."""
        caches: list[Any] = [None] * len(self.layers)
        for i, pool in self._steps:
            layer = self.layers[i]
            if pool > 1:
                a, caches[i] = layer.forward(a, pool=pool, keep=keep)
            else:
                a, caches[i] = layer.forward(a, keep=keep)
        return a, caches

    def forward_with_caches(self, x: Any) -> tuple[np.ndarray, list[Any]]:
        """Outputs o (N, n_outputs) and the caches :meth:`backward` needs."""
        o, caches = self._run(to_chwn(self._inputs(x)), keep=True)
        return o.T, caches

    def backward(self, dout: np.ndarray, caches: list[Any]) -> dict[str, np.ndarray]:
        """Back-propagate dL/do (N, n_outputs) through every layer, last to first; return
        all gradients (keys and order as ``params``).  The first layer skips its input
        error."""
        grads: dict[str, np.ndarray] = {}
        d = np.asarray(dout).T
        for i, _ in reversed(self._steps):
            d, g = self.layers[i].backward(d, caches[i], need_dx=i > 0)
            for pname, arr in g.items():
                grads[f"{self.layer_names[i]}.{pname}"] = arr
        return {name: grads[name] for name in self.params}

    def loss_and_grads(self, x: Any, y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """Loss L on the batch and dL/dθ for every parameter θ (fresh arrays each call).

        The batch runs in parts of at most :meth:`part_limit` images (with 32: 50 as
        26 + 24, 256 as 8 x 32): a part's layers stay in the caches however large the
        batch.  With L_p the loss of part p (N_p images), L = Σ_p (N_p/N) L_p and dL/dθ =
        Σ_p (N_p/N) dL_p/dθ, summed in part order.  With :func:`set_num_threads` n > 1
        the parts run on a team of n - 1 worker processes and the caller (``team.py``),
        else on n threads; a batch of one part is shared by the team layer by layer
        (``split.py``).  The split depends only on N and the network, so the result is
        the same, bit for bit, however many run it."""
        x = self._inputs(x)
        n = x.shape[0]
        t = self._targets(y, n)
        bounds = batch_parts(n, self.part_limit())
        shares = [(b - a) / n for a, b in zip(bounds, bounds[1:])]

        def part(p: int) -> tuple[float, dict[str, np.ndarray]]:
            return self._part(x[bounds[p]:bounds[p + 1]], t[bounds[p]:bounds[p + 1]],
                              shares[p])

        def alone() -> list:  # every part in this process (inside the guard below:
            if len(bounds) == 2:  # parallel_map's own nests, costs nothing)
                return [self._part(x, t, None)]  # the whole batch: no share to weigh by
            return parallel_map(part, range(len(bounds) - 1))

        with single_threaded_blas():  # the same bits for any BLAS thread count
            results = team.run_parts(self, part, alone, x, t, bounds, shares,
                                     get_num_threads())
        loss, grads = results[0]
        for more_loss, more in results[1:]:
            loss += more_loss
            for name, g in more.items():
                grads[name] += g
        return float(loss), grads

    def part_limit(self) -> int:
        """Images per training part at most: :attr:`part_images` if set, else 64 for a
        network the team can share layer by layer (``split.eligible``: direct conv
        kernels, fused activations; the paper's network costs 11.6 us per image in a part
        of 50 against 13.2 in parts of 24-26, float32), else 32 (``32c5-2s-64c5-2s``:
        163 us per image in parts of 32 against 188 in one of 50)."""
        if self.part_images is not None:
            return self.part_images
        return 64 if split.eligible(self) else 32

    def _part(self, x: np.ndarray, t: np.ndarray, share: float | None
              ) -> tuple[float, dict[str, np.ndarray]]:
        """(share · L_p, share · dL_p/dθ) for one part: inputs x (N_p, ...) in the
        network's dtype, one-hot targets t (N_p, n_outputs); share None: a whole batch."""
        o, caches = self._run(to_chwn(x), keep=True)
        loss, dout = self.loss(o.T, t)
        if share is None:
            return float(loss), self.backward(dout, caches)
        return loss * share, self.backward(dout * share, caches)

    def kernel_codes(self) -> list[int]:
        """The fused kernel codes (``kernels.SIGMOID``, ...) this network's conv layers
        run; a generic activation runs the identity kernel."""
        codes = []
        for layer in self.layers:
            if layer.kind == "conv":
                fused = fused_code(layer.activation)
                codes.append(fused[0] if fused is not None else kernels.IDENTITY)
        return sorted(set(codes))

    def compile_kernels(self, progress: Any = None) -> bool:
        """Compile (or load from numba's disk cache) the kernels this network needs, for
        its dtype only (the im2col + GEMM path's only if a layer takes it);
        ``progress(message)`` is told "compiling kernels (first run only)" first if that
        compiles.  Returns whether it compiled."""
        gemm = any(getattr(layer, "gemm", False) for layer in self.layers)
        will = compiling.needs_compile(self.dtype, gemm)
        if will and progress is not None:
            progress("compiling kernels (first run only)")
        compiling.compile_kernels(self.dtype, self.kernel_codes(), gemm, cold=will)
        return will

    def trace(self, x: Any, y: Any) -> tracing.Trace:
        """One forward and backward pass on a batch, keeping what every layer saw.

        Gives the loss, outputs, gradients (as ``loss_and_grads``) and, per layer, its
        output ``a``, the error ``d_out`` = dL/da arriving from above and, for layers with
        an activation, ``slope`` = f'(z) and ``delta`` = f'(z) ∘ dL/da: δ of equations (4),
        (8) and (11).  For a pooling layer ``d_out`` is the error of equation (12), which
        the layer up-samples to the conv layer below.  The layers run one by one (no
        fusion) in their CHWN layout, as in training; only the records are transposed:
        arrays are (N, C, H, W) or (N, n)."""
        return tracing.trace(self, x, y)

    def loss_value(self, x: Any, y: Any) -> float:
        o = self.forward(x)
        return self.loss(o, self._targets(y, o.shape[0]))[0]

    def predict(self, x: Any, chunk: int = 1000) -> np.ndarray:
        """Predicted class per input (the arg-max output), computed ``chunk`` at a time."""
        x = np.asarray(x)
        out = [self.forward(x[i : i + chunk]).argmax(axis=1) for i in range(0, len(x), chunk)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    # ----------------------------------------------------------- describing
    def describe(self) -> list[dict[str, Any]]:
        """One dict per layer: name, kind, output shape, parameter count."""
        rows, shape = [], self.input_shape
        for name, layer in zip(self.layer_names, self.layers):
            shape = layer.output_shape(shape)
            rows.append({"name": name, "kind": layer.kind, "output_shape": shape,
                         "params": int(sum(p.size for p in layer.params.values()))})
        return rows

    @property
    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        return (f"Network({self.spec!r}, activation={self.activation.name!r}, "
                f"input_shape={self.input_shape}, n_outputs={self.n_outputs}, "
                f"dtype={self.dtype.name!r})")
