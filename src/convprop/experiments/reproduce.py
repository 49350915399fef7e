"""``convprop reproduce``: the paper's studies and the ones beyond it, in one pool of
runs, then ``report.md``: each claim beside what was measured, with a verdict."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from convprop.errors import ConvpropError
from convprop.experiments import reproduce_beyond
from convprop.experiments.executors import check_executor, default_workers
from convprop.experiments.paper import ReproduceOptions, paper_sections
from convprop.experiments.sections import Section, plan, write_report
from convprop.experiments.sweep import run_sweep
from convprop.fileio import ensure_dir, write_json

TITLE = "Reproduction of the paper's activation studies"


def reproduce_sections(o: ReproduceOptions) -> list[Section]:
    """The paper's sections, then those beyond it (:mod:`reproduce_beyond`)."""
    return paper_sections(o) + reproduce_beyond.sections(o)


def seed_text(n: int) -> str:
    return "seed 0" if n == 1 else f"seeds 0-{n - 1}"


def reproduce(o: ReproduceOptions, out_dir: str | os.PathLike, executor: str = "process",
              workers: int | None = None, address: str | None = None,
              log: Callable[[str], None] | None = None, threads: int = 1) -> Path:
    """Run every section's runs in one pool (``threads`` network threads per worker),
    then write the figures and report.md."""
    check_executor(executor)
    out = ensure_dir(out_dir)
    sections = reproduce_sections(o)
    write_json(out / "reproduce.json", {"options": asdict(o),
                                        "sections": [s.key for s in sections]})
    t0 = time.perf_counter()
    run_sweep(plan(sections), out, executor, workers, address, log, threads)
    seconds = round(time.perf_counter() - t0, 1)
    write_json(out / "reproduce.json", {"options": asdict(o),
                                        "sections": [s.key for s in sections],
                                        "seconds": seconds, "executor": executor,
                                        "workers": workers or default_workers()})
    return write_reproduce_report(out)


def reproduce_preamble(o: ReproduceOptions, n_runs: int, seconds: float | None) -> str:
    data = {"mnist": "full MNIST (60,000 train / 10,000 test)",
            "sample": "**the bundled MNIST sample (10,000 train / 2,000 test), not the "
                      "paper's setting: numbers are not comparable with the paper**"}
    lines = [f"Data: {data.get(o.data, o.data)}. {o.iterations} iterations of batch "
             f"{o.batch_size} ({o.spec}, {o.dtype}, output layer sigmoid), "
             f"{seed_text(o.seeds)}; {n_runs} distinct runs"
             + (f"; the last `convprop reproduce` took {seconds:.0f} s (complete runs are "
                f"reused)." if seconds is not None else "."),
             "\"Error\" in the paper's figures is taken to be the toolbox's smoothed loss "
             "rL (rL ← 0.99·rL + 0.01·L per batch); final rL is its value after the last "
             "iteration. Curves: mean over seeds, band = min to max over seeds. Verdicts "
             "compare mean final rL by a paired t-test over seeds at level 0.05. A run "
             "*stalled* if it ended no better than a constant output and stopped moving "
             "(rL flat over the second half, or the batch loss the same for every batch of "
             "the last quarter); *diverged* if the loss or a parameter became non-finite.",
             "The paper's claims come from single runs; spreads over seeds are ours."]
    return "\n\n".join(lines)


def load_reproduce(out_dir: Path) -> tuple[ReproduceOptions, list[Section], float | None]:
    try:
        meta = json.loads((out_dir / "reproduce.json").read_text())
        o = ReproduceOptions.from_dict(meta["options"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConvpropError(f"{out_dir / 'reproduce.json'}: not a convprop reproduce "
                            f"record ({exc})") from None
    return o, reproduce_sections(o), meta.get("seconds")


def write_reproduce_report(out: Path) -> Path:
    """report.md of a reproduce folder, from its reproduce.json and stored runs."""
    o, sections, seconds = load_reproduce(out)
    return write_report(out, sections, title=TITLE,
                        preamble=reproduce_preamble(o, len(plan(sections)), seconds))
