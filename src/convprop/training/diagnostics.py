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
the end of the run.  :func:`convprop.plots.diagnostics.plot_diagnostics` draws one or
more runs side by side.
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

