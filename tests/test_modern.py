"""Modern baselines: softmax + cross-entropy, momentum and Adam (step by step against
torch.optim), He initialisation, and their CLI options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import numerical_gradient
from convprop.cli import main
from convprop.errors import ConvpropError
from convprop.maths.losses import CrossEntropy, get_loss
from convprop.maths.network import Network
from convprop.maths.optim import Adam, Momentum, get_optimizer
from convprop.training.config import TrainConfig
from convprop.training.trainer import Trainer

F = torch.nn.functional


def test_cross_entropy_value_and_gradient_match_torch_and_finite_differences():
    rng = np.random.default_rng(0)
    o = rng.normal(0, 3, (7, 10))
    labels = rng.integers(0, 10, 7)
    y = np.eye(10)[labels]
    loss, d = CrossEntropy()(o, y)
    t = torch.tensor(o, requires_grad=True)
    tl = F.cross_entropy(t, torch.tensor(labels))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    numeric = numerical_gradient(lambda: CrossEntropy()(o, y)[0], o)
    np.testing.assert_allclose(d, numeric, rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_finite_for_huge_logits():
    o = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, d = CrossEntropy()(o, np.eye(3)[[0, 1]])
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx((0 + np.log(3)) / 2)


def test_cross_entropy_network_gradients_match_torch():
    net = Network.from_spec("3c5-2s-4c3-2m", activation="relu", seed=2, dtype="float64",
                            loss="cross-entropy")
    rng = np.random.default_rng(1)
    x, y = rng.random((5, 28, 28)), rng.integers(0, 10, 5)
    loss, grads = net.loss_and_grads(x, y)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    a = torch.tensor(x[:, None])
    a = F.avg_pool2d(F.relu(F.conv2d(a, p["conv1.weight"], p["conv1.bias"])), 2)
    a = F.max_pool2d(F.relu(F.conv2d(a, p["conv2.weight"], p["conv2.bias"])), 2)
    logits = F.linear(a.flatten(1), p["out.weight"], p["out.bias"])
    tl = F.cross_entropy(logits, torch.tensor(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for k in net.params:
        np.testing.assert_allclose(grads[k], p[k].grad.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(net.forward(x), logits.detach().numpy(), rtol=1e-12)


def test_cross_entropy_network_gradients_match_finite_differences():
    net = Network.from_spec("2c3-2s", activation="tanh", input_shape=(8, 8), seed=0,
                            dtype="float64", loss="cross-entropy")
    rng = np.random.default_rng(3)
    x, y = rng.random((4, 8, 8)), rng.integers(0, 10, 4)
    _, grads = net.loss_and_grads(x, y)
    for k in net.params:
        numeric = numerical_gradient(lambda: net.loss_value(x, y), net.params[k])
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-9, err_msg=k)


def test_constant_baseline_is_the_label_entropy():
    p = np.full(10, 0.1)
    assert get_loss("cross-entropy").constant_baseline(p) == pytest.approx(np.log(10))
    with pytest.raises(ConvpropError, match="unknown loss"):
        get_loss("hinge")


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_optimizers_follow_torch_step_by_step(kind):
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    if kind == "momentum":
        ours = Momentum(0.1, 0.8)
        theirs = torch.optim.SGD(tp.values(), lr=0.1, momentum=0.8)
    else:
        ours = Adam(0.01, (0.85, 0.99))
        theirs = torch.optim.Adam(tp.values(), lr=0.01, betas=(0.85, 0.99))
    for _ in range(25):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        ours.step(params, grads)
        for k, t in tp.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        for k in params:
            np.testing.assert_allclose(params[k], tp[k].detach().numpy(), rtol=1e-12,
                                       atol=1e-14)


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_optimizer_state_dict_continues_exactly(kind):
    rng = np.random.default_rng(1)
    p1 = {"w": rng.standard_normal(6)}
    p2 = {"w": p1["w"].copy()}
    o1, gs = get_optimizer(kind, 0.05), [{"w": rng.standard_normal(6)} for _ in range(6)]
    for g in gs[:3]:
        o1.step(p1, g)
    state = o1.state_dict()
    o2 = get_optimizer(kind, 0.05)
    o2.load_state_dict(state)
    p2["w"][...] = p1["w"]
    for g in gs[3:]:
        o1.step(p1, g)
        o2.step(p2, g)
    np.testing.assert_array_equal(p1["w"], p2["w"])
    assert int(state["step"]) == 3
    with pytest.raises(ConvpropError, match="unexpected entry"):
        o2.load_state_dict({"bogus/w": np.zeros(6)})


def test_optimizer_settings_are_checked():
    with pytest.raises(ConvpropError, match="momentum"):
        get_optimizer("momentum", 0.1, momentum=1.5)
    with pytest.raises(ConvpropError, match="betas"):
        get_optimizer("adam", 0.1, betas=(0.9, 1.0))
    with pytest.raises(ConvpropError, match="unknown optimizer"):
        get_optimizer("rmsprop", 0.1)


def test_he_init_has_variance_two_over_fan_in():
    net = Network.from_spec("20c5-2s-50c5-2s", init="he", seed=0)
    w = net.params["conv2.weight"]
    assert np.var(w) == pytest.approx(2 / (20 * 25), rel=0.05)
    assert np.abs(w).max() <= np.sqrt(6 / (20 * 25))
    dlt = Network.from_spec("20c5-2s-50c5-2s", init="dlt", seed=0)
    assert np.var(dlt.params["conv2.weight"]) == pytest.approx(2 / (20 * 25 + 50 * 25),
                                                               rel=0.05)
    with pytest.raises(ConvpropError, match="unknown init"):
        TrainConfig(init="xavier").validate()


def test_trainer_uses_the_configured_optimizer_and_config_round_trips():
    cfg = TrainConfig(optimizer="adam", lr=0.001, betas=[0.8, 0.9], iterations=3,
                      batch_size=4).validate()
    assert cfg.betas == (0.8, 0.9)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).validate() == cfg
    rng = np.random.default_rng(0)
    net = Network.from_spec("2c3-2s", input_shape=(8, 8))
    tr = Trainer(net, rng.random((8, 8, 8)), rng.integers(0, 10, 8), cfg)
    assert isinstance(tr.optimizer, Adam) and tr.optimizer.betas == (0.8, 0.9)
    tr.run()
    assert int(tr.optimizer.state_dict()["step"]) == 3


def test_cli_modern_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    code = main(["train", "--data", "sample", "--spec", "4c5-2s", "--iterations", "30",
                 "--loss", "cross-entropy", "--optimizer", "momentum", "--momentum", "0.5",
                 "--lr", "0.05", "--init", "he", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    cfg = json.loads((out / "summary.json").read_text())["config"]
    assert (cfg["loss"], cfg["optimizer"], cfg["momentum"], cfg["init"]) == (
        "cross-entropy", "momentum", 0.5, "he")
    for bad, words in [(["--optimizer", "sgdx"], "invalid choice"),
                       (["--momentum", "1"], "[0, 1)"), (["--betas", "0.9"], "B1,B2"),
                       (["--loss", "hinge"], "invalid choice")]:
        with pytest.raises(SystemExit) as exc:
            main(["train", *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
