"""The network's API: spec and activation errors, parameters (names, shapes, live
writes, seeding, initialisation), dtypes, targets and input shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convprop.errors import ConvpropError, SpecError
from convprop.maths.activations import Activation, get_activation
from convprop.maths.network import Network, parse_spec


def _default_net_and_batch(dtype="float64"):
    net = Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    return net, rng.uniform(0, 1, (4, 28, 28)), rng.integers(0, 10, 4)


# ----------------------------------------------------------------------- spec errors
@pytest.mark.parametrize("spec", ["6x5", "", "6c5--2s", "0c5", "2s-", "0s", "c5", "6c",
                                  "6c0", "6c5-2q"])
def test_parse_spec_rejects_bad_string(spec):
    """A malformed architecture string raises SpecError naming it."""
    with pytest.raises(SpecError, match=re.escape(repr(spec))):
        parse_spec(spec)


def test_parse_spec_rejects_absurdly_long_number():
    """A 5000-digit map count is a user mistake: SpecError, not a ValueError."""
    with pytest.raises(SpecError):
        parse_spec("1" * 5000 + "c5")


@pytest.mark.parametrize("spec,shape,bad", [
    ("6c30", (28, 28), "30x30"),
    ("6c5-2s-12c13", (28, 28), "13x13"),
    ("2c5", (4, 9), "5x5"),
])
def test_kernel_larger_than_input_raises(spec, shape, bad):
    """A kernel that does not fit its input map raises SpecError naming the kernel size."""
    with pytest.raises(SpecError, match=bad):
        Network.from_spec(spec, input_shape=shape)


@pytest.mark.parametrize("spec,shape", [
    ("6c5-5s", (28, 28)),
    ("6c3-2s-4c3-2s", (28, 28)),
    ("2c3-2m", (7, 8)),
])
def test_pool_that_does_not_divide_raises(spec, shape):
    """A pooling scale that does not divide its map size raises SpecError."""
    with pytest.raises(SpecError, match="layer size must be integer"):
        Network.from_spec(spec, input_shape=shape)


@pytest.mark.parametrize("name,named", [
    ("tanh-linear", "tanh-linear"),
    ("tanh-linear:", "tanh-linear:"),
    ("tanh-linear:abc", "abc"),
    ("leaky-relu:nan", "nan"),
    ("leaky-relu:inf", "inf"),
    ("relu:3", "relu:3"),
    ("swish", "swish"),
    ("", "''"),
])
def test_get_activation_rejects_bad_name(name, named):
    """An unknown or malformed activation raises SpecError naming the bad value."""
    with pytest.raises(SpecError, match=re.escape(named)):
        get_activation(name)


def test_network_rejects_bad_activation():
    """Network.from_spec passes activation errors through as SpecError."""
    with pytest.raises(SpecError, match="swish"):
        Network.from_spec(activation="swish")


@pytest.mark.parametrize("dtype", ["int32", "float16", "complex128", "banana", 3])
def test_bad_dtype_raises(dtype):
    """Only float32 and float64 networks exist; anything else raises SpecError naming it."""
    with pytest.raises(SpecError, match=re.escape(repr(dtype))):
        Network.from_spec(dtype=dtype)


SPEC_TEXT = st.one_of(st.text(), st.text(alphabet="0123456789csmx-: "))
ACT_TEXT = st.one_of(
    st.text(),
    st.builds(lambda base, sep, arg: base + sep + arg,
              st.sampled_from(["sigmoid", "tanh", "tanh-linear", "relu", "leaky-relu",
                               "identity"]),
              st.sampled_from(["", ":"]),
              st.one_of(st.text(), st.floats().map(repr))),
)


@settings(max_examples=300, deadline=None)
@given(SPEC_TEXT)
def test_parse_spec_returns_layers_or_raises_spec_error(text):
    """Any text either parses to valid layers or raises SpecError, nothing else."""
    try:
        layers = parse_spec(text)
    except SpecError:
        return
    assert layers and all(kind in ("conv", "mean", "max", "fc") and a >= 1
                          for kind, a, _ in layers)


@settings(max_examples=300, deadline=None)
@given(ACT_TEXT)
def test_get_activation_returns_activation_or_raises_spec_error(text):
    """Any text either names an activation or raises SpecError, nothing else."""
    try:
        act = get_activation(text)
    except SpecError:
        return
    assert isinstance(act, Activation)


# ------------------------------------------------------------------------ parameters
DEFAULT_SHAPES = {
    "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
    "conv2.weight": (12, 6, 5, 5), "conv2.bias": (12,),
    "out.weight": (10, 192), "out.bias": (10,),
}


def test_default_params_keys_are_in_layer_order():
    """The default network's parameters are conv1, conv2, out (weight then bias)."""
    assert list(Network.from_spec().params) == list(DEFAULT_SHAPES)


def test_default_params_have_documented_shapes():
    """conv weights (out, in, k, k), biases (maps,), out.weight (10, 192)."""
    net = Network.from_spec()
    assert {k: v.shape for k, v in net.params.items()} == DEFAULT_SHAPES


def test_params_item_assignment_changes_forward():
    """Writing into a live parameter array (params[k][...] = v) changes the outputs."""
    net, x, _ = _default_net_and_batch()
    before = net.forward(x)
    net.params["conv1.weight"][...] = 0.01
    assert not np.allclose(net.forward(x), before)


def test_params_setitem_changes_forward():
    """params[k] = v replaces the parameter the network computes with."""
    net, x, _ = _default_net_and_batch()
    before = net.forward(x)
    net.params["out.bias"] = np.full(10, 3.0)
    assert not np.allclose(net.forward(x), before)


def test_params_setitem_wrong_shape_raises():
    """params[k] = v with a shape that does not fit raises ConvpropError."""
    net = Network.from_spec()
    with pytest.raises(ConvpropError, match="out.bias"):
        net.params["out.bias"] = np.zeros(11)


def test_same_seed_gives_identical_params():
    """Two networks from the same seed have bit-identical parameters."""
    a, b = Network.from_spec(seed=5), Network.from_spec(seed=5)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_different_seed_gives_different_weights():
    """Different seeds give different weights in every weight array."""
    a, b = Network.from_spec(seed=5), Network.from_spec(seed=6)
    for k in a.params:
        if k.endswith(".weight"):
            assert not np.array_equal(a.params[k], b.params[k]), k


INIT_BOUNDS = {
    "conv1.weight": np.sqrt(6 / (1 * 25 + 6 * 25)),
    "conv2.weight": np.sqrt(6 / (6 * 25 + 12 * 25)),
    "out.weight": np.sqrt(6 / (192 + 10)),
}


@pytest.mark.parametrize("name", list(INIT_BOUNDS))
def test_init_weights_fill_the_glorot_interval(name):
    """Weights lie in ±sqrt(6/(fan_in+fan_out)) and reach close to both ends."""
    w = Network.from_spec(seed=3).params[name]
    r = INIT_BOUNDS[name]
    assert np.abs(w).max() <= r
    assert w.max() > 0.9 * r and w.min() < -0.9 * r


def test_init_biases_are_zero():
    """Every bias starts at 0."""
    net = Network.from_spec(seed=3)
    for k, v in net.params.items():
        if k.endswith(".bias"):
            assert not v.any(), k


def test_float32_network_gives_float32_outputs():
    """A float32 network computes in float32 even from float64 inputs."""
    net, x, _ = _default_net_and_batch("float32")
    assert net.forward(x).dtype == np.float32


def test_float32_network_gives_float32_grads():
    """Every gradient of a float32 network is float32, and the loss is a Python float."""
    net, x, y = _default_net_and_batch("float32")
    loss, grads = net.loss_and_grads(x, y)
    assert isinstance(loss, float)
    assert {k: g.dtype for k, g in grads.items()} == {k: np.float32 for k in net.params}


def test_labels_and_one_hot_targets_give_the_same_loss_and_grads():
    """Integer labels are exactly the one-hot targets they stand for."""
    net, x, y = _default_net_and_batch()
    loss1, g1 = net.loss_and_grads(x, y)
    loss2, g2 = net.loss_and_grads(x, np.eye(10)[y])
    assert loss1 == loss2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


BAD_TARGETS = {
    "too-few-labels": np.array([1, 2, 3]),
    "label-10": np.array([0, 1, 2, 10]),
    "label-minus-1": np.array([0, 1, -1, 2]),
    "fractional-label": np.array([0.0, 1.5, 2.0, 3.0]),
    "nan-label": np.array([0.0, np.nan, 2.0, 3.0]),
    "one-hot-9-wide": np.zeros((4, 9)),
    "one-hot-wrong-n": np.zeros((3, 10)),
    "3-d-targets": np.zeros((4, 10, 1)),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_bad_targets_raise_convprop_error(case):
    """Labels or targets that do not fit the batch raise ConvpropError."""
    net, x, _ = _default_net_and_batch()
    with pytest.raises(ConvpropError):
        net.loss_and_grads(x, BAD_TARGETS[case])


@pytest.mark.parametrize("shape", [(4, 27, 28), (4, 2, 28, 28), (28, 28), (0, 28, 28)])
def test_bad_input_shape_raises_convprop_error(shape):
    """An input batch of the wrong shape (or empty) raises ConvpropError."""
    net = Network.from_spec()
    with pytest.raises(ConvpropError):
        net.forward(np.zeros(shape))
