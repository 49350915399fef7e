"""Training and evaluation: the toolbox's ``cnntrain`` / ``cnntest`` loop, seeded.

One iteration = one mini-batch: forward, back-propagate (equations 1-14), one SGD
step.  Each epoch visits the training set in a fresh random order; a final
partial batch is dropped (the toolbox refuses sizes that do not divide).  The
smoothed loss is the toolbox's ``rL``: rL_1 = L_1, then rL <- 0.99·rL + 0.01·L.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError, short_reason
from convprop.maths import team
from convprop.maths.network import Network, get_num_threads
from convprop.maths.optim import get_optimizer
from convprop.training import diagnostics
from convprop.training.config import TrainConfig

RESULT_FILES = ("metrics.csv", "summary.json", "model.npz", "checkpoint.npz")
STATUSES = ("completed", "diverged", "stalled")  # a finished run's; unfinished: "interrupted"
CHANCE_FRACTION = 0.97  # test error >= this x a constant answer's error: "at chance level"
RUNAWAY = 5.0  # a learned activation parameter beyond +-5 has run away (they start in [0, 1])


def to_float(images: np.ndarray, dtype: Any) -> np.ndarray:
    """Pixels as ``dtype`` floats: uint8 images scaled to [0, 1] by ``x *= 1/255`` (the
    one pixel conversion of training, evaluation and prediction); float images as given."""
    x = np.asarray(images).astype(dtype)
    if np.asarray(images).dtype == np.uint8:
        x *= 1.0 / 255
    return x


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
        return to_float(self.images[idx], self.net.dtype), self.labels[idx]

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
        # compile (first run only) before the bar starts, so its estimate is the training's;
        # meanwhile the worker processes that share each batch start
        team.start(get_num_threads())
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
                self.message = self.what_happened()
        return self.result()

    def baseline(self) -> float:
        """The loss of the best constant output on this training set."""
        p = np.bincount(self.labels, minlength=self.net.n_outputs) / len(self.labels)
        return float(self.net.loss.constant_baseline(p))

    def judge(self, test_error: float | None, chance_error: float) -> None:
        """The rule of a run that learned nothing, whatever its curve did: a finished run
        whose last batch losses (the last tenth, at least 10) are on average no better than
        the best constant output *and* whose test error is at chance level
        (>= ``CHANCE_FRACTION`` x the error of always answering the commonest test label)
        is ``stalled``.  A slow starter whose test error is already below chance is not."""
        if self.status != "completed" or test_error is None or not self.losses:
            return
        tail = np.asarray(self.losses[-max(10, len(self.losses) // 10):], dtype=float)
        if tail.mean() >= self.baseline() and test_error >= CHANCE_FRACTION * chance_error:
            self.status = "stalled"
            self.message = self.what_happened(
                f"test error {100 * test_error:.2f}% is at chance level "
                f"({100 * chance_error:.2f}% for a constant answer)")

    def what_happened(self, also: str = "") -> str:
        """One line on how a run failed to learn: the loss rose, the outputs saturated
        (every recent batch loss the same), a learned parameter ran away, or the loss
        stayed near the level of a constant output."""
        losses, rl = np.asarray(self.losses, dtype=float), np.asarray(self.rl, dtype=float)
        parts = []
        if len(rl) and rl[-1] > 1.05 * rl[0]:
            parts.append(f"the smoothed loss rose from {rl[0]:.3g} to {rl[-1]:.3g}")
        tail = losses[-max(1, len(losses) // 4):]
        if len(tail) >= 10 and np.ptp(tail) < 1e-3 * max(abs(tail.mean()), 1e-12):
            parts.append(f"every batch loss of the last quarter is {tail.mean():.4g}: the "
                         f"outputs saturated and no longer depend on the input")
        runaway = [(k, float(np.max(np.abs(v)))) for k, v in learned_params(self.net).items()
                   if np.max(np.abs(v)) > RUNAWAY]
        if runaway:
            name, value = max(runaway, key=lambda kv: kv[1])
            parts.append(f"the learned parameter {name} ran away to {value:.3g}")
        if not parts:
            parts.append(f"the smoothed loss stayed at {rl[-1]:.3g}, no better than a "
                         f"constant output ({self.baseline():.3g})" if len(rl) else
                         "no iteration ran")
        return "; ".join(parts + [also] if also else parts) + (
            " (try a smaller learning rate or another activation)")

    def state_dict(self) -> dict[str, Any]:
        """The whole state of the run (as the optimisers' ``state_dict``): parameters,
        optimiser state, shuffling RNG, this epoch's permutation and position, iteration,
        losses, seconds and recorded diagnostics.  Arrays are copies."""
        return {"config": self.config.to_dict(), "iteration": self.iteration,
                "total": self.total, "params": {k: np.array(v) for k, v in
                                                self.net.params.items()},
                "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state,
                "perm": None if self.perm is None else self.perm.copy(), "pos": self.pos,
                "losses": np.asarray(self.losses, dtype=np.float64),
                "rl": np.asarray(self.rl, dtype=np.float64), "seconds": self.elapsed,
                "diagnostics": [list(r) for r in self.diagnostics]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`, from a trainer of the same
        config, network and data).  Raises ConvpropError when it does not fit."""
        if TrainConfig.from_dict(dict(state["config"])).validate().to_dict() \
                != self.config.to_dict():
            raise ConvpropError("the state was saved with other training options than "
                                "this run's")
        params, net = state["params"], self.net
        if list(params) != list(net.params):
            raise ConvpropError(f"parameters {list(params)} do not fit the network "
                                f"(expected {list(net.params)})")
        for name, arr in params.items():
            target = net.params[name]
            if arr.shape != target.shape or arr.dtype != target.dtype:
                raise ConvpropError(f"parameter {name} is {arr.dtype}{arr.shape}, the "
                                    f"network needs {target.dtype}{target.shape}")
        perm = state.get("perm")
        if perm is not None and len(perm) != len(self.images):
            raise ConvpropError(f"permutation of {len(perm)} images for a training set "
                                f"of {len(self.images)}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvpropError(f"optimiser or RNG state is not usable "
                                f"({short_reason(exc)})") from None
        for name, arr in params.items():
            net.params[name][...] = arr
        self.perm = None if perm is None else np.array(perm)
        self.pos = int(state["pos"])
        self.iteration = int(state["iteration"])
        self.losses = [float(v) for v in state["losses"]]
        self.rl = [float(v) for v in state["rl"]]
        self.seconds = float(state.get("seconds", 0.0))
        self.diagnostics = [tuple(r) for r in state.get("diagnostics", [])]

    def result(self) -> TrainResult:
        return TrainResult(self.status, self.iteration, np.asarray(self.losses, dtype=float),
                           np.asarray(self.rl, dtype=float), self.seconds, self.message)


def train(net: Network, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
          progress: bool = False,
          callback: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train ``net`` in place on images (N, H, W) uint8 or floats in [0, 1] and int labels.

    Stops early with status ``diverged`` at the first non-finite loss; a run whose loss
    stopped moving at the level of a constant output is ``stalled`` (see
    :func:`detect_stall`; :meth:`Trainer.judge` adds the test-error rule)."""
    return Trainer(net, images, labels, config).run(progress, callback)


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, unit="it", file=sys.stderr, leave=False,
               dynamic_ncols=True, mininterval=0.5,
               desc="training")
    bar.refresh()
    return bar


def error_rate(net: Network, images: np.ndarray, labels: np.ndarray,
               chunk: int = 1000) -> float:
    """Fraction of images whose arg-max output is not their label (``cnntest``)."""
    return float(np.mean(predict(net, images, chunk) != labels))


def predict(net: Network, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Predicted labels, computed ``chunk`` images at a time (bounded memory)."""
    out = np.empty(len(images), dtype=np.int64)
    for i in range(0, len(images), chunk):
        out[i : i + chunk] = net.forward(to_float(images[i : i + chunk], net.dtype)).argmax(axis=1)
    return out


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n: int = 10) -> np.ndarray:
    """(n, n) counts: row = true label, column = predicted label."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


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
