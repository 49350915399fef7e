"""``convprop report``: redraw the figures and report.md of a run, sweep or reproduce
folder from its stored files, without training."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.experiments.reproduce import write_reproduce_report
from convprop.experiments.runs import Grid, Run, varying_axes
from convprop.experiments.sections import SweepSection, write_report
from convprop.experiments.sweep import percent
from convprop.fileio import atomic_open
from convprop.training.config import value_text
from convprop.training.trainer import read_metrics


def sweep_record(grid: Grid, runs: Sequence[Run]) -> dict[str, Any]:
    """What sweep.json holds: the grid's lists and every run's options."""
    return {"grid": grid.to_dict(), "runs": [r.to_dict() for r in runs]}


def sweep_section(runs: Sequence[Run], key: str = "sweep") -> SweepSection:
    axes = varying_axes(runs)
    return SweepSection(key, "Sweep: " + (", ".join(axes) or "one setting"), list(runs))


def report(path: str | os.PathLike, log: Callable[[str], None] | None = None) -> Path:
    """Redraw figures and report.md from a stored run or sweep folder (no training)."""
    p = Path(path)
    if not p.is_dir():
        raise ConvpropError(f"{str(p)!r} is not a directory")
    if (p / "reproduce.json").is_file():
        return write_reproduce_report(p)
    if (p / "sweep.json").is_file():
        try:
            runs = [Run(**d) for d in json.loads((p / "sweep.json").read_text())["runs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConvpropError(f"{p / 'sweep.json'}: not a convprop sweep record "
                                f"({exc})") from None
        return write_report(p, [sweep_section(runs)], title=f"Sweep {p.name}")
    if (p / "summary.json").is_file():
        return _report_single_run(p)
    raise ConvpropError(f"{str(p)!r} holds no convprop results (summary.json, sweep.json "
                        f"or reproduce.json)")


def _report_single_run(p: Path) -> Path:
    from convprop.plots import figures as plots

    try:
        summary = json.loads((p / "summary.json").read_text())
        config = summary["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConvpropError(f"{p / 'summary.json'}: unreadable ({exc})") from None
    rl = read_metrics(p / "metrics.csv")["rL"]
    label = f"{config['activation']}, lr {value_text(config['lr'])}, seed {config['seed']}"
    plots.rl_curves({label: [np.atleast_1d(rl)]}, p / "rL.png", title=p.name)
    te = summary.get("test_error")
    data = summary.get("data") or {}
    lines = [f"# Run {p.name}", "| field | value |", "|---|---|"]
    for k, v in config.items():
        if k == "iterations":
            continue  # the iterations run, below
        if k == "data":
            v = data.get("description") or data.get("name") or v
        elif k == "epochs" and v is None:
            continue
        lines.append(f"| {k} | {value_text(v) if v is not None else 'default'} |")
    lines += [f"| status | {summary['status']} |"]
    if summary.get("message"):
        lines.append(f"| message | {summary['message']} |")
    lines += [f"| iterations | {summary['iterations']} |",
              f"| final rL | {summary.get('final_rL')} |",
              f"| test error | {percent(te)} |",
              f"| seconds | {summary.get('seconds')} |", "", "![rL](rL.png)"]
    path = p / "report.md"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
