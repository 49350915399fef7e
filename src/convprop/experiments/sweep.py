"""Sweeps: train every run of a list into ``out/runs/<name>/`` and keep ``summary.csv``.

Resume: a run whose ``summary.json`` exists with the same configuration is complete
(``run_training`` writes it last, atomically) and is not run again.  ``summary.csv``
is rewritten atomically after every finished run, so an interrupted sweep loses only
the runs in flight.  Its columns come from the config's fields (metadata ``column``):
``run``, those options, then ``final_rL``, ``test_error``, ``status``, ``diverged`` and
``seconds``; the ``iterations`` column holds the iterations run.

A sweep holds ``out/.sweep.lock`` (the process id) while it runs: a second sweep into
the same folder stops with one line; a lock left by a process that no longer runs is
taken over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convprop.errors import ConvpropError
from convprop.experiments.executors import check_executor, default_workers, execute
from convprop.experiments.runs import Run, data_tag, option_fields
from convprop.fileio import ensure_dir, write_csv
from convprop.training.config import value_text
from convprop.training.trainer import STATUSES

RESULT_COLUMNS = ("final_rL", "test_error", "status", "diverged", "seconds")
LOCK = ".sweep.lock"


def summary_columns() -> tuple[str, ...]:
    """``run``, the options marked ``column`` (in field order), the result columns."""
    return ("run", *[f.name for f in option_fields() if f.metadata.get("column", True)],
            *RESULT_COLUMNS)


def read_complete(run: Run, run_dir: Path) -> dict[str, Any] | None:
    """The run's summary if its folder holds a finished run of the same configuration."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = json.loads(json.dumps(run.config().to_dict()))  # as stored: tuples -> lists
    if (not isinstance(summary, dict) or summary.get("status") not in STATUSES
            or summary.get("config") != wanted
            or not (run_dir / "metrics.csv").is_file()):
        return None
    return summary


def row_of(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's line of summary.csv (``iterations``: the iterations run)."""
    def num(x):
        return "" if x is None else repr(float(x))

    row: dict[str, Any] = {"run": run.name}
    for f in option_fields():
        if f.metadata.get("column", True):
            value = getattr(run, f.name)
            row[f.name] = data_tag(value) if f.name == "data" else (
                "" if value is None else value_text(value))
    row.update({"iterations": summary["iterations"],
                "final_rL": num(summary.get("final_rL")),
                "test_error": num(summary.get("test_error")), "status": summary["status"],
                "diverged": "yes" if summary["status"] == "diverged" else "no",
                "seconds": f"{float(summary.get('seconds', 0.0)):.2f}"})
    return row


def write_summary(path: Path, runs: Sequence[Run], rows: dict[str, dict[str, Any]]) -> None:
    """summary.csv: one row per finished run, in plan order (atomically)."""
    columns = summary_columns()
    write_csv(path, columns,
              ([rows[r.name][c] for c in columns] for r in runs if r.name in rows))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.sweep.lock`` (our pid) while a sweep writes into ``out``; raise a
    one-line ConvpropError when another live process holds it.  A stale lock (its
    process gone, or unreadable) is replaced."""
    path = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid > 0 and pid != os.getpid() and _alive(pid):
                raise ConvpropError(f"{out} is in use by another sweep (process {pid}); "
                                    f"wait for it or give another --out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        break
    else:
        raise ConvpropError(f"cannot take the lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def run_sweep(runs: Sequence[Run], out_dir: str | os.PathLike, executor: str = "process",
              workers: int | None = None, address: str | None = None,
              log: Callable[[str], None] | None = None,
              threads: int = 1) -> dict[str, dict[str, Any]]:
    """Train every run not already complete into ``out_dir/runs/`` (``threads`` network
    threads per worker), keeping ``out_dir/summary.csv`` up to date after each; returns
    rows by run name."""
    check_executor(executor)
    out = ensure_dir(out_dir)
    with sweep_lock(out):
        return _run_sweep(runs, out, executor, workers, address, log, threads)


def _run_sweep(runs, out, executor, workers, address, log, threads):
    root = ensure_dir(out / "runs")
    runs = list(dict.fromkeys(runs))  # identical runs are trained once
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        done = read_complete(run, root / run.name)
        if done is None:
            todo.append(run)
        else:
            rows[run.name] = row_of(run, done)
    if log:
        how = executor if executor == "serial" else (
            f"{executor}, {workers or default_workers()} workers")
        log(f"{len(runs)} runs: {len(rows)} already complete, {len(todo)} to train ({how})")
    write_summary(out / "summary.csv", runs, rows)
    t0 = time.perf_counter()
    for i, (run, summary) in enumerate(execute(todo, root, executor, workers, address,
                                               threads), 1):
        rows[run.name] = row_of(run, summary)
        write_summary(out / "summary.csv", runs, rows)
        if log:
            r = rows[run.name]
            log(f"[{i}/{len(todo)}] {run.name}: {r['status']}, rL {_rl(r['final_rL'])}, "
                f"test error {percent(r['test_error'])} ({time.perf_counter() - t0:.0f} s)")
    return rows


def _rl(text: str) -> str:
    return f"{float(text):.4f}" if text not in ("", None) else "n/a"


def percent(fraction: Any) -> str:
    """A fraction (number or its text) as a percentage for text: ``15.65%``; n/a if none."""
    if fraction in ("", None):
        return "n/a"
    return f"{100 * float(fraction):.2f}%"
