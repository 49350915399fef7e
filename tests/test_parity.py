"""Parity with the paper's own MATLAB code (DeepLearnToolbox under Octave), to 1e-12."""

import numpy as np
import pytest
import scipy.io as sio  # noqa: E402

from conftest import PARITY_FILE
from convprop import Network
from convprop.interop.matlab import features_from_toolbox, images_from_toolbox, kernels_from_toolbox
from convprop.maths.optim import SGD


@pytest.fixture(scope="module")
def case():
    assert PARITY_FILE.exists(), f"parity case missing: {PARITY_FILE}"
    return sio.loadmat(PARITY_FILE)


@pytest.fixture
def net(case):
    net = Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", dtype="float64")
    net.params["conv1.weight"] = kernels_from_toolbox(case["K1"])
    net.params["conv2.weight"] = kernels_from_toolbox(case["K2"])
    net.params["out.weight"] = features_from_toolbox(case["ffW"], net.feature_shape)
    net.params["out.bias"] = case["ffb"][:, 0]
    return net


def test_forward_output_and_loss_match_toolbox(case, net):
    x, y = images_from_toolbox(case["x"]), case["y"].T
    out = net.forward(x)
    np.testing.assert_allclose(out, case["out"].T, rtol=0, atol=1e-12)
    loss, _ = net.loss_and_grads(x, y)
    assert abs(loss - case["L"][0, 0]) < 1e-12


def test_all_gradients_match_toolbox(case, net):
    x, y = images_from_toolbox(case["x"]), case["y"].T
    _, grads = net.loss_and_grads(x, y)
    expected = {
        "conv1.weight": kernels_from_toolbox(case["dK1"]),
        "conv1.bias": case["db1"][:, 0],
        "conv2.weight": kernels_from_toolbox(case["dK2"]),
        "conv2.bias": case["db2"][:, 0],
        "out.weight": features_from_toolbox(case["dffW"], net.feature_shape),
        "out.bias": case["dffb"][:, 0],
    }
    for name, want in expected.items():
        np.testing.assert_allclose(grads[name], want, rtol=0, atol=1e-12, err_msg=name)
        assert np.abs(want).max() > 1e-6, f"{name}: reference gradient is trivially zero"


def test_loss_after_one_sgd_step_matches_toolbox(case, net):
    x, y = images_from_toolbox(case["x"]), case["y"].T
    _, grads = net.loss_and_grads(x, y)
    SGD(lr=1.0).step(net.params, grads)
    assert abs(net.loss_value(x, y) - case["L_after"][0, 0]) < 1e-12
    assert case["L_after"][0, 0] < case["L"][0, 0]
