"""Checkpoints and resume: a run killed at any moment and resumed ends bit-for-bit as the
run left alone; Ctrl-C / SIGTERM stop cleanly after writing a checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CLI_ENV
from conftest import blobs as make_blobs
from convprop.errors import CheckpointError
from convprop.interop.model import load_model
from convprop.training.checkpoint import FILENAME, StopOnSignal, load_checkpoint, save_checkpoint
from convprop.training.config import TrainConfig
from convprop.training.jobs import resume_training, run_training

ENV = CLI_ENV
TRAIN = ["train", "--data", "sample", "--spec", "2c5-2s", "--activation", "tanh", "--lr", "0.5",
         "--batch-size", "10", "--dtype", "float64", "--seed", "3", "--no-progress"]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "convprop", *args], capture_output=True,
                          text=True, env=ENV, timeout=300, **kw)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "convprop", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.005)


def params(run_dir):
    net = load_model(run_dir / "model.npz")
    return {k: v.copy() for k, v in net.params.items()}


def assert_same_run(a, b):
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    pa, pb = params(a), params(b)
    assert list(pa) == list(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and pa[k].tobytes() == pb[k].tobytes(), k
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("status", "iterations", "final_loss", "final_rL", "test_error", "config"):
        assert sa[key] == sb[key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce exactly."""
    out = tmp_path_factory.mktemp("ref")
    proc = cli(*TRAIN, "--iterations", "900", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / FILENAME).exists()  # a finished run keeps no checkpoint
    return out


def test_sigkill_at_a_random_moment_then_resume_is_bitwise_identical(reference, tmp_path):
    seed = random.randrange(10**6)
    rnd = random.Random(seed)
    for attempt in range(4):  # retry if the run finished before the kill landed
        out = tmp_path / f"killed{attempt}"
        proc = start(*TRAIN, "--iterations", "900", "--out", str(out), "--checkpoint-every", "7")
        wait_for(out / FILENAME, proc)
        time.sleep(rnd.uniform(0, 0.8) / (attempt + 1))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        # the kill landed mid-run only if the checkpoint is still there: a finished run
        # removes it, and may still be alive, shutting down, when the kill comes
        if alive and (out / FILENAME).exists():
            break
    else:
        pytest.fail("the run always finished before the kill")
    stopped_at = load_checkpoint(out).iteration
    assert 7 <= stopped_at < 900 and stopped_at % 7 == 0, f"random seed {seed}"
    proc = cli("train", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at iteration {stopped_at} of 900" in proc.stderr
    assert_same_run(out, reference)
    assert not (out / FILENAME).exists()
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_a_checkpoint_and_resume_finishes(reference, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = start(*TRAIN, "--iterations", "900", "--out", str(out), "--checkpoint-every", "5")
    wait_for(out / FILENAME, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert f"--resume {out}" in summary["message"]
    ckpt = load_checkpoint(out)
    assert ckpt.iteration == summary["iterations"] < 900
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + ckpt.iteration
    proc = cli("train", "--resume", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert_same_run(out, reference)


def blobs(n=300, seed=0):
    return make_blobs(n, seed)


class Data:
    def __init__(self, x, y, name="blobs"):
        n = len(x) * 2 // 3
        self.train_x, self.train_y, self.test_x, self.test_y = x[:n], y[:n], x[n:], y[n:]
        self.name, self.description = name, "synthetic blobs"


CFG = dict(spec="4c3-2s", iterations=60, batch_size=10, dtype="float64", lr=1.0, seed=1)


def stop_after(k):
    """A should_stop that turns true before iteration k + 1."""
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > k
    return should_stop


def test_api_interrupt_then_resume_training_equals_one_run(tmp_path):
    data = Data(*blobs())
    whole = run_training(TrainConfig(**CFG), tmp_path / "whole", dataset=data)
    part = run_training(TrainConfig(**CFG), tmp_path / "part", dataset=data,
                        should_stop=stop_after(23))
    assert part["status"] == "interrupted" and part["iterations"] == 23
    assert load_checkpoint(tmp_path / "part").iteration == 23
    done = resume_training(tmp_path / "part", dataset=data)
    assert done["status"] == whole["status"] == "completed"
    assert done["final_rL"] == whole["final_rL"]
    assert_same_run(tmp_path / "part", tmp_path / "whole")


def test_checkpoint_every_keeps_the_stored_interval_on_resume(tmp_path):
    data = Data(*blobs())
    run_training(TrainConfig(**CFG), tmp_path, dataset=data, checkpoint_every=4,
                 should_stop=stop_after(10))
    assert load_checkpoint(tmp_path).meta["every"] == 4


def test_second_ctrl_c_during_the_checkpoint_write_corrupts_nothing(tmp_path, monkeypatch):
    import convprop.training.checkpoint as ckpt_module

    real = ckpt_module.write_npz

    def write_with_two_ctrl_c(path, arrays, **kw):  # Ctrl-C twice in the middle of a write
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        real(path, arrays, **kw)

    monkeypatch.setattr(ckpt_module, "write_npz", write_with_two_ctrl_c)
    with StopOnSignal() as stop:
        summary = run_training(TrainConfig(**CFG), tmp_path, dataset=Data(*blobs()),
                               checkpoint_every=3, should_stop=stop)
    assert stop.signum == signal.SIGINT and stop.exit_code == 130
    assert summary["status"] == "interrupted" and summary["iterations"] == 3
    assert load_checkpoint(tmp_path).iteration == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_resume_refuses_other_data(tmp_path):
    run_training(TrainConfig(**CFG), tmp_path, dataset=Data(*blobs()), should_stop=stop_after(5))
    with pytest.raises(CheckpointError, match="training set differs"):
        resume_training(tmp_path, dataset=Data(*blobs(seed=1)))


def test_checkpoint_round_trip_keeps_rng_permutation_and_position(tmp_path):
    from convprop.maths.network import Network
    from convprop.training.trainer import Trainer

    x, y = blobs()
    cfg = TrainConfig(**CFG)
    t = Trainer(Network.from_spec("4c3-2s", input_shape=(12, 12), seed=1, dtype="float64"),
                x, y, cfg)
    for _ in range(17):
        t.step()
    save_checkpoint(t, tmp_path / "c.npz", "blobs")
    u = Trainer(Network("4c3-2s", input_shape=(12, 12), dtype="float64"), x, y, cfg)
    load_checkpoint(tmp_path / "c.npz").restore(u)
    assert (u.iteration, u.pos, u.losses, u.rl) == (t.iteration, t.pos, t.losses, t.rl)
    np.testing.assert_array_equal(u.perm, t.perm)
    assert u.rng.bit_generator.state == t.rng.bit_generator.state
    for _ in range(20):
        assert u.step() == t.step()


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a convprop"),
    (lambda p: p.write_bytes(b"garbage"), "not a convprop checkpoint"),
    (lambda p: p.unlink(), "no checkpoint.npz to resume from"),
])
def test_damaged_checkpoint_is_refused_with_one_line(tmp_path, damage, needle):
    run_training(TrainConfig(**CFG), tmp_path, dataset=Data(*blobs()), should_stop=stop_after(5))
    damage(tmp_path / FILENAME)
    with pytest.raises(CheckpointError) as err:
        resume_training(tmp_path, dataset=Data(*blobs()))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_extra_trainer_records_survive_a_checkpoint(tmp_path):
    """Per-run records a trainer keeps beside the losses (e.g. gradient diagnostics) come
    back as they were, floats bit for bit."""
    from convprop.maths.network import Network
    from convprop.training.trainer import Trainer

    x, y = blobs()
    cfg = TrainConfig(**CFG)
    t = Trainer(Network.from_spec("4c3-2s", input_shape=(12, 12), seed=1, dtype="float64"),
                x, y, cfg)
    t.step()
    t.diagnostics = [(1, "conv1", "mean_abs_delta", 0.1 + 0.2), (1, "out", "dead", float("nan"))]
    save_checkpoint(t, tmp_path / "c.npz", "blobs")
    u = Trainer(Network("4c3-2s", input_shape=(12, 12), dtype="float64"), x, y, cfg)
    u.diagnostics = []
    load_checkpoint(tmp_path / "c.npz").restore(u)
    assert u.diagnostics[0] == t.diagnostics[0]
    assert u.diagnostics[1][:3] == t.diagnostics[1][:3] and np.isnan(u.diagnostics[1][3])
