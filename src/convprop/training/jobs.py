"""The ``convprop train`` and ``convprop evaluate`` jobs, as library calls.

:func:`run_training` loads the data, builds the network, trains, evaluates and writes
``metrics.csv``, ``summary.json`` and ``model.npz`` (atomically); :func:`resume_training`
continues an interrupted run from its checkpoint, refusing options that conflict with the
stored ones; :func:`evaluate_model` checks that a model fits a test set and scores it.
Both training calls return a :class:`RunResult` (the network and the summary).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.fileio import ensure_dir, write_csv, write_json
from convprop.maths.network import Network
from convprop.training import diagnostics
from convprop.training.checkpoint import (
    checkpoint_path,
    data_fingerprint,
    data_source,
    load_checkpoint,
    save_checkpoint,
)
from convprop.training.config import SAMPLE_EPOCHS, TrainConfig
from convprop.training.trainer import (
    RESULT_FILES,
    Trainer,
    confusion_matrix,
    learned_params,
    predict,
)

__all__ = ["RunResult", "run_training", "resume_training", "evaluate_model", "Evaluation"]


@dataclass
class RunResult:
    """What a training job returns: the trained ``network``, the ``summary`` (the contents
    of summary.json) and the run folder (None when nothing was written).
    ``result["status"]`` reads the summary."""

    network: Network
    summary: dict[str, Any]
    out_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.summary.get(key, default)


def versions() -> dict[str, str]:
    import convprop

    return {"convprop": convprop.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConvpropError(f"{what} must be a positive integer, got {value!r}")


def _refuse_results(out: Path, force: bool) -> None:
    """A folder that holds a run's results is not overwritten unless ``force``."""
    held = [n for n in ("summary.json", "metrics.csv", "model.npz") if (out / n).exists()]
    if held and not force and checkpoint_path(out).exists():
        raise ConvpropError(f"{out} holds an unfinished run: continue it with --resume {out}, "
                            f"or give --force to start again there")
    if held and not force:
        raise ConvpropError(f"{out} already holds the results of a run ({held[0]}); give "
                            f"another --out, or --force to overwrite them")


def run_training(config: TrainConfig, out_dir: str | os.PathLike | None = None,
                 dataset: Any = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, checkpoint_every: int | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 force: bool = True) -> RunResult:
    """The ``convprop train`` job: load data, build, train, evaluate, and write
    ``metrics.csv``, ``summary.json`` and ``model.npz`` into ``out_dir`` (atomically).

    Neither epochs nor iterations set: :data:`~convprop.training.config.SAMPLE_EPOCHS`
    epochs on the bundled sample, one epoch otherwise.  ``force=False`` refuses an
    ``out_dir`` that already holds results.  ``checkpoint_every=N`` writes
    ``out_dir/checkpoint.npz`` every N iterations; when ``should_stop()`` turns true
    (e.g. a :class:`~convprop.training.checkpoint.StopOnSignal`) the run stops after the
    current iteration and writes a checkpoint, ``metrics.csv`` and a summary with status
    ``interrupted``; :func:`resume_training` continues it."""
    from convprop.data.mnist import load_data

    config.validate()
    if checkpoint_every is not None:
        _positive_int("checkpoint interval", checkpoint_every)
    out = ensure_dir(out_dir, RESULT_FILES) if out_dir is not None else None
    if out is not None:
        _refuse_results(out, force)
    data = dataset if dataset is not None else load_data(config.data)
    sized = config.with_default_length(getattr(data, "name", None))
    net = Network.from_spec(sized.spec, activation=sized.activation,
                            input_shape=data.train_x.shape[1:],
                            n_outputs=getattr(data, "n_classes", 10),
                            seed=sized.seed, dtype=sized.dtype, init=sized.init,
                            loss=sized.loss)
    net.class_names = getattr(data, "class_names", None)  # kept in the model file
    trainer = Trainer(net, data.train_x, data.train_y, sized)  # checks batch size vs data
    if log:
        log(f"data: {data.description}")
        if sized is not config:
            log(f"training {SAMPLE_EPOCHS} epochs of the sample (as many images as one "
                f"epoch of full MNIST); --epochs or --iterations to change")
    return _run_job(trainer, data, out, progress, log, checkpoint_every, should_stop)


def resume_training(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None,
                    dataset: Any = None, progress: bool = False,
                    log: Callable[[str], None] | None = None,
                    checkpoint_every: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Continue the run whose folder ``run_dir`` holds a ``checkpoint.npz``, with the
    config stored there, and finish it as :func:`run_training` would have: the result is
    bit-for-bit that of the run left alone.  ``overrides`` are options the user gave
    again (e.g. typed on the command line): each must equal the stored value, else a
    ConvpropError names it.  The data are loaded again from the stored source (or pass
    ``dataset``) and must match the checkpoint's fingerprint.  ``checkpoint_every``
    defaults to the stored interval."""
    from convprop.data.mnist import load_data

    ckpt = load_checkpoint(run_dir)
    config = ckpt.config()
    stored = config.to_dict()
    for key, value in (overrides or {}).items():
        if key not in stored:
            raise ConvpropError(f"unknown training option {key!r}")
        given = TrainConfig.from_dict({**stored, key: value}).validate().to_dict()[key]
        same_data = key == "data" and (value is None or value == ckpt.data_source or (
            isinstance(value, str) and Path(value).is_dir()
            and str(Path(value).resolve()) == ckpt.data_source))
        if given != stored[key] and not same_data:
            flag = "--" + key.replace("_", "-")
            shown = ckpt.data_source if key == "data" else stored[key]
            raise ConvpropError(f"--resume continues {run_dir} with its stored options: "
                                f"{flag} {value} conflicts with the stored {shown} "
                                f"(start a new run with --out to change it)")
    out = ensure_dir(run_dir, RESULT_FILES)
    data = dataset if dataset is not None else load_data(ckpt.data_source)
    net = Network(config.spec, config.activation, data.train_x.shape[1:],
                  getattr(data, "n_classes", 10), config.dtype, config.loss)
    net.class_names = getattr(data, "class_names", None)
    trainer = Trainer(net, data.train_x, data.train_y, config)
    ckpt.restore(trainer)
    if log:
        log(f"data: {data.description}")
        log(f"resuming {out} at iteration {trainer.iteration} of {trainer.total}")
    every = checkpoint_every if checkpoint_every is not None else ckpt.meta.get("every")
    return _run_job(trainer, data, out, progress, log, every, should_stop)


def chance_error(labels: np.ndarray) -> float:
    """The test error of always answering the commonest label."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(1 - counts.max() / counts.sum()) if counts.sum() else 1.0


def _run_job(trainer: Trainer, data: Any, out: Path | None, progress: bool,
             log: Callable[[str], None] | None, checkpoint_every: int | None,
             should_stop: Callable[[], bool] | None) -> RunResult:
    """Train (checkpointing as asked), evaluate, write the results; see run_training."""
    from convprop.interop.model import save_model
    from convprop.training.trainer import error_rate

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
        trainer.judge(test_error, chance_error(data.test_y))
        result = trainer.result()
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
    return RunResult(net, summary, out)


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class Evaluation:
    """A model's test error, predictions and confusion matrix (rows: true labels)."""

    error: float
    wrong: int
    predicted: np.ndarray
    confusion: np.ndarray


def trained_on(net: Network) -> str | None:
    """The data source a loaded model was trained on, when its record names one that can
    be loaded again (``sample``, ``mnist`` or an existing folder); else None."""
    summary = getattr(net, "summary", None) or {}
    config = getattr(net, "config", None) or {}
    for name in ((summary.get("data") or {}).get("name"), config.get("data")):
        if name in ("sample", "mnist"):
            return name
        if isinstance(name, str) and Path(name).exists():
            return name
    return None


def evaluate_model(net: Network, data: Any, label: str = "the model") -> Evaluation:
    """Score ``net`` on ``data``'s test set after checking that the images fit the
    network's input and the labels its outputs (ConvpropError naming ``label`` if not)."""
    want = net.input_shape[1:] if net.input_shape[0] == 1 else net.input_shape
    if tuple(data.test_x.shape[1:]) != tuple(want):
        raise ConvpropError(f"{label}: the model takes {'x'.join(map(str, want))} images, "
                            f"the test set has {'x'.join(map(str, data.test_x.shape[1:]))}")
    if data.test_y.max(initial=0) >= net.n_outputs:
        raise ConvpropError(f"{label}: the model has {net.n_outputs} outputs, the test "
                            f"set has label {int(data.test_y.max())}")
    ours, theirs = getattr(net, "class_names", None), getattr(data, "class_names", None)
    if ours and theirs and list(ours) != list(theirs):
        raise ConvpropError(f"{label}: the model's classes ({', '.join(ours)}) are not "
                            f"the data's ({', '.join(theirs)})")
    pred = predict(net, data.test_x)
    wrong = int(np.sum(pred != data.test_y))
    return Evaluation(float(np.mean(pred != data.test_y)), wrong, pred,
                      confusion_matrix(data.test_y, pred, net.n_outputs))
