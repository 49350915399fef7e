"""Figures in the paper's style (matplotlib, Agg backend; imported only when drawing).

- :func:`rl_curves`: error (rL) over iterations, one line per setting, the mean over
  seeds with a band from the lowest to the highest seed (Figures 6, 7, 9).
- :func:`activation_figure`: f and f' side by side for several activations (Figures
  4, 5, 8).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib  # a core dependency: figures are the paper's output

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    from convprop.fileio import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=120,
                    bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def rl_curves(curves: Mapping[str, Sequence[np.ndarray]], path: str | os.PathLike,
              title: str = "") -> Path:
    """One line per label: the mean rL over its runs (cut to the shortest run, so a
    diverged seed shortens its setting's line) and a min-max band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, runs in curves.items():
        finite = [np.asarray(c, float) for c in runs if len(c)]
        if not finite:
            continue
        n = min(len(c) for c in finite)
        stack = np.vstack([c[:n] for c in finite])
        x = np.arange(1, n + 1)
        (line,) = ax.plot(x, stack.mean(axis=0), lw=1.4,
                          label=f"{label}" + (f" ({len(finite)} seeds)" if len(finite) > 1
                                              else ""))
        if len(finite) > 1:
            ax.fill_between(x, stack.min(axis=0), stack.max(axis=0), color=line.get_color(),
                            alpha=0.18, lw=0)
    ax.set_xlabel("iteration (one mini-batch)")
    ax.set_ylabel("error (smoothed loss rL)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


#: Line widths and dash patterns of successive curves in :func:`activation_figure`.
LINE_WIDTHS = (3.2, 2.3, 1.6, 1.1, 0.8)
LINE_STYLES = ("-", (0, (6, 2)), (0, (2, 1.5)), (0, (6, 2, 1.5, 2)), "-")


def activation_figure(names: Sequence[str], path: str | os.PathLike, title: str = "",
                      x_range: float = 4.0) -> Path:
    """f(x) (left) and f'(x) (right) of each activation on one figure."""
    from convprop.maths.activations import get_activation

    plt = pyplot()
    acts = [get_activation(n) for n in names]
    x = np.linspace(-x_range, x_range, 801)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, act in enumerate(acts):
        y = act(x)
        # Curves that coincide (f' of relu and leaky-relu is 1 for every x > 0) stay
        # visible: each later line is thinner, dashed differently and drawn on top.
        style = {"lw": LINE_WIDTHS[i % len(LINE_WIDTHS)],
                 "ls": LINE_STYLES[i % len(LINE_STYLES)], "zorder": 2 + i}
        (line,) = left.plot(x, y, label=act.name, **style)
        right.plot(x, act.derivative(x, y), color=line.get_color(), label=act.name, **style)
    left.set_title("f(x)", fontsize=10)
    right.set_title("f'(x)", fontsize=10)
    for ax in (left, right):
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_xlabel("x")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


#: The paper's activation figures: file stem -> (title, activations).
PAPER_ACTIVATION_FIGURES = {
    "fig4_tanh": ("Figure 4: tanh and its derivative", ["tanh"]),
    "fig5_tanh_linear": ("Figure 5: tanh(x) + k·x for several k",
                         ["tanh-linear:0", "tanh-linear:0.05", "tanh-linear:0.13",
                          "tanh-linear:0.2"]),
    "fig8_relu": ("Figure 8: ReLU and leaky ReLU",
                  ["relu", "leaky-relu:0.05", "leaky-relu:0.2"]),
}
