"""The training loop: toolbox rL, seeded shuffling, divergence and stall detection."""

import json

import numpy as np
import pytest

from conftest import blobs
from convprop import ConvpropError, Network
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training
from convprop.training.trainer import Trainer, detect_stall, smooth, train


def small_net(seed=0, activation="sigmoid", dtype="float64"):
    return Network.from_spec("4c3-2s", activation=activation, input_shape=(12, 12),
                             seed=seed, dtype=dtype)


def test_rl_follows_the_toolbox_recurrence():
    x, y = blobs()
    res = train(small_net(), x, y, TrainConfig(iterations=30, batch_size=10, lr=1.0,
                                               dtype="float64"))
    assert res.rl[0] == res.losses[0]
    for t in range(1, 30):
        assert res.rl[t] == pytest.approx(0.99 * res.rl[t - 1] + 0.01 * res.losses[t], rel=0,
                                          abs=1e-15)
    np.testing.assert_allclose(smooth(res.losses), res.rl, rtol=0, atol=1e-15)


def test_training_learns_a_separable_problem():
    x, y = blobs(400)
    net = small_net()
    res = train(net, x, y, TrainConfig(epochs=20, batch_size=10, lr=2.0, dtype="float64"))
    assert res.status == "completed"
    assert res.rl[-1] < 0.5 * res.rl[0]
    assert np.mean(net.forward(x).argmax(1) == y) > 0.9


def test_same_seed_same_numbers_different_seed_different():
    x, y = blobs()
    cfg = TrainConfig(iterations=40, batch_size=10, seed=3, dtype="float64")
    a, b, c = small_net(3), small_net(3), small_net(4)
    ra, rb = train(a, x, y, cfg), train(b, x, y, cfg)
    rc = train(c, x, y, TrainConfig(iterations=40, batch_size=10, seed=4, dtype="float64"))
    np.testing.assert_array_equal(ra.losses, rb.losses)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(ra.losses, rc.losses)


def test_each_epoch_visits_every_image_once():
    x, y = blobs(50)
    t = Trainer(small_net(), x, y, TrainConfig(epochs=2, batch_size=10))
    seen = [t.next_batch() for _ in range(10)]
    first, second = np.concatenate(seen[:5]), np.concatenate(seen[5:])
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert not np.array_equal(first, second)


def test_partial_final_batch_is_dropped():
    x, y = blobs(25)
    t = Trainer(small_net(), x, y, TrainConfig(epochs=1, batch_size=10))
    assert t.total == 2


def test_non_finite_parameters_are_divergence(monkeypatch):
    x, y = blobs()
    net = small_net()
    real = net.loss_and_grads
    calls = []

    def overflowing(xb, yb):  # the 3rd step's gradient overflows
        loss, grads = real(xb, yb)
        calls.append(1)
        if len(calls) == 3:
            grads["conv1.weight"][0, 0, 0, 0] = np.inf
        return loss, grads

    monkeypatch.setattr(net, "loss_and_grads", overflowing)
    res = train(net, x, y, TrainConfig(iterations=50, batch_size=10, dtype="float64"))
    assert res.status == "diverged" and res.iterations == 3
    assert "conv1.weight became non-finite at iteration 3" in res.message


def test_non_finite_loss_is_divergence():
    x, y = blobs()
    net = small_net()
    net.params["out.bias"][0] = np.nan
    res = train(net, x, y, TrainConfig(iterations=50, batch_size=10, dtype="float64"))
    assert res.status == "diverged" and res.iterations == 1
    assert np.isnan(res.losses[0]) and "loss became nan at iteration 1" in res.message


def test_stall_detection():
    baseline = 0.45
    flat = np.full(300, 0.46) + np.linspace(0, -0.001, 300)
    falling = np.linspace(1.2, 0.05, 300)
    slow = np.linspace(0.47, 0.40, 300)  # still falling over the second half
    assert detect_stall(flat, baseline)
    assert not detect_stall(falling, baseline)
    assert not detect_stall(slow, baseline)
    assert not detect_stall(flat[:50], baseline)  # too short to tell


def test_saturated_network_is_reported_stalled():
    x, y = blobs(400)
    net = small_net(activation="sigmoid")
    net.params["out.bias"][...] = -50.0  # every output saturates at 0: o(1 - o) ~ 0
    res = train(net, x, y, TrainConfig(iterations=300, batch_size=10, lr=1.0,
                                       dtype="float64"))
    assert res.status == "stalled", res.rl[[0, 150, -1]]


@pytest.mark.parametrize("field,value", [("lr", -1.0), ("lr", float("nan")), ("lr", 0),
                                         ("batch_size", 0), ("iterations", 0),
                                         ("epochs", -2), ("seed", -1), ("dtype", "float16"),
                                         ("activation", "swish"), ("spec", "6x5"),
                                         ("optimizer", "rmsprop"), ("loss", "hinge")])
def test_bad_config_values_are_refused(field, value):
    x, y = blobs(40)
    options = {"spec": "4c3-2s", "iterations": 1, "batch_size": 10}
    options[field] = value
    cfg = TrainConfig(**options)
    with pytest.raises(ConvpropError) as err:
        run_training(cfg, None, dataset=_Data(x, y))
    assert "\n" not in str(err.value)


def test_batch_larger_than_data_is_refused():
    x, y = blobs(20)
    with pytest.raises(ConvpropError, match="larger than the 20 training images"):
        train(small_net(), x, y, TrainConfig(iterations=1, batch_size=50))


class _Data:
    def __init__(self, x, y):
        n = len(x) // 2
        self.train_x, self.train_y = x[:n], y[:n]
        self.test_x, self.test_y = x[n:], y[n:]
        self.name, self.description = "blobs", "synthetic blobs"


def test_run_training_writes_metrics_summary_and_model(tmp_path):
    from convprop.interop.model import load_model
    from convprop.training.trainer import error_rate, read_metrics

    x, y = blobs(400)
    cfg = TrainConfig(spec="4c3-2s", activation="tanh", lr=0.5, iterations=50, batch_size=10,
                      dtype="float64")
    summary = run_training(cfg, tmp_path, dataset=_Data(x, y))
    m = read_metrics(tmp_path / "metrics.csv")
    assert list(m) == ["iteration", "loss", "rL"]
    assert len(m["iteration"]) == 50 and m["iteration"][-1] == 50
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["status"] == "completed"
    assert stored["final_rL"] == pytest.approx(m["rL"][-1], rel=1e-15)
    assert stored["config"]["spec"] == "4c3-2s"
    assert {"convprop", "numpy", "python"} <= set(stored["versions"])
    assert stored["images_per_second"] > 0
    net = load_model(tmp_path / "model.npz")
    d = _Data(x, y)
    assert error_rate(net, d.test_x, d.test_y) == stored["test_error"] == summary["test_error"]
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"
