"""Report sections: what ``report.md`` is made of.

A section is any object with ``key`` and ``title`` (strings), ``plan() -> list[Run]``
(the runs it needs; runs shared between sections, equal :attr:`Run.name`, are trained
once) and ``render(results, out_dir) -> str`` (markdown; it may draw figures into
``out_dir`` and link them relative to it).  :class:`SweepSection` (a table of mean ± sd
per setting plus an rL figure) and :class:`ClaimSection` (the same plus one of the
paper's claims and a verdict) serve sweeps and the reproduction;
:func:`write_report` renders any list of sections into ``report.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from convprop.experiments.runs import Run, describe, fixed_settings, varying_axes
from convprop.experiments.stats import Results, SettingStats, mean_sd, setting_stats, verdict
from convprop.fileio import atomic_open


class Section(Protocol):
    key: str
    title: str

    def plan(self) -> list[Run]: ...

    def render(self, results: Results, out_dir: Path) -> str: ...


@dataclass
class SweepSection:
    """A table (mean ± sd over seeds of final rL and test error per setting, counts of
    stalled/diverged runs) and a figure of the rL curves, mean over seeds with a band."""

    key: str
    title: str
    runs: list[Run]
    text: str = ""  # markdown shown under the title
    axes: list[str] | None = None  # parameters that label a setting (default: those varying)

    def plan(self) -> list[Run]:
        return list(self.runs)

    def label(self, setting: Run) -> str:
        return describe(setting, self.axes if self.axes is not None
                        else varying_axes(self.runs))

    def stats(self, results: Results) -> list[SettingStats]:
        return setting_stats(self.runs, results, self.label)

    def table(self, stats: Sequence[SettingStats]) -> str:
        lines = ["| setting | seeds | final rL (mean ± sd) | test error % (mean ± sd) | "
                 "stalled | diverged |", "|---|---|---|---|---|---|"]
        for s in stats:
            lines.append(f"| {s.label} | {s.n}/{len(s.runs)} | {mean_sd(s.rl)} | "
                         f"{mean_sd(s.error, 100, 2)} | {s.count('stalled')} | "
                         f"{s.count('diverged')} |")
        return "\n".join(lines)

    def figure(self, results: Results, out_dir: Path, stats: Sequence[SettingStats]) -> str:
        from convprop.plots import figures as plots

        curves = {s.label: [c for c in (results.curve(r) for r in s.runs) if c is not None]
                  for s in stats}
        path = out_dir / f"{self.key}.png"
        fixed = fixed_settings(self.runs)
        plots.rl_curves({k: v for k, v in curves.items() if v}, path,
                        title=self.title + (f"\n{fixed}" if fixed else ""))
        return path.name

    @staticmethod
    def best(stats: Sequence[SettingStats]) -> str:
        ranked = sorted(stats, key=lambda s: s.mean_rl())
        if not ranked or not ranked[0].usable:
            return "none completed in every seed"
        b = ranked[0]
        return (f"**{b.label}**: final rL {mean_sd(b.rl)}, test error "
                f"{mean_sd(b.error, 100, 2, '%')}")

    def best_line(self, stats: Sequence[SettingStats]) -> str:
        return f"Best setting (lowest mean final rL): {self.best(stats)}."

    def render(self, results: Results, out_dir: Path) -> str:
        stats = self.stats(results)
        parts = [f"## {self.title}", self.text, self.table(stats), self.best_line(stats)]
        if any(results.curve(r) is not None for r in self.runs):
            parts.append(f"![{self.title}]({self.figure(results, out_dir, stats)})")
        return "\n\n".join(p for p in parts if p)


@dataclass
class ClaimSection(SweepSection):
    """A :class:`SweepSection` plus one of the paper's claims, "``claimed`` is best
    (residual ``residual``)", and its verdict.  ``candidates`` (default: every setting)
    are the settings the claim ranges over; the others are shown but not ranked."""

    claim: str = ""
    claimed: Run | None = None  # the claimed setting (seed ignored)
    residual: float | None = None
    candidates: list[Run] | None = None

    def verdict(self, results: Results):
        """(word, reason, every setting's stats, the ranked candidates' stats)."""
        stats = self.stats(results)
        pool = stats if self.candidates is None else [
            s for s in stats if s.setting in {c.setting for c in self.candidates}]
        claimed = next((s for s in pool if self.claimed is not None
                        and s.setting == self.claimed.setting), None)
        word, reason = verdict(pool, claimed)
        return word, reason, stats, pool

    def best_line(self, stats: Sequence[SettingStats]) -> str:
        if self.candidates is None:
            return super().best_line(stats)
        return f"Best setting of all, those beyond the paper included: {self.best(stats)}."

    def render(self, results: Results, out_dir: Path) -> str:
        word, reason, stats, pool = self.verdict(results)
        claimed = next((s for s in stats if self.claimed is not None
                        and s.setting == self.claimed.setting), None)
        measured = mean_sd(claimed.rl) if claimed else "n/a"
        paper = f"{self.residual}" if self.residual is not None else "not given"
        claim = "\n".join([
            "| | paper | measured |", "|---|---|---|",
            f"| claim | {self.claim} | best: {self.best(pool)} |",
            f"| final rL of the claimed setting | {paper} | {measured} |",
            f"| **verdict** | | **{word}**: {reason} |"])
        body = super().render(results, out_dir)
        head, _, rest = body.partition("\n\n")
        return "\n\n".join([head, claim, rest])


@dataclass
class ActivationSection:
    """The paper's Figures 4, 5 and 8: each activation and its derivative (no runs)."""

    key: str = "activations"
    title: str = "Figures 4, 5, 8: the activations and their derivatives"

    def plan(self) -> list[Run]:
        return []

    def render(self, results: Results, out_dir: Path) -> str:
        from convprop.plots import figures as plots

        images = []
        for stem, (title, names) in plots.PAPER_ACTIVATION_FIGURES.items():
            plots.activation_figure(names, out_dir / f"{stem}.png", title)
            images.append(f"![{title}]({stem}.png)")
        return "\n\n".join([f"## {self.title}", *images])



def plan(sections: Sequence[Section]) -> list[Run]:
    """Every run of every section, each once, in first-seen order."""
    return list(dict.fromkeys(r for s in sections for r in s.plan()))


def write_report(out_dir: str | os.PathLike, sections: Sequence[Section],
                 results: Results | None = None, title: str = "convprop report",
                 preamble: str = "") -> Path:
    """Render ``sections`` over the results stored in ``out_dir`` into report.md."""
    out = Path(out_dir)
    results = results or Results(out)
    parts = [f"# {title}", preamble] + [s.render(results, out) for s in sections]
    path = out / "report.md"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("\n\n".join(p for p in parts if p).rstrip() + "\n")
    return path
