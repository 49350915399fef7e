"""The networks an explorer server holds, and the default model it starts from.

Slots: ``main`` (the model given on the command line, or the paper's network trained on
the bundled sample) and ``live`` (the network trained in the page, once a job has
started).  Each slot has a lock: a request traces the network while no update is
half-applied.

The default model: the paper's ``6c5-2s-12c5-2s`` sigmoid network, learning rate 1,
batch 50 (DeepLearnToolbox's settings), trained :data:`DEFAULT_EPOCHS` epochs on the
bundled sample, then kept as ``explore/paper-sample.npz`` in :func:`cache_dir` so that
later starts load it in milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convprop.data import load_data
from convprop.data.mnist import cache_dir
from convprop.errors import ConvpropError
from convprop.interop.model import load_model, save_model
from convprop.maths.network import Network
from convprop.maths.optim import get_optimizer

DEFAULT_SPEC = "6c5-2s-12c5-2s"
DEFAULT_ACTIVATION = "sigmoid"
DEFAULT_LR = 1.0
DEFAULT_BATCH = 50
DEFAULT_EPOCHS = 10
DEFAULT_SEED = 0
DEFAULT_NAME = "paper-sample.npz"


@dataclass
class Slot:
    """One network the page can ask about."""

    net: Network
    source: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    test_error: float | None = None


def default_model_path() -> Path:
    return cache_dir() / "explore" / DEFAULT_NAME


def train_default(data: Any, log=None) -> Network:
    """The paper's network trained on ``data``'s training set (see the module docstring):
    plain SGD on mini-batches, each epoch a fresh seeded permutation."""
    net = Network.from_spec(DEFAULT_SPEC, activation=DEFAULT_ACTIVATION, seed=DEFAULT_SEED,
                            dtype="float32")
    opt = get_optimizer("sgd", DEFAULT_LR)
    rng = np.random.default_rng(DEFAULT_SEED)
    n = len(data.train_x) // DEFAULT_BATCH * DEFAULT_BATCH
    for epoch in range(DEFAULT_EPOCHS):
        if log is not None:
            log(f"convprop explore: training the default model, epoch {epoch + 1} of "
                f"{DEFAULT_EPOCHS}")
        perm = rng.permutation(len(data.train_x))[:n].reshape(-1, DEFAULT_BATCH)
        for idx in perm:
            x = data.train_x[idx].astype(np.float32) * np.float32(1 / 255)
            _, grads = net.loss_and_grads(x, data.train_y[idx])
            opt.step(net.params, grads)
    return net


def default_config() -> dict[str, Any]:
    return {"spec": DEFAULT_SPEC, "activation": DEFAULT_ACTIVATION, "lr": DEFAULT_LR,
            "batch_size": DEFAULT_BATCH, "epochs": DEFAULT_EPOCHS, "seed": DEFAULT_SEED,
            "data": "sample", "dtype": "float32"}


def load_default(data: Any, log=None) -> Network:
    """The cached default model; trained and cached first when absent, unreadable or
    made with other settings (its recorded config differs)."""
    path = default_model_path()
    config = default_config()
    if path.is_file():
        try:
            net = load_model(path)
            if getattr(net, "config", None) == config:
                return net
        except ConvpropError as exc:
            if log is not None:
                log(f"convprop explore: retraining the default model ({exc})")
    net = train_default(data, log)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(net, path, config=config)
        net.config = config
    except (OSError, ConvpropError) as exc:  # a read-only cache: train again next time
        if log is not None:
            log(f"convprop explore: cannot keep the default model in {path} ({exc})")
    return net


class Explorer:
    """What the server knows: the data set (for random test images and live training)
    and the network slots.  ``model``: a model file path from the command line, a
    :class:`Network`, or None for the default model."""

    def __init__(self, model: str | Network | None = None, data: Any = None, log=None):
        self.data = data if data is not None else load_data("sample")
        if isinstance(model, Network):
            net, source = model, "given network"
        elif model is None:
            net, source = load_default(self.data, log), "paper's network, bundled sample"
        else:
            net, source = load_model(model), Path(model).name
        if net.input_shape != (1, 28, 28) or net.n_outputs != 10:
            raise ConvpropError(f"model {source}: the explorer needs 28 x 28 grey inputs and "
                                f"10 outputs, got input {net.input_shape} and "
                                f"{net.n_outputs} outputs")
        self.slots: dict[str, Slot] = {"main": Slot(net, source)}
        self.rng = np.random.default_rng()
        self.job: Any = None  # the live training job (convprop.explore.training)
        self.job_lock = threading.Lock()
        self.warm_up()

    def warm_up(self) -> None:
        """One trace, so compiled kernels are ready before the first drawing."""
        net = self.slots["main"].net
        net.trace(np.zeros((1, 28, 28), dtype=net.dtype), np.array([0]))

    def slot(self, name: Any) -> Slot:
        if name is None:
            name = "main"
        if not isinstance(name, str) or name not in self.slots:
            known = ", ".join(self.slots)
            raise ConvpropError(f"no network {str(name)[:20]!r} (now: {known})")
        return self.slots[name]

    def random_test_image(self) -> tuple[np.ndarray, int, int]:
        """A random test image as (28, 28) in [0, 1], its label and its index."""
        i = int(self.rng.integers(len(self.data.test_x)))
        return self.data.test_x[i] / 255.0, int(self.data.test_y[i]), i

    def info(self) -> dict[str, Any]:
        return {name: {"source": s.source, "spec": s.net.spec,
                       "activation": s.net.activation.name, "dtype": s.net.dtype.name,
                       "layers": [r["name"] for r in s.net.describe()],
                       "test_error": s.test_error}
                for name, s in self.slots.items()}
