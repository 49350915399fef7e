"""Beyond the paper, in ``convprop reproduce``: three report sections
(:mod:`convprop.experiments.sections`) built on :mod:`convprop.experiments.beyond`,
after the paper's (:mod:`convprop.experiments.paper`).

- ``learned``: the learned activation parameters (:data:`beyond.LEARNED`: ``prelu`` and
  ``tanh-linear-learned``, per map and per layer) beside the grid-searched best of the
  same report — the k of Figure 6 and the α of Figure 9 with the lowest mean final rL,
  read from the results, not assumed — at the learning rates of those sweeps
  (``FIG6_LR`` for the tanh family, ``FIG9_LR`` for the ReLU family): learned values,
  final rL and test error (mean ± sd over seeds), and a paired t-test of final rL
  against the grid-searched best.  Always on.
- ``diagnostics``: one gradient-flow figure (:func:`beyond.plot_diagnostics`) per sweep
  (Figures 6, 7, 9) from its seed-0 runs, which record diagnostics every
  ``ReproduceOptions.diagnostics`` iterations (``convprop reproduce --diagnostics N``, default
  25; 0 = off).  Diagnostics come from a separate traced pass, so they do not change a
  run's numbers, and :attr:`Run.setting` ignores them.
- ``modern`` (``ReproduceOptions.modern``, ``convprop reproduce --modern``): one row per
  :data:`beyond.MODERN` baseline, test error after the report's iterations and after one
  epoch (two runs per baseline and seed: the 600-iteration one and the one-epoch one).

Every number is read from the stored run folders, so ``convprop report`` rebuilds the
same sections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convprop.experiments import beyond
from convprop.experiments.paper import FIG6_LR, FIG9_LR, ReproduceOptions, paper_sections
from convprop.experiments.runs import Run
from convprop.experiments.sections import ClaimSection
from convprop.experiments.stats import Results, SettingStats, mean_sd, paired_t
from convprop.maths.activations import format_number as fmt
from convprop.training.config import TrainConfig

SWEEP_KEYS = ("fig6", "fig7", "fig9")


def _run(config: TrainConfig, o: ReproduceOptions) -> Run:
    """A TrainConfig of :mod:`beyond` as a run of this reproduction (its spec and dtype)."""
    return Run.from_config(config).replace(spec=o.spec, dtype=o.dtype)


def _summary(results: Results, run: Run) -> dict[str, Any] | None:
    try:
        return json.loads((results.out_dir / "runs" / run.name / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _best(stats: list[SettingStats]) -> SettingStats | None:
    ranked = sorted(stats, key=lambda s: s.mean_rl())
    return ranked[0] if ranked and ranked[0].usable else None


@dataclass
class LearnedSection:
    """Learned k and α against the grid-searched best of Figures 6 and 9."""

    fig6: ClaimSection
    fig9: ClaimSection
    learned: list[tuple[str, str, list[Run]]]  # (activation, what, runs over seeds)
    key: str = "learned"
    title: str = "Beyond the paper: learned k and α against the grid-searched best"

    def plan(self) -> list[Run]:
        return [r for _, _, runs in self.learned for r in runs]

    def render(self, results: Results, out_dir: Path) -> str:
        best = {"tanh": _best(self.fig6.stats(results)),
                "relu": _best(self.fig9.stats(results))}
        lines = ["| activation | what | lr | learned values (mean over seeds; per-map range) "
                 "| final rL | test error % | vs grid-searched best (Δ final rL, paired t) |",
                 "|---|---|---|---|---|---|---|"]
        for family, fig in (("tanh", "Figure 6"), ("relu", "Figure 9")):
            b = best[family]
            if b is None:
                lines.append(f"| n/a | grid-searched best of {fig}: no setting completed in "
                             f"every seed | | | | | |")
            else:
                lines.append(self._row(results, b.setting.activation,
                                       f"grid-searched best of {fig}", b.runs, None))
            for act, what, runs in self.learned:
                if act.startswith("tanh") == (family == "tanh"):
                    lines.append(self._row(results, act, what, runs, b))
        return "\n\n".join([
            f"## {self.title}",
            f"The paper picks k and α by grid search. Here they are learned by "
            f"back-propagation (`tanh-linear-learned`, `prelu`; one value per feature map or "
            f"per layer), at the learning rates of the sweeps they replace ({fmt(FIG6_LR)} "
            f"as in Figure 6, {fmt(FIG9_LR)} as in Figure 9), and set beside the best "
            f"setting those sweeps found in this report (lowest mean final rL; for α over "
            f"every value run). Learned values: per conv layer, the mean over maps and seeds, "
            f"with the range over maps and seeds for per-map parameters. The last column "
            f"compares final rL with the grid-searched best over the same seeds (negative: "
            f"the learned activation is better).",
            "\n".join(lines)])

    @staticmethod
    def _row(results: Results, act: str, what: str, runs: list[Run],
             best: SettingStats | None) -> str:
        summaries = [s for s in (_summary(results, r) for r in runs) if s is not None]
        rl = [results.value(r, "final_rL") for r in runs]
        err = [results.value(r, "test_error") for r in runs]
        statuses = [(results.row(r) or {}).get("status") for r in runs]
        bad = sum(s in ("stalled", "diverged") for s in statuses)
        compare = ""
        if best is not None:
            pairs = [(a, b) for a, b in zip(rl, best.rl) if a is not None and b is not None]
            if len(pairs) >= 2:
                diff, p = paired_t([a for a, _ in pairs], [b for _, b in pairs])
                compare = f"{diff:+.4f} (p = {p:.3g}, {len(pairs)} seeds)"
            elif pairs:
                compare = f"{pairs[0][0] - pairs[0][1]:+.4f} (1 seed)"
        values = beyond.learned_values(summaries) if summaries else "n/a"
        lr = fmt(runs[0].lr) if runs else ""
        seeds = f"{sum(v is not None for v in rl)}/{len(runs)} seeds" + (
            f", {bad} stalled or diverged" if bad else "")
        return (f"| `{act}` | {what} ({seeds}) | {lr} | {values} | {mean_sd(rl)} | "
                f"{mean_sd(err, 100, 2)} | {compare} |")


_DIAGNOSTIC_TEXT = {
    "fig6": "Saturation: the fraction of activations with |f'(z)| below 1% of the largest "
            "slope 1 + k. Since f'(z) >= k, no unit can saturate once k > 0.01: only k = 0 "
            "(plain tanh) can lose its error signal this way; compare its δ with the others'.",
    "fig7": "Saturation against the learning rate: with k = 0.13 the conv layers keep "
            "|f'| >= 0.13 and cannot saturate, but a large step can saturate the sigmoid "
            "output layer (`out`); once all of it is saturated, almost no error reaches the "
            "layers below (mean |δ| of conv1 near 0) and the run stalls.",
    "fig9": "Dead units: the fraction of units whose output is 0 (z <= 0) for the whole "
            "batch. With α = 0 they pass no gradient at all; with α > 0 they still pass α "
            "times the error. The dead fraction and δ per α show how many units each "
            "coefficient keeps alive.",
}


@dataclass
class DiagnosticsSection:
    """One gradient-flow figure per sweep, from its seed-0 runs with diagnostics."""

    sweeps: list[ClaimSection]
    key: str = "diagnostics"
    title: str = "Beyond the paper: gradient flow in the three sweeps"

    @staticmethod
    def traced(sweep: ClaimSection) -> list[Run]:
        return [r for r in sweep.runs if r.diagnostics]

    def plan(self) -> list[Run]:
        return [r for s in self.sweeps for r in self.traced(s)]

    def render(self, results: Results, out_dir: Path) -> str:
        parts = [f"## {self.title}",
                 "Per layer over iterations (seed 0 of every setting; one column per "
                 "setting): mean |δ|, the error signal of equations (4), (11), (12); mean "
                 "|∂L/∂W|; and the saturated (tanh family) or dead (ReLU family) fraction of "
                 "units; `out` is the sigmoid output layer every run shares. See "
                 "docs/beyond.md for the definitions."]
        for sweep in self.sweeps:
            runs = [r for r in self.traced(sweep)
                    if (results.out_dir / "runs" / r.name / "diagnostics.csv").is_file()]
            if not runs:
                continue
            name = f"{sweep.key}_diagnostics.png"
            beyond.plot_diagnostics([results.out_dir / "runs" / r.name for r in runs],
                                    out_dir / name,
                                    labels=[sweep.label(r.setting) for r in runs])
            parts += [f"### {sweep.title.partition(':')[0]}",
                      f"![{sweep.title}: gradient flow]({name})",
                      _DIAGNOSTIC_TEXT.get(sweep.key, ""),
                      _last_values(sweep, runs, results)]
        return "\n\n".join(p for p in parts if p) if len(parts) > 2 else ""


def _last_values(sweep: ClaimSection, runs: list[Run], results: Results) -> str:
    """Table: per setting, the saturated or dead fraction of each conv layer and the mean
    |δ| of the first, at the first and the last recorded iteration."""
    from convprop.training.diagnostics import read_diagnostics

    data = [read_diagnostics(results.out_dir / "runs" / r.name) for r in runs]
    metric = "dead" if any("dead" in d for d in data) else "saturated"
    layers = list(dict.fromkeys(layer for d in data for layer in d.get(metric, {})))
    if not layers:
        return ""
    def cell(d, m, layer, digits):
        xy = d.get(m, {}).get(layer)
        return "n/a" if xy is None else f"{xy[1][0]:.{digits}g} → {xy[1][-1]:.{digits}g}"

    delta_layer = layers[0]
    lines = ["| setting | " + " | ".join(f"{metric} {layer}" for layer in layers)
             + f" | mean \\|δ\\| {delta_layer} |", "|---|" + "---|" * (len(layers) + 1)]
    for r, d in zip(runs, data):
        lines.append(f"| {sweep.label(r.setting)} | "
                     + " | ".join(cell(d, metric, layer, 2) for layer in layers)
                     + f" | {cell(d, 'delta', delta_layer, 3)} |")
    its = next(iter(data[0][metric].values()))[0]
    return (f"First → last recorded iteration ({its[0]} → {its[-1]}), seed 0:\n\n"
            + "\n".join(lines))


@dataclass
class ModernSection:
    """Today's defaults (:data:`beyond.MODERN`), one row each."""

    runs: list[Run] = field(default_factory=list)
    iterations: int = 600
    key: str = "modern"
    title: str = "Beyond the paper: modern baselines"

    def plan(self) -> list[Run]:
        return list(self.runs)

    def render(self, results: Results, out_dir: Path) -> str:
        summaries = [s for s in (_summary(results, r) for r in self.runs) if s is not None]
        table = beyond.render_modern(summaries) if summaries else "No run has finished."
        return "\n\n".join([
            f"## {self.title}",
            f"The paper's setting (sigmoid, squared error, plain SGD at rate 1, the toolbox's "
            f"initialisation) against one change at a time and all of them together; each "
            f"trained for {self.iterations} iterations and, separately, for one epoch, "
            f"mean ± sd over seeds.", table.rstrip()])


def sections(o: ReproduceOptions) -> list:
    """The sections beyond the paper, in report order (after the paper's)."""
    sweeps = {s.key: s for s in paper_sections(o) if s.key in SWEEP_KEYS}
    seeds = range(o.seeds)
    learned: dict[str, list[Run]] = {}
    for config in beyond.learned_runs(seeds, o.iterations, o.data, lr_tanh=FIG6_LR,
                                      lr_relu=FIG9_LR, batch_size=o.batch_size):
        learned.setdefault(config.activation, []).append(_run(config, o))
    what = dict(beyond.LEARNED)
    out: list = [LearnedSection(sweeps["fig6"], sweeps["fig9"],
                                [(a, what[a], runs) for a, runs in learned.items()
                                 if a.startswith(("prelu", "tanh-linear-learned"))]),
                 DiagnosticsSection([sweeps[k] for k in SWEEP_KEYS])]
    if o.modern:
        out.append(ModernSection([_run(c, o) for c in beyond.modern_runs(
            seeds, o.iterations, o.data, batch_size=o.batch_size)], o.iterations))
    return out
