"""Hidden fully connected layers and multi-channel input: every gradient of the public
``loss_and_grads`` against central differences and PyTorch autograd (float64).

Cases cross colour and grey input, conv + fc and a plain MLP, mean and max pooling,
every activation (the learnable ones per unit/map and per layer) and both losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import numerical_gradient
from convprop.errors import SpecError
from convprop.maths.network import Network, parse_spec
from torch_reference import torch_activation

F = torch.nn.functional

ACTIVATIONS = ["sigmoid", "tanh", "tanh-linear:0.13", "relu", "leaky-relu:0.05", "identity",
               "prelu:map", "prelu:layer:0.1", "tanh-linear-learned:map",
               "tanh-linear-learned:layer:0.2"]
SHAPES_SPECS = [((3, 12, 12), "4c3-2s-7f"), ((2, 12, 12), "3c3-2m-5f-4f"),
                ((12, 12), "9f-6f"), ((3, 8, 10), "8f")]
LOSSES = ["mse", "cross-entropy"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_loss(net: Network, params: dict, x, y_onehot):
    """The spec rebuilt in torch, independent of convprop's layers."""
    name = net.activation.name
    learned = net.activation.params and list(net.activation.params)[0]
    a = x
    conv = fc = 0
    for kind, n, _k in parse_spec(net.spec):
        if kind == "conv":
            conv += 1
            a = F.conv2d(a, params[f"conv{conv}.weight"], params[f"conv{conv}.bias"])
            a = torch_activation(name, a, learned and params[f"conv{conv}.{learned}"])
        elif kind == "mean":
            a = F.avg_pool2d(a, n)
        elif kind == "max":
            a = F.max_pool2d(a, n)
        else:
            fc += 1
            a = F.linear(a.flatten(1), params[f"fc{fc}.weight"], params[f"fc{fc}.bias"])
            a = torch_activation(name, a, learned and params[f"fc{fc}.{learned}"])
    o = F.linear(a.flatten(1), params["out.weight"], params["out.bias"])
    if net.loss.name == "mse":
        return 0.5 * ((torch.sigmoid(o) - y_onehot) ** 2).sum() / x.shape[0]
    return -(y_onehot * F.log_softmax(o, dim=1)).sum() / x.shape[0]


def make(shape, spec, act, loss, seed=0):
    net = Network.from_spec(spec, activation=act, input_shape=shape, n_outputs=4, seed=seed,
                            loss=loss)
    rng = np.random.default_rng(seed + 1)
    for name, p in net.params.items():  # non-zero biases and varied learnable parameters
        if not name.endswith("weight"):
            p[...] = rng.uniform(-0.3, 0.3, p.shape) + (0.2 if name[-1] in "ak" else 0)
    full = shape if len(shape) == 3 else (1, *shape)
    x = rng.uniform(0, 1, (5, *full))
    y = rng.integers(0, 4, 5)
    return net, x, y


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape,spec", SHAPES_SPECS)
def test_gradients_match_torch(shape, spec, act, loss):
    net, x, y = make(shape, spec, act, loss)
    got_loss, got = net.loss_and_grads(x, y)
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in net.params.items()}
    onehot = torch.tensor(np.eye(4)[y])
    ref = torch_loss(net, params, torch.tensor(x), onehot)
    ref.backward()
    assert abs(got_loss - ref.item()) < 1e-10
    assert list(got) == list(net.params)
    for k, p in params.items():
        np.testing.assert_allclose(got[k], p.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "prelu:map", "tanh-linear-learned:layer"])
@pytest.mark.parametrize("shape,spec", SHAPES_SPECS)
def test_gradients_match_finite_differences(shape, spec, act, loss):
    net, x, y = make(shape, spec, act, loss, seed=3)
    _, got = net.loss_and_grads(x, y)
    rng = np.random.default_rng(7)
    for name, p in net.params.items():
        flat = rng.choice(p.size, size=min(p.size, 6), replace=False)
        num = numerical_gradient(lambda: net.loss_and_grads(x, y)[0], p, flat=flat)
        np.testing.assert_allclose(got[name].ravel()[flat], num, rtol=1e-5, atol=1e-8,
                                   err_msg=name)


def test_fc_parameters_and_shapes():
    net = Network.from_spec("6c5-2s-12c5-2s-100f", input_shape=(3, 32, 32), n_outputs=10)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes["conv1.weight"] == (6, 3, 5, 5)
    assert shapes["fc1.weight"] == (100, 12 * 5 * 5) and shapes["fc1.bias"] == (100,)
    assert shapes["out.weight"] == (10, 100)
    mlp = Network.from_spec("300f-100f", input_shape=(28, 28))
    assert [k for k in mlp.params] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                       "out.weight", "out.bias"]
    assert mlp.params["fc1.weight"].shape == (300, 784)
    assert [r["kind"] for r in mlp.describe()] == ["fc", "fc", "dense"]
    r = np.sqrt(6 / (784 + 300))  # dlt init: fan_in + fan_out of the fc layer
    w = mlp.params["fc1.weight"]
    assert np.abs(w).max() <= r and np.abs(w).max() > 0.9 * r


def test_fc_learnable_activation_per_unit():
    net = Network.from_spec("5f", activation="prelu:map", input_shape=(4, 4))
    assert net.params["fc1.alpha"].shape == (5,)
    assert Network.from_spec("5f", activation="prelu:layer",
                             input_shape=(4, 4)).params["fc1.alpha"].shape == (1,)


def test_trace_and_forward_agree_with_loss_and_grads():
    net, x, y = make((3, 12, 12), "4c3-2s-7f", "tanh", "mse")
    tr = net.trace(x, y)
    loss, grads = net.loss_and_grads(x, y)
    assert abs(tr.loss - loss) < 1e-12
    np.testing.assert_allclose(tr.outputs, net.forward(x), atol=1e-12)
    for k in grads:
        np.testing.assert_allclose(tr.grads[k], grads[k], atol=1e-12)
    assert [lt.name for lt in tr.layers] == ["conv1", "pool1", "fc1", "out"]


@pytest.mark.parametrize("spec,needle", [("100f-6c5", "before the fully connected"),
                                         ("100f-2s", "before the fully connected"),
                                         ("0f", "units must be >= 1"), ("6x", "'100f'")])
def test_bad_fc_specs(spec, needle):
    with pytest.raises(SpecError, match=needle):
        Network.from_spec(spec)


def test_colour_input_shape_checked():
    net = Network.from_spec("4c3-8f", input_shape=(3, 8, 8), n_outputs=2)
    with pytest.raises(Exception, match=r"expected \(N, 3, 8, 8\)"):
        net.forward(np.zeros((2, 8, 8)))


def test_model_file_version_2_round_trip_and_version_1_still_loads(tmp_path):
    import json

    from convprop.interop.model import load_model, save_model

    net = Network.from_spec("4c3-2s-7f", activation="prelu:map", input_shape=(3, 12, 12),
                            n_outputs=3, seed=2)
    net.class_names = ["cat", "dog", "fox"]
    save_model(net, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    assert back.input_shape == (3, 12, 12) and back.class_names == ["cat", "dog", "fox"]
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__meta__"][()]))
    assert meta["version"] == 2
    grey = Network.from_spec("2c5-2s", seed=0)  # what a version-1 file described
    save_model(grey, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__meta__"][()]))
    meta["version"] = 1
    del meta["class_names"]
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1.npz", **arrays)
    old = load_model(tmp_path / "v1.npz")
    assert old.class_names is None
    np.testing.assert_array_equal(old.params["conv1.weight"], grey.params["conv1.weight"])
    net.class_names = ["too", "few"]
    with pytest.raises(Exception, match="2 class names for a network with 3 outputs"):
        save_model(net, tmp_path / "bad.npz")
