"""Sweeps over training options, their executors, and the reproduction report.

A **run** (:class:`Run`) is one ``convprop train`` job: every training option fixed,
seed included.  A **grid** (:func:`parse_grid`) expands comma lists such as
``--activation tanh-linear:0,0.05,0.13 --lr 0.1,2 --seeds 0-4`` into runs, in a fixed
order.  Each run trains with :func:`convprop.training.trainer.run_training` into its own folder
``runs/<name>``, the name spelled from its parameters (:attr:`Run.name`), so the same
run always lands in the same folder and two sweeps that share it can share the result.

Executors (:func:`execute`): ``serial`` (this process), ``process`` (a spawn pool of
``--workers`` processes, default one per core, each with one BLAS thread and the data
set loaded once per worker), ``ray`` (``ray.remote`` tasks on a local or remote Ray
cluster; each task sends its files back to the driver, which writes them, so no shared
file system is needed).  Every run is seeded, so the numbers do not depend on the
executor or the number of workers.

Resume: a run whose ``summary.json`` exists with the same configuration is complete
(``run_training`` writes it last, atomically) and is not run again.  ``summary.csv``
is rewritten atomically after every finished run, so an interrupted sweep loses only
the runs in flight.

Report extension point
----------------------
``convprop reproduce`` builds a list of **sections**.  A section is any object with

- ``key`` and ``title`` (strings),
- ``plan() -> list[Run]``: the runs it needs (runs shared between sections, equal
  :attr:`Run.name`, are trained once),
- ``render(results: Results, out_dir: Path) -> str``: markdown for ``report.md``;
  it may draw figures into ``out_dir`` (link them relative to it).

:class:`SweepSection` (table of mean ± sd per setting plus an rL figure) and
:class:`ClaimSection` (the same plus the paper's claim and a verdict) are the ones
used here.  To add a section to every reproduction, append a factory
``f(options: ReproduceOptions) -> list[Section]`` to :data:`REPRODUCE_SECTIONS`;
``ReproduceOptions.extra`` carries flags of your own (e.g. ``{"modern": True}``, added
to the command by ``cli.sweep.REPRODUCE_FLAGS``), and is stored in ``reproduce.json``
so ``convprop report`` rebuilds the same sections.  :meth:`Run.from_config` turns any
``TrainConfig`` into a run; a run's files are in ``out_dir/runs/<run.name>/``.
:func:`write_report` renders any list of sections into ``report.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from convprop.errors import ConvpropError
from convprop.fileio import atomic_open, ensure_dir, write_csv, write_json
from convprop.maths.activations import _fmt, get_activation
from convprop.maths.network import DEFAULT_SPEC
from convprop.training.trainer import STATUSES, TrainConfig

MAX_RUNS = 1000  # a larger grid needs --force
EXECUTORS = ("process", "serial", "ray")
SUMMARY_COLUMNS = ("run", "activation", "lr", "batch_size", "spec", "seed", "iterations",
                   "dtype", "data", "final_rL", "test_error", "status", "diverged", "seconds")
THREAD_ENV = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                     "VECLIB_MAXIMUM_THREADS")}


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One training job; ``data`` is ``"sample"``, ``"mnist"`` or an absolute directory."""

    activation: str = "sigmoid"
    lr: float = 1.0
    batch_size: int = 50
    spec: str = DEFAULT_SPEC
    seed: int = 0
    iterations: int | None = None
    epochs: int | None = None
    dtype: str = "float32"
    data: str = "sample"
    loss: str = "mse"
    optimizer: str = "sgd"
    init: str = "dlt"
    options: tuple = ()  # any other TrainConfig fields: sorted (name, value) pairs

    def __post_init__(self):  # options read back from JSON: lists -> tuples
        object.__setattr__(self, "options", tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in self.options))

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(dict(
            spec=self.spec, activation=self.activation, lr=self.lr,
            batch_size=self.batch_size, epochs=self.epochs, iterations=self.iterations,
            seed=self.seed, dtype=self.dtype, data=self.data, loss=self.loss,
            optimizer=self.optimizer, init=self.init, **dict(self.options)))

    @classmethod
    def from_config(cls, config: TrainConfig) -> Run:
        """The run of a TrainConfig (``data`` None: full MNIST if cached, else the
        sample); fields beyond Run's own go into ``options`` when not the default."""
        d, default = config.to_dict(), TrainConfig().to_dict()
        own = {f: d.pop(f) for f in cls.__dataclass_fields__ if f != "options"}
        own["data"] = parse_data(own["data"])[0]
        own["lr"] = float(own["lr"])
        extra = sorted((k, tuple(v) if isinstance(v, list) else v)
                       for k, v in d.items() if v != default[k])
        return cls(**own, options=tuple(extra))

    @property
    def length(self) -> str:
        if self.iterations is not None:
            return f"it{self.iterations}"
        return f"ep{self.epochs if self.epochs is not None else 1}"

    @property
    def data_tag(self) -> str:
        if self.data in ("sample", "mnist"):
            return self.data
        return "dir-" + hashlib.sha1(self.data.encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """Folder name, from every parameter: ``tanh-linear=0.13_lr0.1_bs50_..._seed0``
        (loss, optimizer, init and ``options`` appear only when not the defaults)."""
        extras = [v for v, default in ((self.loss, "mse"), (self.optimizer, "sgd"),
                                       (self.init, "dlt")) if v != default]
        extras += [f"{k}={_option_text(v)}" for k, v in self.options]
        return "_".join([self.activation.replace(":", "="), f"lr{_fmt(self.lr)}",
                         f"bs{self.batch_size}", self.spec, self.length, self.dtype,
                         self.data_tag, *[e.replace(":", "=") for e in extras],
                         f"seed{self.seed}"])

    @property
    def setting(self) -> Run:
        """The run with its seed zeroed and no diagnostics (they do not change the
        numbers): runs that differ only in these share a setting."""
        return replace(self, seed=0, options=tuple(
            (k, v) for k, v in self.options if k != "diagnostics"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _option_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_option_text(v) for v in value)
    return _fmt(value) if isinstance(value, float) else str(value).replace("/", "-")


def describe(setting: Run, axes: Sequence[str]) -> str:
    """Label of a setting from the parameters that vary (``k=0.13``-style for one axis)."""
    parts = []
    for axis in axes:
        value = getattr(setting, axis)
        if axis == "lr":
            parts.append(f"lr {_fmt(value)}")
        elif axis == "activation":
            parts.append(value)
        elif axis == "data":
            parts.append(setting.data_tag)
        elif axis == "options":
            parts.append(" ".join(f"{k} {_option_text(v)}" for k, v in value) or "defaults")
        else:
            parts.append(f"{axis.replace('_', ' ')} {value}")
    return ", ".join(parts) or setting.activation


def varying_axes(runs: Iterable[Run]) -> list[str]:
    """The parameters (seed aside) that take more than one value among ``runs``."""
    runs = list(runs)
    return [a for a in ("activation", "lr", "batch_size", "spec", "iterations", "epochs",
                        "dtype", "data", "loss", "optimizer", "init", "options")
            if len({getattr(r, a) for r in runs}) > 1]


# --------------------------------------------------------------------------- grids


def _items(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",")]
    if not text or not str(text).strip() or any(not t for t in items):
        raise ConvpropError(f"--{what}: empty value in {text!r} (give a comma list)")
    return items


def parse_floats(text: str, what: str = "lr") -> list[float]:
    """``"0.1,1.5,2"`` -> [0.1, 1.5, 2.0]; every value positive and finite."""
    out = []
    for item in _items(text, what):
        try:
            value = float(item)
        except ValueError:
            raise ConvpropError(f"--{what}: {item!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ConvpropError(f"--{what}: {item!r} must be positive and finite")
        out.append(value)
    return _unique(out)


def parse_ints(text: str, what: str = "seeds", minimum: int = 0,
               limit: int = MAX_RUNS) -> list[int]:
    """``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` -> sorted-as-given ints >= ``minimum``;
    more than ``limit`` values is an error (checked before expanding a range)."""
    out: list[int] = []
    for item in _items(text, what):
        lo, sep, hi = item.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ConvpropError(f"--{what}: {item!r} is not an integer or a range "
                                f"like 0-4") from None
        if a < minimum or b < a:
            raise ConvpropError(f"--{what}: {item!r} must be integers >= {minimum}, "
                                f"ranges low-high")
        if len(out) + b - a + 1 > limit:
            raise ConvpropError(f"--{what}: {text!r} gives more than {limit} values")
        out.extend(range(a, b + 1))
    return _unique(out)


def parse_activations(texts: str | Sequence[str]) -> list[str]:
    """``"tanh-linear:0,0.05,0.13"`` -> three activations; ``"sigmoid,relu"`` -> two;
    ``"relu,leaky-relu:0.01,0.05"`` -> three (a bare number is another parameter of the
    activation before it).  Several texts (the option repeated) are concatenated."""
    out = []
    for text in [texts] if isinstance(texts, str) else texts:
        base = None
        for item in _items(text, "activation"):
            if base is not None and _is_number(item):
                item = f"{base}:{item}"  # another parameter of the same activation
            base = item.partition(":")[0] if ":" in item else None
            out.append(get_activation(item).name)
    return _unique(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_data(text: str | None) -> list[str]:
    """``--data`` values: ``sample``, ``mnist`` or directories (made absolute); none
    given: full MNIST if cached, else the sample."""
    from convprop.data.mnist import mnist_in_cache

    if text is None:
        return ["mnist" if mnist_in_cache() else "sample"]
    out = []
    for item in _items(text, "data"):
        if item in ("sample", "mnist"):
            out.append(item)
        else:
            p = Path(item).expanduser()
            if not p.is_dir() and not (p.is_file() and p.suffix.lower() == ".npz"):
                raise ConvpropError(f"--data: {item!r} is not a directory or .npz file (nor "
                                    f"'sample' or 'mnist')")
            out.append(str(p.resolve()))
    return _unique(out)


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


@dataclass
class Grid:
    """Lists of values per option; :meth:`runs` is their product, seeds innermost."""

    activation: list[str] = field(default_factory=lambda: ["sigmoid"])
    lr: list[float] = field(default_factory=lambda: [1.0])
    batch_size: list[int] = field(default_factory=lambda: [50])
    spec: list[str] = field(default_factory=lambda: [DEFAULT_SPEC])
    iterations: list[int | None] = field(default_factory=lambda: [None])
    epochs: list[int | None] = field(default_factory=lambda: [None])
    dtype: list[str] = field(default_factory=lambda: ["float32"])
    data: list[str] = field(default_factory=lambda: ["sample"])
    loss: list[str] = field(default_factory=lambda: ["mse"])
    optimizer: list[str] = field(default_factory=lambda: ["sgd"])
    init: list[str] = field(default_factory=lambda: ["dlt"])
    seed: list[int] = field(default_factory=lambda: [0])

    def size(self) -> int:
        return math.prod(len(v) for v in asdict(self).values())

    def runs(self, limit: int | None = MAX_RUNS) -> list[Run]:
        n = self.size()
        if n == 0:
            raise ConvpropError("the grid is empty: every option needs at least one value")
        if limit is not None and n > limit:
            raise ConvpropError(f"the grid has {n} runs, more than the limit of {limit} "
                                f"(use --force to run it anyway)")
        out = []
        for act, lr, bs, spec, it, ep, dt, data, loss, opt, init, seed in itertools.product(
                self.activation, self.lr, self.batch_size, self.spec, self.iterations,
                self.epochs, self.dtype, self.data, self.loss, self.optimizer, self.init,
                self.seed):
            run = Run(act, lr, bs, spec, seed, it, ep, dt, data, loss, opt, init)
            run.config().validate()
            out.append(run)
        return out


def parse_grid(activation: str | Sequence[str] | None = None, lr: str | None = None,
               batch_size: str | None = None, spec: str | None = None,
               iterations: str | None = None, epochs: str | None = None,
               dtype: str | None = None, data: str | None = None,
               seeds: str | None = None, loss: str | None = None,
               optimizer: str | None = None, init: str | None = None) -> Grid:
    """The grid of ``convprop sweep``'s options (each a comma list; None = default)."""
    from convprop.maths.network import parse_spec

    if iterations is not None and epochs is not None:
        raise ConvpropError("give --iterations or --epochs, not both")
    g = Grid(data=parse_data(data))
    if activation:
        g.activation = parse_activations(activation)
    if lr is not None:
        g.lr = parse_floats(lr, "lr")
    if batch_size is not None:
        g.batch_size = parse_ints(batch_size, "batch-size", minimum=1)
    if spec is not None:
        g.spec = _unique(_items(spec, "spec"))
        for s in g.spec:
            parse_spec(s)
    if iterations is not None:
        g.iterations = parse_ints(iterations, "iterations", minimum=1)
    if epochs is not None:
        g.epochs = parse_ints(epochs, "epochs", minimum=1)
    if dtype is not None:
        g.dtype = _unique(_items(dtype, "dtype"))
        bad = [d for d in g.dtype if d not in ("float32", "float64")]
        if bad:
            raise ConvpropError(f"--dtype: {bad[0]!r} is not float32 or float64")
    if seeds is not None:
        g.seed = parse_ints(seeds, "seeds")
    for name, text in (("loss", loss), ("optimizer", optimizer), ("init", init)):
        if text is not None:
            setattr(g, name, _unique(_items(text, name)))  # checked by TrainConfig.validate
    return g


# --------------------------------------------------------------------------- one run

_DATASETS: dict[str, Any] = {}


def dataset(data: str):
    """The data set, loaded once per process (each worker keeps its own copy)."""
    if data not in _DATASETS:
        from convprop.data.mnist import load_data

        _DATASETS[data] = load_data(data)
    return _DATASETS[data]


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
    """The run's line of summary.csv."""
    def num(x):
        return "" if x is None else repr(float(x))

    return {"run": run.name, "activation": run.activation, "lr": _fmt(run.lr),
            "batch_size": run.batch_size, "spec": run.spec, "seed": run.seed,
            "iterations": summary["iterations"], "dtype": run.dtype, "data": run.data_tag,
            "final_rL": num(summary.get("final_rL")), "test_error": num(summary.get("test_error")),
            "status": summary["status"],
            "diverged": "yes" if summary["status"] == "diverged" else "no",
            "seconds": f"{float(summary.get('seconds', 0.0)):.2f}"}


def execute_run(run: Run, run_dir: str) -> dict[str, Any]:
    """Train ``run`` into ``run_dir`` (a worker's job); returns its summary.json."""
    from convprop.training.trainer import run_training

    # One BLAS thread whatever the executor (a multi-threaded BLAS may sum in another
    # order); a diverging run overflows, which is reported as such, not warned about.
    with _one_blas_thread(), np.errstate(all="ignore"):
        summary = run_training(run.config(), run_dir, dataset=dataset(run.data))
    summary.pop("_network", None)
    return summary


def _execute_run_files(run: Run) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Ray task: train in a temporary folder, return the summary and the files' bytes."""
    with tempfile.TemporaryDirectory(prefix="convprop-") as tmp:
        summary = execute_run(run, tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return summary, files


# --------------------------------------------------------------------------- executors


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Limit the BLAS of this process to one thread (workers also get THREAD_ENV)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def execute(runs: Sequence[Run], root: Path, executor: str = "process",
            workers: int | None = None, address: str | None = None
            ) -> Iterator[tuple[Run, dict[str, Any]]]:
    """Train ``runs`` into ``root/<run.name>``; yield (run, summary) as each finishes."""
    if executor not in EXECUTORS:
        raise ConvpropError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if not runs:
        return
    workers = workers or default_workers()
    if executor == "serial" or (executor == "process" and (workers == 1 or len(runs) == 1)):
        for run in runs:
            yield run, execute_run(run, str(root / run.name))
    elif executor == "process":
        yield from _execute_processes(runs, root, min(workers, len(runs)))
    else:
        yield from _execute_ray(runs, root, address, workers)


def _execute_processes(runs, root, workers):
    """Spawned workers import the caller's main module: a script that sweeps needs the
    usual ``if __name__ == "__main__":`` guard (as with any spawn pool)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # The workers inherit THREAD_ENV at spawn, before they import numpy.
    with _env(THREAD_ENV):
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            pending = {pool.submit(execute_run, r, str(root / r.name)): r for r in runs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: runs.index(pending[f])):
                    run = pending.pop(fut)
                    try:
                        summary = fut.result()
                    except BrokenProcessPool:
                        raise ConvpropError(
                            f"a worker process died during run {run.name} (out of memory, "
                            f"killed, or a main script without an `if __name__ == "
                            f"\"__main__\":` guard); runs finished so far are kept, try "
                            f"--executor serial") from None
                    yield run, summary
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _execute_ray(runs, root, address, workers):
    try:
        import ray
    except ImportError:
        raise ConvpropError("--executor ray needs Ray: pip install 'convprop[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": THREAD_ENV},
                                  "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs.update(num_cpus=workers, include_dashboard=False)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConvpropError(f"cannot start or reach Ray at {address or 'local'}: "
                                f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
    task = ray.remote(num_cpus=1)(_execute_run_files)
    pending = {task.remote(r): r for r in runs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            summary, files = ray.get(done[0])
            out = ensure_dir(root / run.name)
            for name in sorted(files, key=lambda n: n == "summary.json"):  # summary last
                with atomic_open(out / name, "wb") as fh:
                    fh.write(files[name])
            yield run, summary
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- sweeps


def write_summary(path: Path, runs: Sequence[Run], rows: dict[str, dict[str, Any]]) -> None:
    """summary.csv: one row per finished run, in plan order (atomically)."""
    write_csv(path, SUMMARY_COLUMNS,
              ([rows[r.name][c] for c in SUMMARY_COLUMNS] for r in runs if r.name in rows))


def read_summary(path: Path) -> list[dict[str, str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise ConvpropError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def run_sweep(runs: Sequence[Run], out_dir: str | os.PathLike, executor: str = "process",
              workers: int | None = None, address: str | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Train every run not already complete into ``out_dir/runs/``, keeping
    ``out_dir/summary.csv`` up to date after each; returns rows by run name."""
    out = ensure_dir(out_dir)
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
    for i, (run, summary) in enumerate(execute(todo, root, executor, workers, address), 1):
        rows[run.name] = row_of(run, summary)
        write_summary(out / "summary.csv", runs, rows)
        if log:
            r = rows[run.name]
            log(f"[{i}/{len(todo)}] {run.name}: {r['status']}, rL {_short(r['final_rL'])}, "
                f"test error {_short(r['test_error'])} ({time.perf_counter() - t0:.0f} s)")
    return rows


def _short(text: str) -> str:
    return f"{float(text):.4f}" if text not in ("", None) else "n/a"


# --------------------------------------------------------------------------- results


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
            from convprop.training.trainer import read_metrics

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


def mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 4) -> str:
    v = [scale * x for x in values if x is not None]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def student_t_sf2(t: float, df: int) -> float:
    """Two-sided p-value P(|T| >= |t|) of Student's t with integer ``df`` degrees of
    freedom (the closed forms of Abramowitz & Stegun 26.7.3-4)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = term
            for j in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * j) / (2 * j + 1)
                total += term
            a = 2 / math.pi * (theta + s * math.cos(theta) * total)
        else:
            a = 2 / math.pi * theta
    else:
        total, term = 1.0, 1.0
        for j in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        a = s * total
    return min(1.0, max(0.0, 1.0 - a))


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test over seeds: (mean of a - b, two-sided p)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else 0.0, 1.0
    sd = float(d.std(ddof=1))
    if sd == 0:
        return float(d.mean()), 1.0 if d.mean() == 0 else 0.0
    return float(d.mean()), student_t_sf2(float(d.mean()) / (sd / math.sqrt(len(d))),
                                          len(d) - 1)


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


# --------------------------------------------------------------------------- sections


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
        plots.rl_curves({k: v for k, v in curves.items() if v}, path, title=self.title)
        return path.name

    @staticmethod
    def best(stats: Sequence[SettingStats]) -> str:
        ranked = sorted(stats, key=lambda s: s.mean_rl())
        if not ranked or not ranked[0].usable:
            return "none completed in every seed"
        b = ranked[0]
        return (f"**{b.label}**: final rL {mean_sd(b.rl)}, test error "
                f"{mean_sd(b.error, 100, 2)} %")

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


# --------------------------------------------------------------------------- reproduce


@dataclass
class ReproduceOptions:
    """What ``convprop reproduce`` runs; stored in ``reproduce.json``."""

    seeds: int = 5
    data: str = "mnist"
    iterations: int = 600
    batch_size: int = 50
    dtype: str = "float32"
    spec: str = DEFAULT_SPEC
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, activation: str, lr: float) -> list[Run]:
        """One run per seed; seed 0 records gradient-flow diagnostics every
        ``extra["diagnostics"]`` iterations when that is set (``convprop reproduce``)."""
        every = int(self.extra.get("diagnostics") or 0)
        return [Run(activation, float(lr), self.batch_size, self.spec, seed, self.iterations, None,
                    self.dtype, self.data,
                    options=(("diagnostics", every),) if every and seed == 0 else ())
                for seed in range(self.seeds)]


K_VALUES = (0, 0.05, 0.1, 0.13, 0.15, 0.2)
FIG6_LR = 0.1
FIG7_LRS = (0.1, 1.5, 2, 3, 4, 5)
FIG7_K = 0.13
ALPHAS = (0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
ALPHAS_BEYOND = (0.1, 0.2, 0.3)
FIG9_LR = 1.0


def paper_sections(o: ReproduceOptions) -> list[Section]:
    """The paper's Figures 6, 7 and 9 as claim sections."""
    def act(base: str, values: Iterable[float], lr: float) -> list[Run]:
        return [r for v in values for r in o.run(f"{base}:{_fmt(v)}", lr)]

    fig6 = act("tanh-linear", K_VALUES, FIG6_LR)
    fig7 = [r for lr in FIG7_LRS for r in o.run(f"tanh-linear:{_fmt(FIG7_K)}", lr)]
    fig9 = act("leaky-relu", ALPHAS + ALPHAS_BEYOND, FIG9_LR)
    fig9_paper = [r for r in fig9 if r.activation in {f"leaky-relu:{_fmt(a)}" for a in ALPHAS}]
    return [
        ActivationSection(),
        ClaimSection(
            "fig6", "Figure 6: tanh(x) + k·x for several k", fig6,
            text=(f"k in {{{', '.join(_fmt(k) for k in K_VALUES)}}}, learning rate "
                  f"{_fmt(FIG6_LR)}. The paper gives neither the other k values nor the "
                  f"learning rate of this figure; {_fmt(FIG6_LR)} is the first value of its "
                  f"Figure 7, and its conclusion (\"the residual went from 0.169 to 0.0481\" "
                  f"by changing the learning rate) says Figure 6 did not use rate 2."),
            axes=["activation"], claim="k = 0.13 lowers the error fastest",
            claimed=o.run(f"tanh-linear:{_fmt(FIG7_K)}", FIG6_LR)[0], residual=0.1694),
        ClaimSection(
            "fig7", "Figure 7: learning rates with tanh(x) + 0.13·x", fig7,
            text=(f"Learning rates {', '.join(_fmt(v) for v in FIG7_LRS)} (the paper's), "
                  f"k = {_fmt(FIG7_K)}."),
            axes=["lr"], claim="learning rate 2 lowers the error fastest",
            claimed=o.run(f"tanh-linear:{_fmt(FIG7_K)}", 2)[0], residual=0.0481),
        ClaimSection(
            "fig9", "Figure 9: leaky ReLU coefficients", fig9,
            text=(f"α in {{{', '.join(_fmt(a) for a in ALPHAS)}}} (the paper says six values "
                  f"from 0 to 0.06 without listing them; we run all seven hundredths) and, "
                  f"beyond the paper, {', '.join(_fmt(a) for a in ALPHAS_BEYOND)} (not ranked "
                  f"for the verdict). Learning rate {_fmt(FIG9_LR)}: the paper does not give "
                  f"it; 1 is the default of the toolbox code it quotes (`opts.alpha = 1`)."),
            axes=["activation"], claim="α = 0.05 trains best (gains stop at 0.06)",
            claimed=o.run("leaky-relu:0.05", FIG9_LR)[0], candidates=fig9_paper),
    ]


#: Factories of reproduction sections, in report order.  Append your own
#: ``f(options) -> list[Section]`` to extend ``convprop reproduce`` and its report.
def beyond_sections(o: ReproduceOptions) -> list[Section]:
    from convprop.experiments.reproduce_beyond import (
        sections,  # imported late: it builds on this module
    )

    return sections(o)


REPRODUCE_SECTIONS: list[Callable[[ReproduceOptions], list[Section]]] = [paper_sections,
                                                                         beyond_sections]


def reproduce_sections(o: ReproduceOptions) -> list[Section]:
    return [s for factory in REPRODUCE_SECTIONS for s in factory(o)]


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


def reproduce(o: ReproduceOptions, out_dir: str | os.PathLike, executor: str = "process",
              workers: int | None = None, address: str | None = None,
              log: Callable[[str], None] | None = None) -> Path:
    """Run every section's runs in one pool, then write the figures and report.md."""
    out = ensure_dir(out_dir)
    sections = reproduce_sections(o)
    write_json(out / "reproduce.json", {"options": asdict(o),
                                        "sections": [s.key for s in sections]})
    t0 = time.perf_counter()
    run_sweep(plan(sections), out, executor, workers, address, log)
    seconds = round(time.perf_counter() - t0, 1)
    write_json(out / "reproduce.json", {"options": asdict(o),
                                        "sections": [s.key for s in sections],
                                        "seconds": seconds, "executor": executor,
                                        "workers": workers or default_workers()})
    return report(out)


def reproduce_preamble(o: ReproduceOptions, n_runs: int, seconds: float | None) -> str:
    data = {"mnist": "full MNIST (60,000 train / 10,000 test)",
            "sample": "**the bundled MNIST sample (10,000 train / 2,000 test), not the "
                      "paper's setting: numbers are not comparable with the paper**"}
    lines = [f"Data: {data.get(o.data, o.data)}. {o.iterations} iterations of batch "
             f"{o.batch_size} ({o.spec}, {o.dtype}, output layer sigmoid), seeds 0-"
             f"{o.seeds - 1}; {n_runs} distinct runs"
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
        o = ReproduceOptions(**meta["options"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConvpropError(f"{out_dir / 'reproduce.json'}: not a convprop reproduce "
                            f"record ({exc})") from None
    return o, reproduce_sections(o), meta.get("seconds")


# --------------------------------------------------------------------------- report


def sweep_record(grid: Grid, runs: Sequence[Run]) -> dict[str, Any]:
    return {"grid": asdict(grid), "runs": [r.to_dict() for r in runs]}


def sweep_section(runs: Sequence[Run], key: str = "sweep") -> SweepSection:
    axes = varying_axes(runs)
    return SweepSection(key, "Sweep: " + (", ".join(axes) or "one setting"), list(runs))


def report(path: str | os.PathLike, log: Callable[[str], None] | None = None) -> Path:
    """Redraw figures and report.md from a stored run or sweep folder (no training)."""
    p = Path(path)
    if not p.is_dir():
        raise ConvpropError(f"{str(p)!r} is not a directory")
    if (p / "reproduce.json").is_file():
        o, sections, seconds = load_reproduce(p)
        return write_report(p, sections, title="Reproduction of the paper's activation "
                            "studies", preamble=reproduce_preamble(o, len(plan(sections)),
                                                                   seconds))
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
    from convprop.training.trainer import read_metrics

    try:
        summary = json.loads((p / "summary.json").read_text())
        config = summary["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConvpropError(f"{p / 'summary.json'}: unreadable ({exc})") from None
    rl = read_metrics(p / "metrics.csv")["rL"]
    label = f"{config['activation']}, lr {_fmt(config['lr'])}, seed {config['seed']}"
    plots.rl_curves({label: [np.atleast_1d(rl)]}, p / "rL.png", title=p.name)
    te = summary.get("test_error")
    lines = [f"# Run {p.name}", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in config.items()]
    lines += [f"| status | {summary['status']} |", f"| iterations | {summary['iterations']} |",
              f"| final rL | {summary.get('final_rL')} |",
              f"| test error | {'n/a' if te is None else f'{100 * te:.2f} %'} |",
              f"| seconds | {summary.get('seconds')} |", "", "![rL](rL.png)"]
    path = p / "report.md"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path

