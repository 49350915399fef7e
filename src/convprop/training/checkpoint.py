"""Checkpoints: everything needed to continue a training run exactly where it stopped.

A run resumed from a checkpoint ends with bit-for-bit the parameters and
``metrics.csv`` of the same run left alone (given the same BLAS thread count), because
the checkpoint holds ``Trainer.state_dict()``, the whole state of the run, plus metadata:

- the parameters, and the optimiser's state (its ``state_dict()``);
- the shuffling RNG's bit-generator state, the current epoch's permutation and the
  position in it;
- the iteration count, every batch loss L and smoothed loss rL so far, the seconds spent;
- the training config, the data source and a fingerprint (sha256) of the training set.

File: ``<run dir>/checkpoint.npz``, an uncompressed NumPy archive read with
``allow_pickle=False`` (loading never runs code from the file).  ``__meta__`` is JSON
(``format`` "convprop-checkpoint", ``version`` 1, ``iteration``, ``config``, ``data``,
``network``, ``rng``, ``pos``, ``params``, ``optimizer``, ``seconds``, ``every``,
``extra``: further trainer records such as diagnostics); the arrays are
``param/<name>``, ``optim/<key>``, ``perm``, ``losses`` and ``rl``.  It is written
atomically (temporary file, fsync, rename), so a kill at any moment leaves the previous
checkpoint or the new one.  It is removed once the run has finished and written its
results: a run folder holds a checkpoint exactly while its run is unfinished.

:class:`StopOnSignal` turns SIGINT / SIGTERM into a request the training loop honours
after the current iteration, so ``convprop train`` can write a checkpoint and exit
with 130 / 143; further signals while it writes are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convprop.errors import CheckpointError, ConvpropError, short_reason
from convprop.fileio import NotAnArchive, open_npz, write_npz
from convprop.training.config import TrainConfig

FORMAT = "convprop-checkpoint"
VERSION = 1
FILENAME = "checkpoint.npz"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """Where the checkpoint of the run in ``run_dir`` lives."""
    return Path(run_dir) / FILENAME


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the training images and labels (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for a in (images, labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def data_source(data: Any) -> str | None:
    """What ``load_data`` needs to load ``data`` again: its name, a folder made absolute."""
    name = getattr(data, "name", None)
    if name in ("sample", "mnist") or name is None:
        return name
    return str(Path(name).resolve()) if Path(name).is_dir() else str(name)


def network_meta(net: Any) -> dict[str, Any]:
    """What a checkpoint records of the network, to check it is resumed into the same."""
    return {"spec": net.spec, "activation": net.activation.name,
            "input_shape": list(net.input_shape), "n_outputs": net.n_outputs,
            "dtype": net.dtype.name, "loss": net.loss.name}


def save_checkpoint(trainer: Any, path: str | os.PathLike, data_source: str | None = None,
                    fingerprint: str | None = None, every: int | None = None) -> None:
    """Write ``trainer.state_dict()`` plus metadata (network, data source and fingerprint,
    checkpoint interval) to ``path`` atomically.  ``data_source`` is what ``load_data``
    needs to load the same data again (``sample``, ``mnist`` or a folder)."""
    state = trainer.state_dict()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": state["iteration"],
        "total": state["total"],
        "config": state["config"],
        "data": {"source": data_source, "n_train": int(len(trainer.images)),
                 "sha256": fingerprint or data_fingerprint(trainer.images, trainer.labels)},
        "network": network_meta(trainer.net),
        "rng": state["rng"],
        "pos": state["pos"],
        "params": list(state["params"]),
        "optimizer": {"name": getattr(trainer.optimizer, "name", ""),
                      "state": list(state["optimizer"])},
        "seconds": state["seconds"],
        "every": every,
        "extra": {"diagnostics": state["diagnostics"]},
    }
    arrays = {"__meta__": np.array(json.dumps(meta, default=_plain))}
    arrays.update({f"param/{k}": v for k, v in state["params"].items()})
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in state["optimizer"].items()})
    perm = state["perm"]
    arrays["perm"] = np.asarray(perm if perm is not None else np.zeros(0, dtype=np.int64))
    arrays["losses"] = state["losses"]
    arrays["rl"] = state["rl"]
    write_npz(path, arrays)


@dataclass
class Checkpoint:
    """A validated checkpoint, read by :func:`load_checkpoint`."""

    path: Path
    meta: dict[str, Any]
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    perm: np.ndarray | None
    losses: np.ndarray
    rl: np.ndarray

    @property
    def iteration(self) -> int:
        return int(self.meta["iteration"])

    @property
    def data_source(self) -> str | None:
        return self.meta["data"].get("source")

    def config(self) -> TrainConfig:
        """The stored training options, validated."""
        try:
            return TrainConfig.from_dict(dict(self.meta["config"])).validate()
        except (ConvpropError, TypeError) as exc:
            raise CheckpointError(f"{self.path}: stored config is not usable ({exc})") from None

    def state_dict(self) -> dict[str, Any]:
        """The trainer state held here, for ``Trainer.load_state_dict``."""
        m = self.meta
        return {"config": m["config"], "iteration": self.iteration, "total": m["total"],
                "params": self.params, "optimizer": self.optimizer_state, "rng": m["rng"],
                "perm": self.perm, "pos": m["pos"], "losses": self.losses, "rl": self.rl,
                "seconds": m.get("seconds", 0.0),
                "diagnostics": m.get("extra", {}).get("diagnostics", [])}

    def restore(self, trainer: Any) -> None:
        """Put this state into ``trainer`` (built from the same config and data); refuse a
        trainer whose config, network or training set differ from the checkpoint's."""
        p, meta = self.path, self.meta
        if trainer.config.to_dict() != self.config().to_dict():
            raise CheckpointError(f"{p}: the checkpoint was written with other training "
                                  f"options than this run's")
        for key, value in network_meta(trainer.net).items():
            if meta["network"].get(key) != value:
                raise CheckpointError(f"{p}: network {key} {meta['network'].get(key)!r} does "
                                      f"not match this run's {value!r}")
        d = meta["data"]
        if d.get("n_train") != len(trainer.images) or \
                d.get("sha256") != data_fingerprint(trainer.images, trainer.labels):
            raise CheckpointError(f"{p}: the training set differs from the one the checkpoint "
                                  f"was written with ({d.get('n_train')} images from "
                                  f"{d.get('source')!r})")
        try:
            trainer.load_state_dict(self.state_dict())
        except ConvpropError as exc:
            raise CheckpointError(f"{p}: {exc}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file (or the ``checkpoint.npz`` of a run folder).
    Raises CheckpointError with a one-line message for a missing, truncated, foreign or
    inconsistent file."""
    p = Path(path)
    if p.is_dir():
        p = checkpoint_path(p)
        if not p.exists():
            raise CheckpointError(f"{p.parent}: no {FILENAME} to resume from (a run writes "
                                  f"one with --checkpoint-every N or when interrupted, and "
                                  f"removes it once finished)")
    if not p.exists():
        what = "checkpoint" if p.suffix == ".npz" else "run folder"
        raise CheckpointError(f"{what} {str(p)!r} does not exist: no {FILENAME} to resume from")
    try:
        with open_npz(p) as archive:
            meta = _meta(p, _array(p, archive, "__meta__"))
            params = {k: _array(p, archive, f"param/{k}") for k in meta["params"]}
            state = {k: _array(p, archive, f"optim/{k}") for k in meta["optimizer"]["state"]}
            perm = _array(p, archive, "perm")
            losses = _array(p, archive, "losses")
            rl = _array(p, archive, "rl")
    except NotAnArchive as exc:
        raise CheckpointError(f"{p}: not a convprop checkpoint ({exc.reason})") from None
    it = meta["iteration"]
    for name, arr in (("losses", losses), ("rl", rl)):
        if arr.shape != (it,) or arr.dtype != np.float64:
            raise CheckpointError(f"{p}: {name} is {arr.dtype}{arr.shape}, expected {it} "
                                  f"float64 values for iteration {it}")
    n = meta["data"].get("n_train")
    if perm.size == 0:
        perm_or_none = None
    elif (perm.ndim != 1 or not np.issubdtype(perm.dtype, np.integer) or len(perm) != n
          or not np.array_equal(np.sort(perm), np.arange(n))):
        raise CheckpointError(f"{p}: 'perm' is not a permutation of the {n} training images")
    else:
        perm_or_none = perm
    pos = meta["pos"]
    if not isinstance(pos, int) or not 0 <= pos <= (n or 0):
        raise CheckpointError(f"{p}: position {pos!r} in the permutation is out of range")
    for name, arr in params.items():
        if not np.issubdtype(arr.dtype, np.floating):
            raise CheckpointError(f"{p}: parameter {name} has dtype {arr.dtype}, expected "
                                  f"floats")
    return Checkpoint(p, meta, params, state, perm_or_none, losses, rl)


def _array(p: Path, archive, key: str) -> np.ndarray:
    if key not in archive.files:
        raise CheckpointError(f"{p}: missing array {key!r} (not a convprop checkpoint, or "
                              f"damaged)")
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{p}: array {key!r} is unreadable ({short_reason(exc)})") from None


_FIELDS = {"iteration": int, "total": int, "config": dict, "data": dict, "network": dict,
           "rng": dict, "pos": int, "params": list, "optimizer": dict, "seconds": (int, float)}


def _meta(p: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{p}: metadata is not valid JSON ({short_reason(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{p}: not a convprop checkpoint (format {fmt!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{p}: checkpoint version {meta.get('version')!r} is not "
                              f"supported (this convprop reads version {VERSION})")
    for name, kind in _FIELDS.items():
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            raise CheckpointError(f"{p}: metadata field {name!r} is missing or malformed")
    if not 0 <= meta["iteration"] <= max(meta["total"], 0):
        raise CheckpointError(f"{p}: iteration {meta['iteration']} is out of range "
                              f"0..{meta['total']}")
    extra = meta.setdefault("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise CheckpointError(f"{p}: metadata field 'extra' is malformed")
    if not isinstance(meta["optimizer"].get("state"), list):
        raise CheckpointError(f"{p}: metadata field 'optimizer' is malformed")
    every = meta.get("every")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool)
                              or every < 1):
        raise CheckpointError(f"{p}: checkpoint interval {every!r} is not a positive integer")
    return meta


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class StopOnSignal:
    """Within ``with StopOnSignal() as stop:``, SIGINT and SIGTERM do not kill the process:
    the first one sets ``stop.signum``, and ``stop()`` (pass it as ``should_stop``) turns
    true, so the training loop stops after the current iteration and writes a
    checkpoint.  Later signals only print a note: nothing is interrupted half-written.
    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            note = f"\n{name}: stopping after this iteration and writing a checkpoint\n"
        else:
            note = f"\n{name}: still writing the checkpoint, please wait\n"
        os.write(2, note.encode())  # print() is not safe inside a signal handler

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
