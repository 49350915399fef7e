"""Learnable activations (``prelu``, ``tanh-linear-learned``): parameter gradients against
finite differences and PyTorch autograd, per map and per layer; they train and persist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import blobs as make_blobs
from conftest import numerical_gradient
from convprop.errors import SpecError
from convprop.interop.model import load_model, save_model
from convprop.maths.activations import PReLU, TanhLinearLearned, get_activation
from convprop.maths.network import Network
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training
from convprop.training.trainer import train

F = torch.nn.functional
LEARNED = ["prelu:map:0.05", "prelu:layer:0.05", "tanh-linear-learned:map:0.13",
           "tanh-linear-learned:layer:0.13"]
SPEC, SHAPE = "3c3-2s-4c3-2s", (14, 14)  # 14 -> 12 -> 6 -> 4 -> 2


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))


def test_parsing_defaults_and_errors():
    assert get_activation("prelu").name == "prelu:map:0.25"  # He et al.'s start
    assert get_activation("prelu:layer").name == "prelu:layer:0.25"
    assert get_activation("tanh-linear-learned").name == "tanh-linear-learned:map:0.13"
    assert get_activation("prelu:map:0.05").init == 0.05
    for bad, words in [("prelu:maps", "scope"), ("prelu:map:x", "not a number"),
                       ("tanh-linear-learned:layer:nan", "finite")]:
        with pytest.raises(SpecError, match=words):
            get_activation(bad)


@pytest.mark.parametrize("name", LEARNED)
def test_for_layer_gives_each_layer_its_own_parameters(name):
    proto = get_activation(name)
    a, b = proto.for_layer(6, np.dtype("float32")), proto.for_layer(6, np.dtype("float32"))
    pname = "alpha" if name.startswith("prelu") else "k"
    size = 6 if ":map" in name else 1
    assert a.params[pname].shape == (size,) and a.params[pname].dtype == np.float32
    a.params[pname][...] = 7
    assert b.params[pname][0] == proto.init and a is not b
    assert get_activation("relu").for_layer(6, np.dtype("float64")).name == "relu"


@pytest.mark.parametrize("map_axis", [1, 3])
@pytest.mark.parametrize("name", LEARNED)
def test_param_and_input_gradients_match_finite_differences(name, map_axis):
    """Per-map parameters differ per map; the map axis is a parameter (1 or 3 here)."""
    rng = np.random.default_rng(0)
    shape = [4, 3, 5, 5] if map_axis == 1 else [4, 5, 5, 3]
    act = get_activation(name).for_layer(3, np.dtype("float64"))
    act.map_axis = map_axis
    pname = next(iter(act.params))
    act.params[pname][...] = rng.uniform(0.02, 0.4, act.params[pname].shape)
    z = rng.uniform(0.1, 3, shape) * rng.choice([-1.0, 1.0], shape)
    up = rng.standard_normal(shape)

    def loss():
        return float((act(z) * up).sum())

    a = act(z)
    g = act.param_grads(z, a, up, map_axis)[pname]
    assert g.shape == act.params[pname].shape
    assert rel_err(g, numerical_gradient(loss, act.params[pname])) < 1e-8
    assert rel_err(act.derivative(z, a) * up, numerical_gradient(loss, z)) < 1e-8


def torch_forward(name, p, x):
    """The network in torch: conv + learned activation, avg-pool, sigmoid output."""
    a = x
    for i in (1, 2):
        z = F.conv2d(a, p[f"conv{i}.weight"], p[f"conv{i}.bias"])
        if name.startswith("prelu"):
            a = F.prelu(z, p[f"conv{i}.alpha"])  # num_parameters = maps, or 1 per layer
        else:
            a = torch.tanh(z) + p[f"conv{i}.k"].view(1, -1, 1, 1) * z
        a = F.avg_pool2d(a, 2)
    return torch.sigmoid(F.linear(a.flatten(1), p["out.weight"], p["out.bias"]))


def make_net(name, seed=0):
    net = Network.from_spec(SPEC, activation=name, input_shape=SHAPE, seed=seed,
                            dtype="float64")
    rng = np.random.default_rng(seed + 1)
    for k, v in net.params.items():
        if k.endswith((".bias", ".alpha", ".k")):
            net.params[k] = rng.uniform(-0.3, 0.3, v.shape) + (0.3 if k.endswith(
                (".alpha", ".k")) else 0)
    x, y = rng.uniform(0, 1, (6, *SHAPE)), rng.integers(0, 10, 6)
    return net, x, y


@pytest.mark.parametrize("name", LEARNED)
def test_network_gradients_match_torch_autograd(name):
    net, x, y = make_net(name)
    pname = "alpha" if name.startswith("prelu") else "k"
    assert list(net.params)[2] == f"conv1.{pname}"
    assert net.params[f"conv2.{pname}"].shape == ((4,) if ":map" in name else (1,))
    loss, grads = net.loss_and_grads(x, y)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    o = torch_forward(name, p, torch.tensor(x[:, None]))
    tl = 0.5 * ((o - F.one_hot(torch.tensor(y), 10).double()) ** 2).sum() / len(x)
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for k in net.params:
        np.testing.assert_allclose(grads[k], p[k].grad.numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=k)


@pytest.mark.parametrize("name", ["prelu:map:0.05", "tanh-linear-learned:layer:0.13"])
def test_network_param_gradients_match_finite_differences(name):
    net, x, y = make_net(name)
    _, grads = net.loss_and_grads(x, y)
    for k in [k for k in net.params if k.endswith((".alpha", ".k"))]:
        numeric = numerical_gradient(lambda: net.loss_value(x, y), net.params[k])
        assert rel_err(grads[k], numeric) < 1e-6, k


def test_trace_and_backward_twice_agree():
    net, x, y = make_net("prelu:map:0.05")
    _, g1 = net.loss_and_grads(x, y)
    _, g2 = net.loss_and_grads(x, y)
    tr = net.trace(x, y)
    for k in net.params:
        np.testing.assert_array_equal(g1[k], g2[k])
        np.testing.assert_allclose(tr.grads[k], g1[k], rtol=1e-12, atol=1e-15)  # unfused


def test_initialize_resets_learned_parameters():
    net = Network.from_spec(SPEC, activation="prelu:map:0.05", input_shape=SHAPE)
    net.params["conv1.alpha"] = np.full(3, 0.9)
    net.initialize(seed=1)
    np.testing.assert_array_equal(net.params["conv1.alpha"], 0.05)


def blobs(n=200, seed=0):
    return make_blobs(n, seed, size=14)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_parameters_move_and_survive_the_model_file(name, tmp_path):
    x, y = blobs()
    net = Network.from_spec(SPEC, activation=name, input_shape=SHAPE, dtype="float64")
    before = {k: v.copy() for k, v in net.params.items()}
    res = train(net, x, y, TrainConfig(spec=SPEC, activation=name, iterations=40,
                                       batch_size=10, lr=1.0, dtype="float64"))
    assert res.status == "completed"
    learned = [k for k in net.params if k.endswith((".alpha", ".k"))]
    assert len(learned) == 2
    for k in learned:
        assert np.abs(net.params[k] - before[k]).max() > 1e-4, f"{k} did not move"
    save_model(net, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    assert back.activation.name == get_activation(name).name
    for k in net.params:
        np.testing.assert_array_equal(back.params[k], net.params[k])
    np.testing.assert_array_equal(back.forward(x[:5]), net.forward(x[:5]))


def test_run_training_reports_learned_values(tmp_path):
    from types import SimpleNamespace

    x, y = blobs(120)
    data = SimpleNamespace(train_x=x, train_y=y, test_x=x[:20], test_y=y[:20],
                           name="blobs", description="blobs")
    s = run_training(TrainConfig(spec=SPEC, activation="tanh-linear-learned:layer",
                                 iterations=20, batch_size=10, dtype="float64"),
                     tmp_path, dataset=data)
    net = s.network
    assert s["activation_params"] == {"conv1.k": [float(net.params["conv1.k"][0])],
                                      "conv2.k": [float(net.params["conv2.k"][0])]}
    assert s["activation_params"]["conv1.k"] != [0.13]


def test_classes_expose_their_flags():
    assert PReLU().rectifier and not PReLU().saturating
    assert TanhLinearLearned().saturating
    act = TanhLinearLearned("map", 0.2).for_layer(2, np.dtype("float64"))
    assert act.max_slope == pytest.approx(1.2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", LEARNED)
def test_zero_and_large_z_are_finite_and_documented(name, dtype):
    """f'(0) is the left derivative α for prelu, 1 + k for tanh-linear-learned; at
    z = ±1000 everything is finite and silent."""
    act = get_activation(name).for_layer(2, np.dtype(dtype))
    z = np.array([[0.0, 0.0], [-1000.0, 1000.0]], dtype=dtype)[..., None]  # (2, maps, 1)
    with np.errstate(all="raise"):
        a = act(z)
        d = act.derivative(z, a)
        g = act.param_grads(z, a, np.ones_like(z), 1)
    p = act.init
    zero_slope = p if name.startswith("prelu") else 1 + p
    np.testing.assert_allclose(d[0, :, 0], zero_slope, rtol=1e-6)
    assert np.isfinite(a).all() and np.isfinite(d).all()
    assert all(np.isfinite(v).all() for v in g.values())
