"""What the paper's Figures 1-3 sketch, for a real image: the learned kernels, every
layer's feature maps, and the errors back-propagation sends to each layer.

:func:`feature_data` runs :meth:`Network.trace` on one image and its label and keeps,
per layer, the output maps ``a`` and the error maps:

- conv layer l: δ^l = f'(z^l) ∘ up(δ^{l+1}) (equation 11);
- pooling layer: the error dL/da arriving from the layer above, i.e. Σ_j δ_j *full*
  rot180(k_ij) from a conv layer (equation 12), or W^T δ^L from the output layer (8);
- output layer: δ^L = (o - y) ∘ f'(z^L) (equation 4).

:func:`plot_features` draws them (matplotlib, Agg) into one PNG; drawing is kept apart
from the numbers so the numbers can be tested against ``trace``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from convprop.errors import ConvpropError
from convprop.fileio import atomic_open


@dataclass
class LayerMaps:
    name: str
    kind: str
    a: np.ndarray  # (C, H, W) maps, or (n,) outputs
    error: np.ndarray  # same shape: δ (conv, dense) or dL/da (pool)
    error_name: str  # how the error is labelled in the figure
    kernels: np.ndarray | None = None  # conv: (out, in, k, k), cross-correlation orientation


@dataclass
class FeatureData:
    image: np.ndarray  # (H, W) grey or (C, H, W) colour network input in [0, 1]
    label: int
    predicted: int
    outputs: np.ndarray  # (n_outputs,)
    loss: float
    layers: list[LayerMaps] = field(default_factory=list)


def feature_data(net, image: np.ndarray, label: int | None = None) -> FeatureData:
    """Trace one image (uint8 (H, W) grey or (C, H, W) colour, or floats in [0, 1])
    through ``net`` for ``label`` (default: the predicted class) and collect maps and
    errors.  Hidden fc layers keep their units as ``a`` and δ (equation 8)."""
    from convprop.training.trainer import to_float

    x = to_float(image, net.dtype)  # the pixel conversion of training
    o = net.forward(x[None])[0]
    predicted = int(o.argmax())
    if label is None:
        label = predicted
    if not (isinstance(label, (int, np.integer)) and 0 <= label < net.n_outputs):
        raise ConvpropError(f"label must be a digit/class 0..{net.n_outputs - 1}, got {label!r}")
    tr = net.trace(x[None], np.array([label]))
    layers = []
    for rec in tr.layers:
        if rec.kind == "pool":
            error, what = rec.d_out[0], "dL/da (eq. 12)"
        else:
            error = rec.delta[0]
            what = {"conv": "δ (eq. 11)", "fc": "δ (eq. 8)"}.get(rec.kind, "δ (eq. 4)")
        kernels = net.params[f"{rec.name}.weight"] if rec.kind == "conv" else None
        layers.append(LayerMaps(rec.name, rec.kind, rec.a[0], error, what,
                                None if kernels is None else np.array(kernels)))
    return FeatureData(x.astype(np.float64), int(label), predicted,
                       np.asarray(tr.outputs[0]), float(tr.loss), layers)


def plot_features(data: FeatureData, path: str | os.PathLike, title: str = "") -> None:
    """Draw ``data`` into one PNG at ``path`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = [lm for lm in data.layers if lm.kind not in ("dense", "fc")]
    ncols = max([12] + [lm.a.shape[0] for lm in maps])
    strips = [("top", 1.6)]
    for lm in maps:
        if lm.kernels is not None:
            rows = 1 if _rgb(lm) else min(lm.kernels.shape[1], 6)
            strips.append((("kernels", lm), 0.9 * rows))
        strips += [(("a", lm), 1.0), (("error", lm), 1.0)]
    fig = plt.figure(figsize=(ncols * 0.9 + 1.5, sum(h for _, h in strips) * 0.95 + 0.6),
                     layout="constrained")
    outer = fig.add_gridspec(len(strips), 1, height_ratios=[h for _, h in strips])
    for row, (what, _) in enumerate(strips):
        if what == "top":
            _top(fig, outer[row], data)
        elif what[0] == "kernels":
            _kernels(fig, outer[row], what[1], ncols)
        else:
            _maps(fig, outer[row], what[1], what[0], ncols)
    fig.suptitle(f"{title}  label {data.label}, predicted {data.predicted}, "
                 f"loss {data.loss:.4g}".strip(), fontsize=12)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    plt.close(fig)


def _top(fig, spec, data: FeatureData) -> None:
    out = next(lm for lm in data.layers if lm.kind == "dense")
    gs = spec.subgridspec(1, 3, width_ratios=[1, 2, 2])
    ax = fig.add_subplot(gs[0])
    if data.image.ndim == 3 and data.image.shape[0] == 3:
        ax.imshow(data.image.transpose(1, 2, 0).clip(0, 1))
    else:
        ax.imshow(data.image.reshape(data.image.shape[-2:]), cmap="gray", vmin=0, vmax=1)
    ax.set_title("input", fontsize=9)
    ax.axis("off")
    digits = np.arange(len(out.a))
    for k, (values, name) in enumerate(((out.a, "outputs o"), (out.error, out.error_name))):
        ax = fig.add_subplot(gs[k + 1])
        colors = ["tab:green" if d == data.label else "tab:gray" for d in digits]
        ax.bar(digits, values, color=colors)
        ax.set_xticks(digits)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(f"output layer: {name}", fontsize=9)


def _maps(fig, spec, lm: LayerMaps, what: str, ncols: int) -> None:
    arrs = lm.a if what == "a" else lm.error
    gs = spec.subgridspec(1, ncols)
    if what == "a":
        kw = {"cmap": "gray", "vmin": float(arrs.min()), "vmax": float(arrs.max())}
        name = f"{lm.name}: maps a"
    else:
        v = float(np.abs(arrs).max()) or 1.0
        kw = {"cmap": "RdBu_r", "vmin": -v, "vmax": v}
        name = f"{lm.name}: {lm.error_name}, |max| {v:.2g}"
    axes = []
    for j in range(arrs.shape[0]):
        ax = fig.add_subplot(gs[j])
        image = ax.imshow(arrs[j], **kw)
        axes.append(ax)
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    _colour_scale(fig, image, axes)


def _colour_scale(fig, image, axes) -> None:
    """A colour bar right of a row of maps that share one scale (``image``'s)."""
    bar = fig.colorbar(image, ax=axes, location="right", fraction=0.02, pad=0.01, aspect=8)
    bar.ax.tick_params(labelsize=6)


def _kernels(fig, spec, lm: LayerMaps, ncols: int) -> None:
    w = lm.kernels  # (out, in, k, k)
    v = float(np.abs(w).max()) or 1.0
    if _rgb(lm):  # a colour input: each kernel as one RGB patch, grey = 0
        gs = spec.subgridspec(1, ncols)
        for j in range(w.shape[0]):
            ax = fig.add_subplot(gs[0, j])
            ax.imshow((w[j].transpose(1, 2, 0) / (2 * v) + 0.5).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{lm.name}: RGB kernels\n(grey = 0)", fontsize=8, rotation=0,
                              ha="right", va="center")
        return
    rows = min(w.shape[1], 6)
    gs = spec.subgridspec(rows, ncols)
    axes = []
    for i in range(rows):
        for j in range(w.shape[0]):
            ax = fig.add_subplot(gs[i, j])
            image = ax.imshow(w[j, i], cmap="RdBu_r", vmin=-v, vmax=v)
            axes.append(ax)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and i == 0:
                more = f" (first {rows} of {w.shape[1]} inputs)" if w.shape[1] > rows else ""
                ax.set_ylabel(f"{lm.name}: kernels{more}\nrow = input map", fontsize=8,
                              rotation=0, ha="right", va="center")
    _colour_scale(fig, image, axes)


def _rgb(lm: LayerMaps) -> bool:
    """The first conv layer of a colour network: its kernels read R, G and B."""
    return lm.kernels is not None and lm.kernels.shape[1] == 3 and lm.name == "conv1"
