"""Numerical faults and resource bounds: a run that blows up stops as ``diverged`` at the
iteration it happened, a run whose outputs saturated is flagged ``stalled``, and
evaluation works in chunks whatever the size of the test set."""

import json
import math
import tracemalloc

import numpy as np
import pytest

from conftest import run_cli
from convprop import Network
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training
from convprop.training.trainer import error_rate, predict, read_metrics

SAMPLE = ["--data", "sample", "--spec", "2c5-2s", "--batch-size", "10", "--dtype", "float64",
          "--no-progress"]


def test_cli_divergence_stops_at_the_iteration_it_happened(tmp_path):
    # ReLU with a learning rate of 1e300: the second forward pass overflows
    proc = run_cli("train", *SAMPLE, "--activation", "relu", "--lr", "1e300",
                   "--iterations", "50", "--out", tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    assert "diverged: " in proc.stdout and "at iteration 2" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iterations"] == 2
    assert "at iteration 2" in summary["message"] and summary["test_error"] is None
    m = read_metrics(tmp_path / "metrics.csv")
    assert list(m["iteration"]) == [1, 2]
    assert math.isfinite(m["loss"][0]) and math.isnan(m["loss"][1])
    assert not (tmp_path / "checkpoint.npz").exists()


def test_cli_saturated_outputs_are_flagged_stalled(tmp_path):
    # ReLU with learning rate 100: after a few steps every unit is dead, the output
    # sigmoids sit at 0 and the batch loss is exactly 0.5 from then on
    proc = run_cli("train", *SAMPLE, "--activation", "relu", "--lr", "100",
                   "--iterations", "300", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stalled: " in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stalled" and summary["iterations"] == 300
    assert "saturated" in summary["message"]
    m = read_metrics(tmp_path / "metrics.csv")
    assert np.all(m["loss"][-100:] == 0.5)


def noise(n=200, seed=0, size=12):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, size, size)), rng.integers(0, 10, n)


class Data:
    def __init__(self, x, y):
        n = len(x) * 3 // 4
        self.train_x, self.train_y, self.test_x, self.test_y = x[:n], y[:n], x[n:], y[n:]
        self.name, self.description = "noise", "noise"


def test_api_divergence_is_reported_in_the_summary(tmp_path):
    cfg = TrainConfig(spec="2c3-2s", activation="leaky-relu:0.1", lr=1e300, iterations=40,
                      batch_size=10, dtype="float64")
    summary = run_training(cfg, tmp_path, dataset=Data(*noise()))
    assert summary["status"] == "diverged"
    n = summary["iterations"]
    assert 1 <= n < 40 and f"at iteration {n}" in summary["message"]
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["status"] == "diverged" and stored["iterations"] == n
    assert len(read_metrics(tmp_path / "metrics.csv")["iteration"]) == n


def test_api_stall_is_reported_in_the_summary(tmp_path):
    cfg = TrainConfig(spec="2c3-2s", activation="sigmoid", lr=1000.0, iterations=300,
                      batch_size=10, dtype="float64")
    summary = run_training(cfg, tmp_path, dataset=Data(*noise(400)))
    assert summary["status"] == "stalled", summary["final_rL"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "stalled"
    assert summary["test_error"] is not None  # a stalled run is still evaluated


def test_a_healthy_run_is_neither(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400)
    x = rng.uniform(0, 0.2, (400, 12, 12))
    for i, c in enumerate(y):
        r, col = divmod(int(c), 3)
        x[i, r * 3 : r * 3 + 4, col * 3 : col * 3 + 4] += 0.8
    cfg = TrainConfig(spec="4c3-2s", lr=2.0, iterations=300, batch_size=10, dtype="float64")
    assert run_training(cfg, None, dataset=Data(x, y))["status"] == "completed"


def peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["predict", "error_rate", "Network.predict"])
def test_evaluation_memory_does_not_grow_with_the_test_set(how):
    """8x more images, the same peak memory beyond the answer itself (one int64 per image):
    the network sees the set ``chunk`` images at a time."""
    net = Network.from_spec("2c5-2s", seed=0, dtype="float64")
    big = np.random.default_rng(0).integers(0, 256, (16000, 28, 28), dtype=np.uint8)
    labels = np.zeros(len(big), dtype=np.int64)
    small = big[:2000]
    calls = {"predict": lambda x: predict(net, x, chunk=250),
             "error_rate": lambda x: error_rate(net, x, labels[: len(x)], chunk=250),
             "Network.predict": lambda x: net.predict(x, chunk=250)}
    f = calls[how]
    p_small, p_big = peak_bytes(lambda: f(small)), peak_bytes(lambda: f(big))
    answer = 16 * len(big)  # the predictions (and a comparison) for every image
    assert p_big < 1.25 * p_small + answer, (p_small, p_big)
    assert p_big < 200e6  # 37 MB measured; a whole-set forward pass would need ~2 GB here


def test_stall_seen_in_batch_losses_while_rl_still_falls():
    """Outputs saturated early: the batch loss is constant at 0.5 but rL, which forgets
    slowly, still falls by more than 2% over the second half; the batch losses show it."""
    from convprop.training.trainer import detect_stall, smooth

    losses = np.concatenate([np.full(20, 1.25), np.full(280, 0.5)])
    rl = smooth(losses)
    assert (rl[150] - rl[-1]) > 0.02 * rl[150]  # the rL test alone says "still moving"
    assert not detect_stall(rl, 0.45)
    assert detect_stall(rl, 0.45, losses=losses)
    # a noisy but steadily improving learner is not flagged
    rng = np.random.default_rng(0)
    learning = np.linspace(0.9, 0.4, 300) + rng.normal(0, 0.05, 300)
    assert not detect_stall(smooth(learning), 0.45, losses=learning)
    # nor one that already learned (below 0.8 x baseline), however flat
    done = np.full(300, 0.1)
    assert not detect_stall(smooth(done), 0.45, losses=done)
    # nor one on the plateau near the constant-output loss, where the batch loss still
    # varies with the labels of each batch (the paper's sigmoid net early on)
    plateau = np.concatenate([np.linspace(1.2, 0.46, 60), 0.45 + rng.normal(0, 0.01, 240)])
    assert not detect_stall(smooth(plateau), 0.45, losses=plateau)
