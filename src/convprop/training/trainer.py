"""Training and evaluation: the toolbox's ``cnntrain`` / ``cnntest`` loop, seeded.

One iteration = one mini-batch: forward, back-propagate (equations 1-14), one SGD
step.  Each epoch visits the training set in a fresh random order; a final
partial batch is dropped (the toolbox refuses sizes that do not divide).  The
smoothed loss is the toolbox's ``rL``: rL_1 = L_1, then rL <- 0.99·rL + 0.01·L.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.fileio import ensure_dir, write_csv, write_json
from convprop.maths.activations import get_activation
from convprop.maths.losses import get_loss
from convprop.maths.network import DEFAULT_SPEC, INITS, Network, get_dtype, parse_spec
from convprop.maths.optim import (
    DEFAULT_BETAS,
    DEFAULT_MOMENTUM,
    check_learning_rate,
    get_optimizer,
)
from convprop.training import diagnostics

RESULT_FILES = ("metrics.csv", "summary.json", "model.npz", "checkpoint.npz")
STATUSES = ("completed", "diverged", "stalled")  # a finished run's; unfinished: "interrupted"


@dataclass
class TrainConfig:
    """Every option of a training run (the flags of ``convprop train``)."""

    spec: str = DEFAULT_SPEC
    activation: str = "sigmoid"
    lr: float = 1.0
    batch_size: int = 50
    epochs: int | None = None
    iterations: int | None = None
    seed: int = 0
    dtype: str = "float32"
    data: str | None = None
    loss: str = "mse"
    optimizer: str = "sgd"
    init: str = "dlt"
    # beyond the paper: optimiser settings and gradient-flow diagnostics (0 = off)
    momentum: float = DEFAULT_MOMENTUM
    betas: tuple[float, float] = DEFAULT_BETAS
    diagnostics: int = 0

    def validate(self) -> TrainConfig:
        """Check each value; raise ConvpropError naming the first bad one."""
        _check_types(self)
        check_learning_rate(self.lr)
        _positive_int("batch size", self.batch_size)
        if self.epochs is not None and self.iterations is not None:
            raise ConvpropError("give --epochs or --iterations, not both")
        if self.epochs is not None:
            _positive_int("epochs", self.epochs)
        if self.iterations is not None:
            _positive_int("iterations", self.iterations)
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConvpropError(f"seed must be a non-negative integer, got {self.seed!r}")
        get_dtype(self.dtype)
        parse_spec(self.spec)
        self.activation = get_activation(self.activation).name
        get_loss(self.loss)
        self.betas = tuple(self.betas)  # a list after a JSON round trip
        get_optimizer(self.optimizer, self.lr, self.momentum, self.betas)
        if isinstance(self.diagnostics, bool) or not isinstance(
                self.diagnostics, (int, np.integer)) or self.diagnostics < 0:
            raise ConvpropError(f"diagnostics interval must be an integer >= 0, got "
                                f"{self.diagnostics!r}")
        if self.init not in INITS:
            raise ConvpropError(f"unknown init {self.init!r} (known: {', '.join(INITS)})")
        return self

    def total_iterations(self, n_train: int) -> int:
        per_epoch = n_train // self.batch_size
        if self.iterations is not None:
            return self.iterations
        return (self.epochs if self.epochs is not None else 1) * per_epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConvpropError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def _check_types(config: TrainConfig) -> None:
    """Names must be strings (a config read from JSON can hold anything), the data source a
    string or None, the learning rate a number and not a bool."""
    from convprop.maths.activations import Activation

    for name in ("spec", "activation", "dtype", "loss", "optimizer", "init"):
        value = getattr(config, name)
        if not isinstance(value, str) and not (name == "activation"
                                               and isinstance(value, Activation)) \
                and not (name == "dtype" and any(value is t for t in (np.float32, np.float64))):
            raise ConvpropError(f"{name} must be a string, got {value!r}")
    if config.data is not None and not isinstance(config.data, (str, os.PathLike)):
        raise ConvpropError(f"data must be 'sample', 'mnist' or a directory, got "
                            f"{config.data!r}")
    if isinstance(config.lr, bool):
        raise ConvpropError(f"learning rate must be a positive finite number, got {config.lr!r}")


def _positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConvpropError(f"{what} must be a positive integer, got {value!r}")


@dataclass
class TrainResult:
    status: str  # "completed" | "diverged" | "stalled" | "interrupted"
    iterations: int  # iterations run (the diverged one included)
    losses: np.ndarray  # batch loss L per iteration
    rl: np.ndarray  # smoothed loss rL per iteration
    seconds: float  # wall time of the training loop
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_rl(self) -> float | None:
        return float(self.rl[-1]) if len(self.rl) else None


def smooth(losses: np.ndarray, rl0: float | None = None) -> np.ndarray:
    """The toolbox's rL for a sequence of batch losses."""
    rl = np.empty(len(losses))
    r = rl0
    for i, loss in enumerate(losses):
        r = loss if r is None else 0.99 * r + 0.01 * loss
        rl[i] = r
    return rl


def detect_stall(rl: np.ndarray, baseline: float | None = None,
                 min_iterations: int = 100, losses: np.ndarray | None = None) -> bool:
    """A run *stalled* when its smoothed loss ends no better than guessing and stopped
    moving: rL at the end is above 0.8 x ``baseline`` (the loss of the best constant
    output, see ``losses.MSE.constant_baseline``; without it, half of the first rL) and
    fell by less than 2% over the second half of the run.  The outputs saturated at a
    constant and back-propagation carries (almost) no error.  A slow but steady learner
    is not flagged: its rL keeps falling over the second half.

    With the batch ``losses``, a run is also stalled when its loss is above that level
    and the same for every batch of the last quarter (relative spread below 1e-3): the
    outputs no longer depend on the input (e.g. all saturated at 0, L = 0.5 exactly),
    while rL, a 100-batch average, may still be drifting down from an early peak."""
    rl = np.asarray(rl, dtype=float)
    if len(rl) < min_iterations or not np.all(np.isfinite(rl)):
        return False
    level = 0.8 * baseline if baseline is not None else 0.5 * rl[0]
    mid, last = rl[len(rl) // 2], rl[-1]
    flat = (mid - last) < 0.02 * abs(mid)
    if last > level and flat:
        return True
    if losses is not None and len(losses) >= min_iterations:
        tail = np.asarray(losses[-(len(losses) // 4):], dtype=float)
        return bool(tail.mean() > level and np.ptp(tail) < 1e-3 * tail.mean())
    return False


class Trainer:
    """The training loop's state, one mini-batch at a time.

    Everything needed to continue a run exactly is here: the parameters (in ``net``),
    the optimiser state, the shuffling RNG and the current epoch's permutation and
    position, the iteration count and the losses so far."""

    def __init__(self, net: Network, images: np.ndarray, labels: np.ndarray,
                 config: TrainConfig):
        config.validate()
        n = len(images)
        if n == 0:
            raise ConvpropError("the training set is empty")
        if config.batch_size > n:
            raise ConvpropError(f"batch size {config.batch_size} is larger than the "
                                f"{n} training images")
        self.net, self.images, self.labels, self.config = net, images, labels, config
        self.total = config.total_iterations(n)
        self.rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
        self.optimizer = get_optimizer(config.optimizer, config.lr, config.momentum,
                                       config.betas)
        self.diagnostics: list[tuple[int, str, str, float]] = []  # see diagnostics.py
        self.perm: np.ndarray | None = None  # this epoch's order (``randperm``)
        self.pos = 0  # next unused position in perm
        self.iteration = 0
        self.losses: list[float] = []
        self.rl: list[float] = []
        self.status = "running"
        self.message = ""
        self.seconds = 0.0  # wall time spent in run(), over all sessions of the run
        self._started: float | None = None

    def next_batch(self) -> np.ndarray:
        """Indices of the next mini-batch; a new permutation starts each epoch and a
        final partial batch is dropped."""
        n, bs = len(self.images), self.config.batch_size
        if self.perm is None or self.pos + bs > n:
            self.perm = self.rng.permutation(n)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + bs]
        self.pos += bs
        return idx

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.images[idx].astype(self.net.dtype)
        if self.images.dtype == np.uint8:
            x *= 1.0 / 255
        return x, self.labels[idx]

    def step(self) -> float:
        """One iteration: forward, back-propagate, update.  Returns the batch loss; a
        non-finite loss sets status ``diverged`` and leaves the parameters untouched."""
        x, y = self.batch(self.next_batch())
        every = self.config.diagnostics
        if every and (self.iteration == 0 or (self.iteration + 1) % every == 0):
            # A separate traced pass on the same batch: the update below still comes from
            # the fast path, so a run's numbers are the same with or without diagnostics.
            tr = self.net.trace(x, y)
            self.diagnostics += diagnostics.record(self.net, tr, self.iteration + 1)
        loss, grads = self.net.loss_and_grads(x, y)
        self.iteration += 1
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.rl.append(loss)
            self.status = "diverged"
            self.message = (f"loss became {loss} at iteration {self.iteration}: the run "
                            f"diverged (try a smaller learning rate)")
            return loss
        self.rl.append(loss if not self.rl else 0.99 * self.rl[-1] + 0.01 * loss)
        self.optimizer.step(self.net.params, grads)
        bad = [k for k, v in self.net.params.items() if not np.isfinite(v).all()]
        if bad:
            self.status = "diverged"
            self.message = (f"parameter {bad[0]} became non-finite at iteration "
                            f"{self.iteration}: the run diverged (try a smaller learning rate)")
        return loss

    @property
    def finished(self) -> bool:
        return self.status != "running" or self.iteration >= self.total

    def _step_guarded(self) -> None:
        """:meth:`step`, with a floating-point overflow anywhere in it counted as divergence
        at that iteration (the output sigmoid would hide it: sigmoid(inf) = 1)."""
        before = self.iteration
        try:
            with np.errstate(over="raise", invalid="raise"):
                self.step()
        except FloatingPointError as exc:
            if self.iteration == before:  # in the forward/backward pass: no loss
                self.iteration += 1
                self.losses.append(math.nan)
                self.rl.append(math.nan)
            self.status = "diverged"
            self.message = (f"numerical overflow ({exc}) at iteration {self.iteration}: the "
                            f"run diverged (try a smaller learning rate)")

    @property
    def elapsed(self) -> float:
        """Seconds spent training so far (this session included)."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds + running

    def run(self, progress: bool = False,
            callback: Callable[[Trainer], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Step until done (or diverged); ``callback(trainer)`` runs after each step.
        When ``should_stop()`` turns true (checked before each step) the run stops with
        status ``interrupted``; its state is whole, ready for a checkpoint."""
        # compile (first run only) before the bar starts, so its estimate is the training's
        self.net.compile_kernels((lambda msg: print(msg, file=sys.stderr, flush=True))
                                 if progress else None)
        bar = _progress_bar(self.total, progress, self.iteration)
        self._started = time.perf_counter()
        try:
            while not self.finished:
                if should_stop is not None and should_stop():
                    self.status = "interrupted"
                    self.message = f"interrupted at iteration {self.iteration} of {self.total}"
                    break
                self._step_guarded()
                if callback is not None:
                    callback(self)
                if bar is not None and (self.iteration % 20 == 0 or self.finished):
                    bar.set_postfix_str(f"rL={self.rl[-1]:.4f}", refresh=False)
                    bar.update(self.iteration - bar.n)
        finally:
            self.seconds = self.elapsed
            self._started = None
            if bar is not None:
                bar.close()
        if self.status == "running":
            p = np.bincount(self.labels, minlength=self.net.n_outputs) / len(self.labels)
            baseline = self.net.loss.constant_baseline(p)
            stalled = detect_stall(np.asarray(self.rl), baseline,
                                   losses=np.asarray(self.losses))
            self.status = "stalled" if stalled else "completed"
            if self.status == "stalled":
                self.message = ("the loss stayed flat near its starting value: the outputs "
                                "saturated (try another learning rate or activation)")
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult(self.status, self.iteration, np.asarray(self.losses, dtype=float),
                           np.asarray(self.rl, dtype=float), self.seconds, self.message)


def train(net: Network, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
          progress: bool = False,
          callback: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train ``net`` in place on images (N, H, W) uint8 or floats in [0, 1] and int labels.

    Stops early with status ``diverged`` at the first non-finite loss; a run whose loss
    stayed flat is marked ``stalled`` (see :func:`detect_stall`)."""
    return Trainer(net, images, labels, config).run(progress, callback)


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="it", desc="training", file=sys.stderr,
                leave=False, dynamic_ncols=True, mininterval=0.5)


def error_rate(net: Network, images: np.ndarray, labels: np.ndarray,
               chunk: int = 1000) -> float:
    """Fraction of images whose arg-max output is not their label (``cnntest``)."""
    return float(np.mean(predict(net, images, chunk) != labels))


def predict(net: Network, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Predicted labels, computed ``chunk`` images at a time (bounded memory)."""
    out = np.empty(len(images), dtype=np.int64)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].astype(net.dtype)
        if images.dtype == np.uint8:
            x *= 1.0 / 255
        out[i : i + chunk] = net.forward(x).argmax(axis=1)
    return out


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n: int = 10) -> np.ndarray:
    """(n, n) counts: row = true label, column = predicted label."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def versions() -> dict[str, str]:
    import convprop

    return {"convprop": convprop.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def run_training(config: TrainConfig, out_dir: str | os.PathLike | None = None,
                 dataset: Any = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, checkpoint_every: int | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The ``convprop train`` job: load data, build, train, evaluate, and write
    ``metrics.csv``, ``summary.json`` and ``model.npz`` into ``out_dir`` (atomically).
    Returns the summary.

    ``checkpoint_every=N`` writes ``out_dir/checkpoint.npz`` every N iterations; when
    ``should_stop()`` turns true (e.g. a :class:`convprop.training.checkpoint.StopOnSignal`) the
    run stops after the current iteration, writes a checkpoint, ``metrics.csv`` and a
    summary with status ``interrupted`` (``model.npz`` then holds the parameters so far).
    :func:`resume_training` continues it."""
    from convprop.data.mnist import load_data

    config.validate()
    if checkpoint_every is not None:
        _positive_int("checkpoint interval", checkpoint_every)
    out = ensure_dir(out_dir, RESULT_FILES) if out_dir is not None else None
    data = dataset if dataset is not None else load_data(config.data)
    net = Network.from_spec(config.spec, activation=config.activation,
                            input_shape=data.train_x.shape[1:], n_outputs=10,
                            seed=config.seed, dtype=config.dtype, init=config.init,
                            loss=config.loss)
    trainer = Trainer(net, data.train_x, data.train_y, config)  # checks batch size vs data
    if log:
        log(f"data: {data.description}")
    return _run_job(trainer, data, out, progress, log, checkpoint_every, should_stop)


def resume_training(run_dir: str | os.PathLike, dataset: Any = None, progress: bool = False,
                    log: Callable[[str], None] | None = None,
                    checkpoint_every: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Continue the run whose folder ``run_dir`` holds a ``checkpoint.npz``, with the
    config stored there, and finish it as :func:`run_training` would have: the result is
    bit-for-bit that of the run left alone.  The data are loaded again from the stored
    source (or pass ``dataset``) and must match the checkpoint's fingerprint.
    ``checkpoint_every`` defaults to the stored interval.  Returns the summary."""
    from convprop.data.mnist import load_data
    from convprop.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    config = ckpt.config()
    out = ensure_dir(run_dir, RESULT_FILES)
    data = dataset if dataset is not None else load_data(ckpt.data_source)
    net = Network(config.spec, config.activation, data.train_x.shape[1:], 10, config.dtype,
                  config.loss)
    trainer = Trainer(net, data.train_x, data.train_y, config)
    ckpt.restore(trainer)
    if log:
        log(f"data: {data.description}")
        log(f"resuming {out} at iteration {trainer.iteration} of {trainer.total}")
    every = checkpoint_every if checkpoint_every is not None else ckpt.meta.get("every")
    return _run_job(trainer, data, out, progress, log, every, should_stop)


def _run_job(trainer: Trainer, data: Any, out: Path | None, progress: bool,
             log: Callable[[str], None] | None, checkpoint_every: int | None,
             should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    """Train (checkpointing as asked), evaluate, write the results; see run_training."""
    from convprop.interop.model import save_model
    from convprop.training.checkpoint import (
        checkpoint_path,
        data_fingerprint,
        data_source,
        save_checkpoint,
    )

    if checkpoint_every is not None:
        _positive_int("checkpoint interval", checkpoint_every)
    config, net = trainer.config, trainer.net
    callback = None
    if out is not None:
        source = data_source(data)
        fingerprint = data_fingerprint(trainer.images, trainer.labels)

        def checkpoint(t: Trainer) -> None:
            save_checkpoint(t, checkpoint_path(out), source, fingerprint,
                            every=checkpoint_every)

        if checkpoint_every is not None:
            def callback(t: Trainer) -> None:
                if t.iteration % checkpoint_every == 0 and not t.finished:
                    checkpoint(t)
    result = trainer.run(progress=progress, callback=callback, should_stop=should_stop)
    test_error = None
    if result.status in ("completed", "stalled"):
        test_error = error_rate(net, data.test_x, data.test_y)
    summary = {
        "status": result.status,
        "message": result.message,
        "config": config.to_dict(),
        "data": {"name": data.name, "description": data.description,
                 "n_train": int(len(data.train_x)), "n_test": int(len(data.test_x))},
        "iterations": result.iterations,
        "final_loss": _finite_or_none(result.losses[-1]) if result.iterations else None,
        "final_rL": _finite_or_none(result.final_rl),
        "test_error": test_error,
        "seconds": round(result.seconds, 4),
        "images_per_second": round(result.iterations * config.batch_size
                                   / max(result.seconds, 1e-9), 1),
        "activation_params": learned_params(net),
        "versions": versions(),
    }
    if out is not None:
        if result.status == "interrupted":
            checkpoint(trainer)
            summary["message"] += f"; continue with `convprop train --resume {out}`"
        write_csv(out / "metrics.csv", ["iteration", "loss", "rL"],
                  ((i + 1, repr(float(a)), repr(float(b)))
                   for i, (a, b) in enumerate(zip(result.losses, result.rl))))
        save_model(net, out / "model.npz", config=config.to_dict(), summary=summary)
        if config.diagnostics:
            diagnostics.write_diagnostics(out / diagnostics.FILENAME, trainer.diagnostics)
        write_json(out / "summary.json", summary)
        if result.status != "interrupted":
            checkpoint_path(out).unlink(missing_ok=True)  # finished: nothing to resume
    summary["_network"] = net
    return summary


def learned_params(net: Network) -> dict[str, list[float]]:
    """The learnable activation parameters after training (``conv1.alpha``: values)."""
    return {f"{name}.{p}": [float(v) for v in arr]
            for name, layer in zip(net.layer_names, net.layers) if hasattr(layer, "activation")
            for p, arr in layer.activation.params.items()}


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def read_metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """metrics.csv -> {"iteration": ..., "loss": ..., "rL": ...} arrays."""
    p = Path(path)
    try:
        table = np.genfromtxt(p, delimiter=",", names=True, dtype=float, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ConvpropError(f"cannot read metrics {str(p)!r}: {exc}") from None
    if table.dtype.names is None:
        raise ConvpropError(f"{p}: not a convprop metrics.csv (no header)")
    return {name: np.asarray(table[name]) for name in table.dtype.names}
