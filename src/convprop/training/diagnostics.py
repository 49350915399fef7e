"""Gradient-flow diagnostics: does the error signal reach every layer, and where does it die?

Recorded per layer every N training iterations (``convprop train --diagnostics N``)
from :meth:`Network.trace` on the training batch of that iteration (before its update):

- ``delta``: mean |δ| — for the output layer δ^L of equation (4), for a conv layer
  δ = f'(z) ∘ dL/da of equation (11), for a pooling layer the error dL/da of equation
  (12) that it receives (and up-samples);
- ``grad``: mean |∂L/∂W| of the layer's weights (equations 9 and 13);
- ``saturated`` (sigmoid/tanh family only): the fraction of unit activations (over
  images, maps and positions) with |f'(z)| < 1% of the activation's largest slope —
  such a unit passes almost no error back;
- ``dead`` (ReLU family only): the fraction of units (map, position) whose
  pre-activation was <= 0 for *every* image of the batch, i.e. whose output was 0 for
  the whole batch under ``relu`` (no gradient reaches its weights); under
  ``leaky-relu``/``prelu`` the same units still pass α times the error;
- ``alpha`` / ``k``: the mean of a learnable activation parameter.

``diagnostics.csv`` in the run folder is in long format, one row per value:
``iteration,layer,metric,value`` (e.g. ``100,conv1,dead,0.25``), written atomically at
the end of the run.  :func:`plot_diagnostics` draws one or more runs side by side.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.fileio import write_csv

HEADER = ("iteration", "layer", "metric", "value")
METRICS = ("delta", "grad", "saturated", "dead")
SATURATION_FRACTION = 0.01  # |f'(z)| below this fraction of max |f'| counts as saturated
FILENAME = "diagnostics.csv"


def record(net: Any, trace: Any, iteration: int) -> list[tuple[int, str, str, float]]:
    """The diagnostics rows ``(iteration, layer, metric, value)`` of one trace."""
    rows = []
    for layer, rec in zip(net.layers, trace.layers):
        err = rec.delta if rec.delta is not None else rec.d_out
        if err is not None:
            rows.append((iteration, rec.name, "delta", float(np.mean(np.abs(err)))))
        if "weight" in rec.grads:
            rows.append((iteration, rec.name, "grad",
                         float(np.mean(np.abs(rec.grads["weight"])))))
        act = getattr(layer, "activation", None)
        if act is None or rec.slope is None:
            continue
        if act.saturating:
            small = np.abs(rec.slope) < SATURATION_FRACTION * act.max_slope
            rows.append((iteration, rec.name, "saturated", float(np.mean(small))))
        if act.rectifier:
            # z <= 0 <=> a <= 0 for relu/leaky-relu/prelu with alpha >= 0
            off = np.all(rec.a <= 0, axis=0)
            rows.append((iteration, rec.name, "dead", float(np.mean(off))))
        for pname, value in act.params.items():
            rows.append((iteration, rec.name, pname, float(np.mean(value))))
    return rows


def write_diagnostics(path: str | os.PathLike, rows: Sequence[tuple]) -> None:
    """Write rows as ``diagnostics.csv`` (long format), atomically."""
    write_csv(path, HEADER, ((i, layer, m, repr(float(v))) for i, layer, m, v in rows))


def read_diagnostics(path: str | os.PathLike) -> dict[str, dict[str, tuple[np.ndarray,
                                                                             np.ndarray]]]:
    """``diagnostics.csv`` (or a run folder holding one) -> {metric: {layer: (iterations,
    values)}}, layers in first-seen order."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise ConvpropError(f"no diagnostics in {str(path)!r}: expected {p} (train with "
                            f"`convprop train --diagnostics N`)")
    out: dict[str, dict[str, tuple[list, list]]] = {}
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            if tuple(next(reader, ())) != HEADER:
                raise ConvpropError(f"{p}: not a diagnostics file (header must be "
                                    f"{','.join(HEADER)})")
            for n, row in enumerate(reader, start=2):
                if len(row) != 4:
                    raise ConvpropError(f"{p}: line {n} has {len(row)} fields, expected 4")
                it, layer, metric, value = row
                xs, ys = out.setdefault(metric, {}).setdefault(layer, ([], []))
                xs.append(int(it))
                ys.append(float(value))
    except ValueError as exc:
        raise ConvpropError(f"{p}: bad number ({exc})") from None
    except OSError as exc:
        raise ConvpropError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    return {m: {layer: (np.asarray(xs), np.asarray(ys)) for layer, (xs, ys) in d.items()}
            for m, d in out.items()}


_LABELS = {"delta": "mean |δ|", "grad": "mean |∂L/∂W|", "saturated": "saturated fraction",
           "dead": "dead fraction"}


def plot_diagnostics(run_dirs: Sequence[str | os.PathLike], out_png: str | os.PathLike,
                     metrics: Sequence[str] | None = None,
                     labels: Sequence[str] | None = None) -> Path:
    """One column per run, one row per metric, one line per layer, over iterations.

    Rows share their y axis (log scale for ``delta`` and ``grad``) so runs compare at a
    glance.  ``labels`` name the columns (default: folder name and activation).  The
    figure is written atomically; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convprop.fileio import atomic_open

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
    fig, axes = plt.subplots(len(rows), len(data), squeeze=False, sharex="col",
                             sharey="row", figsize=(3.6 * len(data) + 0.6, 2.3 * len(rows)))
    for j, (d, label) in enumerate(zip(data, labels)):
        for i, metric in enumerate(rows):
            ax = axes[i][j]
            for layer, (xs, ys) in d.get(metric, {}).items():
                ax.plot(xs, ys, label=layer, lw=1.3)
            if metric in ("delta", "grad"):
                ax.set_yscale("log")
            if metric in ("saturated", "dead"):
                ax.set_ylim(-0.03, 1.03)
            if metric not in d:
                ax.text(0.5, 0.5, "n/a for this activation", ha="center", va="center",
                        transform=ax.transAxes, color="0.5", fontsize=8)
            if i == 0:
                ax.set_title(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(_LABELS.get(metric, metric), fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("iteration")
            if d.get(metric) and j == next(k for k, e in enumerate(data) if e.get(metric)):
                ax.legend(fontsize=7, loc="best")  # once per row: same layers in every run
            ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
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
