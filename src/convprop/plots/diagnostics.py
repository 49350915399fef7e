"""The gradient-flow figure: per-layer diagnostics of one or more runs side by side.

One column per run, one row per metric (``diagnostics.csv``, see
:mod:`convprop.training.diagnostics`): mean |δ| (equations 4, 11, 12), mean |∂L/∂W|
(equations 9 and 13), the saturated and dead fractions, and any learnable activation
parameter, each over iterations with one line per layer.

- A layer has one colour in every column (``conv1`` is the same colour in the sigmoid run
  and in the relu run), and one legend above the figure lists every layer of every run.
- On the log-scale rows (``delta``, ``grad``) an exact zero cannot be drawn; it is drawn
  on a dotted floor line below the smallest positive value of the row, labelled ``0``,
  with a marker at each zero, so a stalled run's column is not empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convprop.errors import ConvpropError
from convprop.training.diagnostics import METRICS, read_diagnostics

LOG_METRICS = ("delta", "grad")
LABELS = {"delta": "mean |δ|", "grad": "mean |∂L/∂W|", "saturated": "saturated fraction",
          "dead": "dead fraction"}
#: The zero floor of a log row sits this factor below the row's smallest positive value.
FLOOR_FACTOR = 0.1
ZERO_LABEL = "0"


def layer_colours(data: Sequence[dict]) -> dict[str, str]:
    """One colour per layer name, in first-seen order over every run and metric (network
    order: input side first), from matplotlib's ``tab10`` cycle."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(layer for d in data for series in d.values() for layer in series))
    cmap = colormaps["tab10"]
    return {name: _hex(cmap(i % 10)) for i, name in enumerate(names)}


def zero_floor(series: Sequence[np.ndarray]) -> float:
    """Where exact zeros go on a log axis: ``FLOOR_FACTOR`` times the smallest positive value
    among ``series`` (1e-12 when none is positive)."""
    positive = [y[y > 0] for y in series if np.any(y > 0)]
    smallest = min(float(p.min()) for p in positive) if positive else 1e-11
    return smallest * FLOOR_FACTOR


def diagnostics_figure(run_dirs: Sequence[str | os.PathLike],
                       metrics: Sequence[str] | None = None,
                       labels: Sequence[str] | None = None):
    """The figure (not saved) of :func:`plot_diagnostics`; returns a matplotlib Figure."""
    from convprop.plots.figures import pyplot

    plt = pyplot()
    if not run_dirs:
        raise ConvpropError("no runs to plot")
    data = [read_diagnostics(d) for d in run_dirs]
    present = [m for m in METRICS if any(m in d for d in data)]
    extra = sorted({m for d in data for m in d} - set(METRICS))
    rows = list(metrics) if metrics else present + extra
    unknown = [m for m in rows if not any(m in d for d in data)]
    if unknown:
        raise ConvpropError(f"metric {unknown[0]!r} is in none of the runs (they have: "
                            f"{', '.join(present + extra)})")
    labels = list(labels) if labels else [_run_label(d) for d in run_dirs]
    colours = layer_colours([{m: d.get(m, {}) for m in rows} for d in data])
    fig, axes = plt.subplots(len(rows), len(data), squeeze=False, sharex="col",
                             sharey="row", figsize=(3.6 * len(data) + 0.6, 2.3 * len(rows) + 0.5))
    for i, metric in enumerate(rows):
        floor = None
        if metric in LOG_METRICS:
            floor = zero_floor([ys for d in data for _, ys in d.get(metric, {}).values()])
        for j, (d, label) in enumerate(zip(data, labels)):
            ax = axes[i][j]
            _draw_cell(ax, d.get(metric, {}), colours, floor)
            if metric in ("saturated", "dead"):
                ax.set_ylim(-0.03, 1.03)
            if metric not in d:
                ax.text(0.5, 0.5, "n/a for this activation", ha="center", va="center",
                        transform=ax.transAxes, color="0.5", fontsize=8)
            if i == 0:
                ax.set_title(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(LABELS.get(metric, metric), fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=c, lw=1.6, label=name) for name, c in colours.items()]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8), fontsize=8,
               frameon=False, title="layer (same colour in every column)", title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def _draw_cell(ax, series: dict, colours: dict[str, str], floor: float | None) -> None:
    """One axis: a line per layer; on a log row (``floor`` given) zeros drawn on the floor."""
    for layer, (xs, ys) in series.items():
        if floor is None:
            ax.plot(xs, ys, color=colours[layer], label=layer, lw=1.3)
            continue
        zero = ys <= 0
        ax.plot(xs, np.where(zero, floor, ys), color=colours[layer], label=layer, lw=1.3)
        if zero.any():
            ax.plot(xs[zero], np.full(int(zero.sum()), floor), ls="none", marker="v", ms=3.5,
                    color=colours[layer], label=f"_{layer} = 0")
    if floor is not None:
        ax.set_yscale("log")
        ax.axhline(floor, color="0.45", ls=":", lw=0.9, label="_zero floor")
        ax.text(0.005, floor, ZERO_LABEL, transform=ax.get_yaxis_transform(), ha="left",
                va="bottom", fontsize=7, color="0.3")


def plot_diagnostics(run_dirs: Sequence[str | os.PathLike], out_png: str | os.PathLike,
                     metrics: Sequence[str] | None = None,
                     labels: Sequence[str] | None = None) -> Path:
    """One column per run, one row per metric, one line per layer over iterations (rows
    share their y axis, log scale for ``delta`` and ``grad``); ``labels`` name the columns
    (default: folder name, activation and lr).  Written atomically; returns the path."""
    import matplotlib.pyplot as plt

    from convprop.plots.figures import _save

    fig = diagnostics_figure(run_dirs, metrics, labels)
    out = Path(out_png)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _save(fig, out)
    finally:
        plt.close(fig)
    return out


def _run_label(run_dir: str | os.PathLike) -> str:
    """Folder name, plus the run's activation and learning rate from summary.json."""
    import json

    p = Path(run_dir)
    label = p.name or str(p)
    try:
        cfg = json.loads((p / "summary.json").read_text())["config"]
        label += f"\n{cfg['activation']}, lr {cfg['lr']:g}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return label


def _hex(rgba) -> str:
    from matplotlib.colors import to_hex

    return to_hex(rgba)
