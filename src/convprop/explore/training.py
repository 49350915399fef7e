"""The live training job: one per server, in a thread, watched over server-sent events.

A job builds a fresh network from the page's settings (spec, activation, learning rate,
batch size, iterations, seed), installs it as the ``live`` slot and trains it on the
bundled sample with convprop's own ``loss_and_grads`` and optimiser (plain SGD, the
paper's), every :data:`REPORT_EVERY` iterations publishing an event: the batch loss L,
the smoothed rL (rL <- 0.99 rL + 0.01 L, the paper's curve), and the gradient-flow
diagnostics (:func:`convprop.training.diagnostics.record`: mean |δ|, saturated and dead
fractions per layer) of that batch.  At the end it measures the test error.

The job stops when asked, when it has done its iterations, when its loss turns
non-finite, or when its page goes away: :meth:`TrainingJob.detach` (the event stream
closed) and no watcher within :data:`ORPHAN_SECONDS` of the start both stop it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.explore.payload import ApiError
from convprop.explore.state import Explorer, Slot
from convprop.maths.network import Network, parse_spec
from convprop.maths.optim import get_optimizer
from convprop.training import diagnostics

REPORT_EVERY = 10  # iterations between events
ORPHAN_SECONDS = 10.0  # a job nobody watches this long after its start is stopped
MAX_ITERATIONS = 20_000
MAX_BATCH = 1000
MAX_MAPS = 64


def parse_settings(body: dict[str, Any]) -> dict[str, Any]:
    """Checked training settings from the page's JSON (ApiError 422 naming the field)."""
    spec = body.get("spec", "6c5-2s-12c5-2s")
    activation = body.get("activation", "sigmoid")
    if not isinstance(spec, str) or len(spec) > 60:
        raise ApiError("'spec' must be a short architecture string like '6c5-2s-12c5-2s'")
    if not isinstance(activation, str) or len(activation) > 60:
        raise ApiError("'activation' must be a string like 'tanh-linear:0.13'")
    lr = _number(body, "lr", 1.0)
    if not (math.isfinite(lr) and 0 < lr <= 100):
        raise ApiError(f"'lr' must be a number in (0, 100], got {lr}")
    batch = _whole(body, "batch_size", 50, 1, MAX_BATCH)
    iterations = _whole(body, "iterations", 1000, 1, MAX_ITERATIONS)
    seed = _whole(body, "seed", 0, 0, 2**31 - 1)
    try:
        for kind, a, _ in parse_spec(spec):
            if kind == "conv" and a > MAX_MAPS:
                raise ApiError(f"'spec': at most {MAX_MAPS} maps per layer in the explorer")
        net = Network.from_spec(spec, activation=activation, seed=seed, dtype="float32")
    except ConvpropError as exc:
        raise ApiError(str(exc)) from None
    return {"spec": spec, "activation": net.activation.name, "lr": lr, "batch_size": batch,
            "iterations": iterations, "seed": seed, "net": net}


def _number(body: dict[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ApiError(f"'{key}' must be a number, got {v[:20]!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(f"'{key}' must be a number")
    return float(v)


def _whole(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = _number(body, key, default)
    if v != int(v) or not lo <= v <= hi:
        raise ApiError(f"'{key}' must be a whole number in {lo}..{hi}, got {v:g}")
    return int(v)


class TrainingJob:
    """One live training run; ``events`` grows as it runs (read it with :meth:`since`)."""

    def __init__(self, explorer: Explorer, settings: dict[str, Any], job_id: int):
        self.id = job_id
        self.explorer = explorer
        self.settings = {k: v for k, v in settings.items() if k != "net"}
        self.net: Network = settings["net"]
        self.slot = Slot(self.net, f"trained live: {self.net.activation.name}")
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.stop_requested = threading.Event()
        self.watchers = 0
        self.ever_watched = False
        self.started = time.monotonic()
        self.done = False
        self.thread = threading.Thread(target=self._run, name=f"convprop-explore-job{job_id}",
                                       daemon=True)

    def start(self) -> None:
        self.explorer.slots["live"] = self.slot
        self.thread.start()

    def stop(self) -> None:
        self.stop_requested.set()

    def attach(self) -> None:
        with self.cond:
            self.watchers += 1
            self.ever_watched = True

    def detach(self) -> None:
        """An event stream closed; with none left the page has gone: stop."""
        with self.cond:
            self.watchers -= 1
            if self.watchers <= 0:
                self.stop_requested.set()

    def since(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Events from index n on, waiting up to ``timeout`` s for one to appear."""
        with self.cond:
            if len(self.events) <= n and not self.done:
                self.cond.wait(timeout)
            return self.events[n:]

    def _publish(self, event: dict[str, Any]) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def _orphaned(self) -> bool:
        return not self.ever_watched and time.monotonic() - self.started > ORPHAN_SECONDS

    def _run(self) -> None:
        s, net, data = self.settings, self.net, self.explorer.data
        opt = get_optimizer("sgd", s["lr"])
        rng = np.random.default_rng(s["seed"])
        n, bs = len(data.train_x), s["batch_size"]
        perm, pos, rl, status, message = rng.permutation(n), 0, None, "completed", ""
        it = 0
        self._publish({"type": "start", **s, "job": self.id})
        try:
            while it < s["iterations"]:
                if self.stop_requested.is_set() or self._orphaned():
                    status, message = "stopped", f"stopped at iteration {it}"
                    break
                if pos + bs > n:
                    perm, pos = rng.permutation(n), 0
                idx = perm[pos : pos + bs]
                pos += bs
                x = data.train_x[idx].astype(np.float32) * np.float32(1 / 255)
                y = data.train_y[idx]
                report = it == 0 or (it + 1) % REPORT_EVERY == 0 or it + 1 == s["iterations"]
                with np.errstate(all="ignore"):  # a diverging run is reported, not warned
                    rows = diagnostics.record(net, net.trace(x, y), it + 1) if report else None
                    loss, grads = net.loss_and_grads(x, y)
                it += 1
                if not math.isfinite(loss):
                    status, message = "diverged", (f"loss became {loss} at iteration {it}; "
                                                   f"try a smaller learning rate")
                    break
                rl = loss if rl is None else 0.99 * rl + 0.01 * loss
                with self.slot.lock, np.errstate(all="ignore"):
                    opt.step(net.params, grads)
                if report:
                    self._publish({"type": "progress", "iteration": it, "loss": loss,
                                   "rl": rl, "diagnostics": _by_layer(rows)})
            err = None
            if status != "diverged":
                with self.slot.lock:
                    pred = net.predict(data.test_x.astype(np.float32) * np.float32(1 / 255))
                err = float(np.mean(pred != data.test_y))
                self.slot.test_error = err
            self._publish({"type": "done", "status": status, "message": message,
                           "iteration": it, "test_error": err, "rl": rl})
        except Exception as exc:  # noqa: BLE001 - reported to the page, not lost in a thread
            self._publish({"type": "done", "status": "failed", "iteration": it,
                           "message": f"{type(exc).__name__}: {exc}"[:300], "test_error": None})
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()


def _by_layer(rows: list[tuple[int, str, str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for _, layer, metric, value in rows:
        out.setdefault(layer, {})[metric] = value
    return out


def start_job(explorer: Explorer, body: dict[str, Any]) -> TrainingJob:
    """Start a job unless one is running (ApiError 409)."""
    settings = parse_settings(body)
    with explorer.job_lock:
        job = explorer.job
        if job is not None and not job.done:
            raise ApiError("a training job is already running on this server; stop it first",
                           409)
        explorer.job = TrainingJob(explorer, settings, 1 if job is None else job.id + 1)
        explorer.job.start()
        return explorer.job
