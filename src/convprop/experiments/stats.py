"""Statistics of stored results: per-setting means over seeds and the verdicts.

:class:`Results` reads a sweep folder (``summary.csv`` rows and each run's rL curve);
:func:`setting_stats` groups runs by setting (:attr:`Run.setting`); :func:`verdict`
decides a claim "this setting has the lowest final rL" by a paired t-test over seeds
(``scipy.stats.ttest_rel``) at level :data:`ALPHA`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convprop.errors import ConvpropError
from convprop.experiments.runs import Run
from convprop.training.trainer import read_metrics


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise ConvpropError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None



class Results:
    """Stored results of a sweep folder: rows of summary.csv and the rL curves."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.rows: dict[str, dict[str, str]] = {}
        if (self.out_dir / "summary.csv").is_file():
            self.rows = {r["run"]: r for r in read_summary(self.out_dir / "summary.csv")}
        self._curves: dict[str, np.ndarray] = {}

    def row(self, run: Run) -> dict[str, str] | None:
        return self.rows.get(run.name)

    def value(self, run: Run, column: str) -> float | None:
        """A numeric column of the run; None if missing, diverged or empty."""
        row = self.row(run)
        if row is None or row["status"] == "diverged" or row.get(column, "") == "":
            return None
        return float(row[column])

    def curve(self, run: Run) -> np.ndarray | None:
        """The run's rL per iteration (metrics.csv), None if it has not run."""
        if run.name not in self._curves:
            path = self.out_dir / "runs" / run.name / "metrics.csv"
            if not path.is_file():
                return None
            self._curves[run.name] = np.atleast_1d(read_metrics(path)["rL"])
        return self._curves[run.name]


@dataclass
class SettingStats:
    """One setting over its seeds: final rL and test error per seed (None = no value)."""

    setting: Run
    label: str
    runs: list[Run]
    rl: list[float | None]
    error: list[float | None]
    statuses: list[str]

    @property
    def n(self) -> int:
        return sum(s is not None for s in self.statuses)

    def count(self, status: str) -> int:
        return self.statuses.count(status)

    @property
    def usable(self) -> bool:
        """Every seed ran and none diverged (a stalled run still has its rL)."""
        return bool(self.runs) and all(v is not None for v in self.rl)

    def mean_rl(self) -> float:
        return float(np.mean(self.rl)) if self.usable else math.inf


def setting_stats(runs: Sequence[Run], results: Results,
                  label: Callable[[Run], str]) -> list[SettingStats]:
    groups: dict[Run, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    out = []
    for setting, members in groups.items():
        rows = [results.row(r) for r in members]
        out.append(SettingStats(setting, label(setting), members,
                                [results.value(r, "final_rL") for r in members],
                                [results.value(r, "test_error") for r in members],
                                [row["status"] if row else None for row in rows]))
    return out


def mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 4,
            unit: str = "") -> str:
    """``0.1234 ± 0.0100`` over the finite values (x ``scale``), one value alone, or n/a."""
    v = [scale * x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}{unit}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}{unit}"


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test over seeds (``scipy.stats.ttest_rel``): (mean of a - b, two-sided p).
    Fewer than two pairs: p = 1; no spread in the differences: p = 0 if they are not
    all zero, else 1."""
    from scipy.stats import ttest_rel

    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else 0.0, 1.0
    if float(d.std(ddof=1)) == 0:
        return float(d.mean()), 1.0 if d.mean() == 0 else 0.0
    return float(d.mean()), float(ttest_rel(a, b).pvalue)


ALPHA = 0.05  # significance level of the verdicts


def verdict(stats: Sequence[SettingStats], claimed: SettingStats | None) -> tuple[str, str]:
    """(holds | does not hold | inconclusive, reason) for "``claimed`` has the lowest
    final rL".  Compares the claimed setting with the measured best (or, when it is the
    best, with the runner-up) by a paired t-test over seeds at level 0.05."""
    if claimed is None or not claimed.runs:
        return "inconclusive", "the claimed setting was not run"
    bad = claimed.count("diverged") + claimed.count("stalled")
    if bad == len(claimed.runs):
        return "does not hold", (f"the claimed setting {claimed.label} stalled or diverged "
                                 f"in every seed")
    ranked = sorted(stats, key=lambda s: s.mean_rl())
    best = ranked[0]
    if not best.usable:
        return "inconclusive", "no setting completed in every seed"
    n = len(claimed.runs)
    if best is claimed:
        if len(ranked) == 1:
            return "inconclusive", "there is nothing to compare with"
        other = ranked[1]
        if not other.usable:
            return "holds", (f"{claimed.label} is best; every other setting diverged in "
                             f"some seed")
        if n < 2:
            return "inconclusive", (f"{claimed.label} is best, but in a single seed (no "
                                    f"spread to test)")
        diff, p = paired_t(claimed.rl, other.rl)
        if p < ALPHA:
            return "holds", (f"{claimed.label} is best, below the runner-up {other.label} "
                             f"by {-diff:.4f} (paired t-test over {n} seeds, p = {p:.3g})")
        return "inconclusive", (f"{claimed.label} is best but not separated from the "
                                f"runner-up {other.label} (paired t-test over {n} seeds, "
                                f"p = {p:.3g})")
    if not claimed.usable:
        return "does not hold", (f"the claimed setting {claimed.label} diverged in "
                                 f"{claimed.count('diverged')} of {n} seeds; best: {best.label}")
    if n < 2:
        return "inconclusive", (f"{best.label} is best, not {claimed.label}, in a single "
                                f"seed (no spread to test)")
    diff, p = paired_t(claimed.rl, best.rl)
    if p < ALPHA:
        why = f" ({bad} of {n} seeds stalled)" if claimed.count("stalled") else ""
        return "does not hold", (f"{best.label} is better than {claimed.label} by {diff:.4f} "
                                 f"in final rL{why} (paired t-test over {n} seeds, "
                                 f"p = {p:.3g})")
    return "inconclusive", (f"{best.label} has the lowest mean, but its spread overlaps "
                            f"{claimed.label}'s (paired t-test over {n} seeds, p = {p:.3g})")


