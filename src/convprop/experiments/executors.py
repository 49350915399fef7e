"""Executors: where a sweep's runs train.

``serial`` (this process), ``process`` (a spawn pool of ``--workers`` processes, default
one per core, each with one BLAS thread and the data set loaded once per worker), ``ray``
(``ray.remote`` tasks on a local or remote Ray cluster; each task sends its files back to
the driver, which writes them, so no shared file system is needed).  Every run is
seeded and the network's results do not depend on its thread count, so the numbers do
not depend on the executor, the number of workers or ``--threads``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.experiments.runs import Run
from convprop.fileio import atomic_open, ensure_dir

EXECUTORS = ("process", "serial", "ray")
THREAD_ENV = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                     "VECLIB_MAXIMUM_THREADS", "CONVPROP_NUM_THREADS")}

_DATASETS: dict[str, Any] = {}


def dataset(data: str):
    """The data set, loaded once per process (each worker keeps its own copy)."""
    if data not in _DATASETS:
        from convprop.data.mnist import load_data

        _DATASETS[data] = load_data(data)
    return _DATASETS[data]


def execute_run(run: Run, run_dir: str, threads: int = 1) -> dict[str, Any]:
    """Train ``run`` into ``run_dir`` (a worker's job) with ``threads`` threads for the
    network; returns its summary.json."""
    from convprop.maths.network import set_num_threads
    from convprop.training.jobs import run_training

    set_num_threads(threads)
    # One BLAS thread whatever the executor (a multi-threaded BLAS may sum in another
    # order); a diverging run overflows, which is reported as such, not warned about.
    with _one_blas_thread(), np.errstate(all="ignore"):
        return run_training(run.config(), run_dir, dataset=dataset(run.data)).summary


def _execute_run_files(run: Run, threads: int = 1
                       ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Ray task: train in a temporary folder, return the summary and the files' bytes."""
    with tempfile.TemporaryDirectory(prefix="convprop-") as tmp:
        summary = execute_run(run, tmp, threads)
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


def check_executor(executor: str) -> None:
    """Raise ConvpropError now, before any run trains, when ``executor`` is unknown or
    needs an optional extra that is not installed (Ray for ``ray``)."""
    if executor not in EXECUTORS:
        raise ConvpropError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConvpropError("--executor ray needs Ray: pip install 'convprop[ray]'")


def execute(runs: Sequence[Run], root: Path, executor: str = "process",
            workers: int | None = None, address: str | None = None, threads: int = 1
            ) -> Iterator[tuple[Run, dict[str, Any]]]:
    """Train ``runs`` into ``root/<run.name>``, each with ``threads`` network threads;
    yield (run, summary) as each finishes."""
    check_executor(executor)
    if not runs:
        return
    workers = workers or default_workers()
    if executor == "serial" or (executor == "process" and (workers == 1 or len(runs) == 1)):
        for run in runs:
            yield run, execute_run(run, str(root / run.name), threads)
    elif executor == "process":
        yield from _execute_processes(runs, root, min(workers, len(runs)), threads)
    else:
        yield from _execute_ray(runs, root, address, workers, threads)


def _execute_processes(runs, root, workers, threads):
    """Spawned workers import the caller's main module: a script that sweeps needs the
    usual ``if __name__ == "__main__":`` guard (as with any spawn pool)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # The workers inherit THREAD_ENV at spawn, before they import numpy.
    with _env(THREAD_ENV):
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            pending = {pool.submit(execute_run, r, str(root / r.name), threads): r
                       for r in runs}
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


def _execute_ray(runs, root, address, workers, threads):
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
    task = ray.remote(num_cpus=threads)(_execute_run_files)
    pending = {task.remote(r, threads): r for r in runs}
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


