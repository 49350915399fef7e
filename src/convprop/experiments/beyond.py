"""Beyond the paper: learned activation parameters and today's training defaults.

Run lists and report tables for ``convprop reproduce`` (and ``scripts/beyond_paper.py``):

- :func:`learned_runs` / :func:`render_learned`: the paper grid-searched k (tanh + k·z)
  and α (leaky ReLU); here they are learned by back-propagation (``tanh-linear-learned``,
  ``prelu``, per map and per layer) and set beside the grid-searched best
  (``tanh-linear:0.13``, ``leaky-relu:0.05``).
- :func:`modern_runs` / :func:`render_modern`: the paper's setting (sigmoid, squared
  error, plain SGD, toolbox initialisation) against one change at a time
  (cross-entropy, momentum, Adam, He initialisation) and all of them with ReLU,
  each after 600 iterations and after one epoch.
- :func:`plot_diagnostics`: the gradient-flow figure of a set of runs trained with
  ``diagnostics`` > 0 (from :mod:`convprop.training.diagnostics`).

``results`` arguments are run summaries: the dicts ``run_training`` returns (or
``summary.json`` contents), or run folders holding a ``summary.json``.  Nothing here
depends on how the runs were executed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.experiments.stats import mean_sd
from convprop.plots.diagnostics import plot_diagnostics
from convprop.training.config import TrainConfig

__all__ = ["LEARNED", "MODERN", "DIAGNOSTIC_RUNS", "learned_runs", "render_learned",
           "modern_runs", "render_modern", "plot_diagnostics", "diagnostic_run", "run_name",
           "load_summaries", "learned_values"]

# (activation, what it is): grid-searched best from the paper, then learned variants
LEARNED = (
    ("tanh-linear:0.13", "grid-searched best k (paper)"),
    ("tanh-linear-learned:map:0", "k learned per map, from 0"),
    ("tanh-linear-learned:layer:0", "k learned per layer, from 0"),
    ("leaky-relu:0.05", "grid-searched best α (paper)"),
    ("prelu:map:0.25", "α learned per map, from 0.25 (He et al.)"),
    ("prelu:layer:0.25", "α learned per layer, from 0.25"),
)

# (label, options changed from the paper's setting)
MODERN = (
    ("paper: sigmoid, MSE, SGD lr 1, toolbox init", {}),
    ("+ softmax cross-entropy (lr 0.5)", {"loss": "cross-entropy", "lr": 0.5}),
    ("+ momentum 0.9 (lr 0.1)", {"optimizer": "momentum", "momentum": 0.9, "lr": 0.1}),
    ("+ Adam (lr 0.003)", {"optimizer": "adam", "lr": 0.003}),
    ("+ He init", {"init": "he"}),
    ("ReLU + He + cross-entropy + Adam (lr 0.001)",
     {"activation": "relu", "init": "he", "loss": "cross-entropy", "optimizer": "adam",
      "lr": 0.001}),
)


# (folder, column title, activation, conv-bias start, input scale) of the gradient-flow
# figure: dead units need a push (conv biases start at -0.5, so nearly every conv2 unit
# starts off for every image), saturation needs large inputs (pixels x 20).
DIAGNOSTIC_RUNS = (
    ("relu-bias-0.5", "relu, conv biases start -0.5", "relu", -0.5, 1.0),
    ("leaky-bias-0.5", "leaky-relu:0.05, biases -0.5", "leaky-relu:0.05", -0.5, 1.0),
    ("tanh-x1", "tanh, inputs x1", "tanh", 0.0, 1.0),
    ("tanh-x20", "tanh, inputs x20", "tanh", 0.0, 20.0),
)


def learned_runs(seeds: Iterable[int], iterations: int = 600, data: str | None = None,
                 lr_tanh: float = 0.1, lr_relu: float = 1.0,
                 batch_size: int = 50) -> list[TrainConfig]:
    """One run per (activation of :data:`LEARNED`, seed), the paper's network; the tanh
    family at ``lr_tanh`` and the ReLU family at ``lr_relu`` (the learning rates
    ``convprop reproduce`` uses for the k sweep, Figure 6, and the α sweep, Figure 9)."""
    return [TrainConfig(activation=act, lr=lr_tanh if act.startswith("tanh") else lr_relu,
                        batch_size=batch_size, iterations=iterations, seed=int(s),
                        data=data).validate()
            for act, _ in LEARNED for s in seeds]


def modern_runs(seeds: Iterable[int], iterations: int = 600, data: str | None = None,
                epoch: bool = True, batch_size: int = 50) -> list[TrainConfig]:
    """One run per (row of :data:`MODERN`, length, seed): ``iterations`` long and, with
    ``epoch``, one epoch long."""
    base = TrainConfig(batch_size=batch_size, data=data)
    lengths = [{"iterations": iterations}] + ([{"epochs": 1}] if epoch else [])
    return [TrainConfig.from_dict({**base.to_dict(), **change, **length, "seed": int(s)})
            .validate()
            for _, change in MODERN for length in lengths for s in seeds]


def diagnostic_run(config: TrainConfig, out_dir: str | os.PathLike, dataset: Any,
                   conv_bias: float = 0.0, input_scale: float = 1.0) -> dict[str, Any]:
    """Train with ``config`` (its ``diagnostics`` > 0) after setting every conv bias to
    ``conv_bias`` and scaling the pixels (in [0, 1]) by ``input_scale``; write
    ``diagnostics.csv`` and ``summary.json`` into ``out_dir``.  Returns the summary."""
    from convprop.fileio import ensure_dir, write_json
    from convprop.maths.network import Network
    from convprop.training import diagnostics
    from convprop.training.trainer import Trainer, error_rate, to_float

    config.validate()
    if not config.diagnostics:
        raise ConvpropError("diagnostic_run needs config.diagnostics > 0")
    out = ensure_dir(out_dir)
    net = Network.from_spec(config.spec, activation=config.activation,
                            input_shape=dataset.train_x.shape[1:],
                            n_outputs=getattr(dataset, "n_classes", 10), seed=config.seed,
                            dtype=config.dtype, init=config.init, loss=config.loss)
    for name in net.params:
        if name.startswith("conv") and name.endswith(".bias"):
            net.params[name] = np.full(net.params[name].shape, conv_bias)

    def scaled(x):
        return to_float(x, net.dtype) * np.asarray(input_scale, dtype=net.dtype)

    trainer = Trainer(net, scaled(dataset.train_x), dataset.train_y, config)
    result = trainer.run()
    summary = {"status": result.status, "config": config.to_dict(),
               "conv_bias": conv_bias, "input_scale": input_scale,
               "final_rL": result.final_rl if result.iterations else None,
               "test_error": None if result.status == "diverged" else
               error_rate(net, scaled(dataset.test_x), dataset.test_y)}
    diagnostics.write_diagnostics(out / diagnostics.FILENAME, trainer.diagnostics)
    write_json(out / "summary.json", summary)
    return summary


def run_name(config: TrainConfig | dict[str, Any]) -> str:
    """The folder name of a run of these lists: the sweep's run name
    (:func:`convprop.experiments.runs.run_name`), which spells every option that tells
    runs apart, data, spec and dtype included, so results on the sample are never
    taken for results on full MNIST."""
    from convprop.experiments.runs import Run

    c = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    return Run.from_config(c).name


def load_summaries(results: Iterable[dict[str, Any] | str | os.PathLike]
                   ) -> list[dict[str, Any]]:
    """Summaries from dicts or run folders (their ``summary.json``)."""
    out = []
    for r in results:
        if isinstance(r, dict):
            out.append(r)
            continue
        p = Path(r) / "summary.json"
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError) as exc:
            raise ConvpropError(f"cannot read run summary {str(p)!r}: {exc}") from None
    return out


def render_learned(results: Iterable[dict[str, Any] | str | os.PathLike]) -> str:
    """Markdown table: per activation of :data:`LEARNED`, the learned parameter values
    (per conv layer, mean over seeds; per-map ranges), final rL and test error (mean ±
    sd over seeds)."""
    summaries = load_summaries(results)
    lines = ["| activation | what | lr | learned values (mean over seeds; per-map range) | "
             "final rL | test error | runs |", "|---|---|---|---|---|---|---|"]
    for act, what in LEARNED:
        group = [s for s in summaries if s["config"]["activation"] == act]
        if not group:
            continue
        lrs = "/".join(f"{v:g}" for v in sorted({s["config"]["lr"] for s in group}))
        lines.append(f"| `{act}` | {what} | {lrs} | {learned_values(group)} | "
                     f"{mean_sd([s.get('final_rL') for s in group], 1.0, 4)} | "
                     f"{mean_sd(_percent(group), 1.0, 2, '%')} | {_runs(group)} |")
    return "\n".join(lines) + "\n"


def render_modern(results: Iterable[dict[str, Any] | str | os.PathLike]) -> str:
    """Markdown table: per row of :data:`MODERN`, the test error after the fixed number of
    iterations and after one epoch (mean ± sd over seeds), and final rL."""
    summaries = load_summaries(results)
    its = sorted({s["config"]["iterations"] for s in summaries if s["config"].get("iterations")})
    head = [f"test error after {i} iterations" for i in its] + ["test error after 1 epoch",
                                                                "rL after 1 epoch"]
    lines = ["| setting | " + " | ".join(head) + " | seeds |",
             "|---|" + "---|" * (len(head) + 1)]
    for label, _ in MODERN:
        group = [s for s in summaries if _modern_label(s["config"]) == label]
        if not group:
            continue
        cells = []
        for i in its:
            cells.append(mean_sd(_percent([s for s in group
                                            if s["config"].get("iterations") == i]), 1.0, 2, "%"))
        epoch = [s for s in group if not s["config"].get("iterations")]
        cells.append(mean_sd(_percent(epoch), 1.0, 2, "%"))
        cells.append(mean_sd([s.get("final_rL") for s in epoch], 1.0, 4))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_runs(epoch)} |")
    return "\n".join(lines) + "\n"


def _modern_label(config: dict[str, Any]) -> str | None:
    base = TrainConfig().to_dict()
    for label, change in MODERN:
        want = {**base, **change}
        keys = ("activation", "loss", "optimizer", "init", "lr")
        if all(config.get(k) == want[k] for k in keys) and (
                config.get("optimizer") != "momentum"
                or config.get("momentum") == want["momentum"]):
            return label
    return None


def learned_values(group: list[dict[str, Any]]) -> str:
    values: dict[str, list[np.ndarray]] = {}
    for s in group:
        for name, v in (s.get("activation_params") or {}).items():
            values.setdefault(name, []).append(np.asarray(v, dtype=float))
    if not values:
        return "(fixed)"
    parts = []
    for name, arrs in values.items():
        mean = float(np.mean([a.mean() for a in arrs]))
        text = f"{name} {mean:.3f}"
        if max(a.size for a in arrs) > 1:
            lo, hi = min(a.min() for a in arrs), max(a.max() for a in arrs)
            text += f" [{lo:.2f}, {hi:.2f}]"
        parts.append(text)
    return "; ".join(parts)


def _percent(group: list[dict[str, Any]]) -> list[float | None]:
    return [None if s.get("test_error") is None else 100 * s["test_error"] for s in group]


def _runs(group: list[dict[str, Any]]) -> str:
    bad = [s["status"] for s in group if s.get("status") not in ("completed", None)]
    return str(len(group)) + (f" ({', '.join(sorted(set(bad)))}: {len(bad)})" if bad else "")
