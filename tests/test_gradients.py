"""Every hand-written derivative against central finite differences (float64), and the
spec / parameter contracts the gradients rely on.

The error metric is ||analytic - numeric|| / (||analytic|| + ||numeric||): about 1e-10
when the back-pass is right, of order 1 for a wrong factor (s² multiplied instead of
divided, a missing f'), so a bound of 1e-6 catches every factor error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import numerical_gradient
from convprop.maths import kernels
from convprop.maths.activations import get_activation
from convprop.maths.layers import Conv, Dense, MaxPool, MeanPool, to_chwn
from convprop.maths.network import Network
from reference import col2im, conv2d_forward, im2col

ACTIVATIONS = [
    "sigmoid", "tanh", "tanh-linear:0.13", "tanh-linear:0", "relu", "leaky-relu:0.05",
    "identity",
]
TOL = 1e-6


def rel_err(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||); 0 when both are exactly zero."""
    den = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / den) if den else 0.0


def assert_grad_close(analytic, numeric, what: str) -> None:
    assert np.linalg.norm(numeric) > 0, f"{what}: numeric gradient is trivially zero"
    err = rel_err(analytic, numeric)
    assert err < TOL, f"{what}: relative error {err:.3g} (analytic vs finite differences)"


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_matches_finite_differences(name):
    """f'(z) from derivative(z, f(z)) equals the central difference at points away from 0."""
    act = get_activation(name)
    rng = np.random.default_rng(1)
    z = rng.uniform(0.1, 4.0, 400) * rng.choice([-1.0, 1.0], 400)
    h = 1e-6
    numeric = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z, act(z)), numeric, rtol=TOL, atol=1e-10)


ZERO_SLOPE = {
    "sigmoid": 0.25, "tanh": 1.0, "tanh-linear:0.13": 1.13, "tanh-linear:0": 1.0,
    "relu": 0.0, "leaky-relu:0.05": 0.05, "identity": 1.0,
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_at_zero_is_the_documented_one(name):
    """f'(0): the left derivative for the ReLU family (relu 0, leaky A), else analytic."""
    act = get_activation(name)
    z = np.zeros(3)
    np.testing.assert_allclose(act.derivative(z, act(z)), ZERO_SLOPE[name], rtol=0, atol=1e-15)


LIMIT_SLOPES = {  # f'(-1000), f'(+1000)
    "sigmoid": (0.0, 0.0), "tanh": (0.0, 0.0), "tanh-linear:0.13": (0.13, 0.13),
    "tanh-linear:0": (0.0, 0.0), "relu": (0.0, 1.0), "leaky-relu:0.05": (0.05, 1.0),
    "identity": (1.0, 1.0),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_is_finite_and_silent_at_large_z(name, dtype):
    """At z = ±1000, f and f' are finite and no floating-point warning is raised."""
    act = get_activation(name)
    z = np.array([-1000.0, 1000.0], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        a = act(z)
        d = act.derivative(z, a)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d)), (a, d)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_at_large_z_is_its_limit(name, dtype):
    """f'(±1000) is the asymptotic slope (0 for saturated units, K for tanh-linear)."""
    act = get_activation(name)
    z = np.array([-1000.0, 1000.0], dtype=dtype)
    np.testing.assert_allclose(act.derivative(z, act(z)), LIMIT_SLOPES[name], atol=1e-6)


def test_tanh_linear_derivative_uses_z():
    """derivative(z, a) of tanh z + K z is 1 - tanh² z + K, which a-only formulas miss."""
    act = get_activation("tanh-linear:0.13")
    z = np.array([-2.0, 0.7, 2.0])
    a = act(z)
    want = 1 - np.tanh(z) ** 2 + 0.13
    np.testing.assert_allclose(act.derivative(z, a), want, rtol=1e-12)
    # the tanh formula applied to a would be far off: a is not tanh(z) here
    assert np.abs((1 - a * a + 0.13) - want).max() > 0.1


def test_tanh_linear_derivative_changes_with_z_for_the_same_a():
    """With a held fixed, a different z gives a different f': the slope is read from z."""
    act = get_activation("tanh-linear:0.13")
    a = act(np.array([1.5]))
    assert act.derivative(np.array([1.5]), a)[0] != act.derivative(np.array([1.0]), a)[0]


# ---------------------------------------------------------------------------- layers
def _conv(rng, in_maps, out_maps, k, act):
    layer = Conv(in_maps, out_maps, k, get_activation(act), np.dtype("float64"))
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, layer.params["weight"].shape)
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, out_maps)
    return layer


def _layer_grad_check(layer, x, wrt):
    """(analytic, numeric) gradient of sum(forward(x) * upstream) w.r.t. x or a param;
    x is given (N, C, H, W) and handed to the layer in its CHWN layout."""
    rng = np.random.default_rng(7)
    x = to_chwn(x)
    out, cache = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    dx, grads = layer.backward(upstream, cache)
    target = x if wrt == "x" else layer.params[wrt]
    numeric = numerical_gradient(lambda: (layer.forward(x)[0] * upstream).sum(), target)
    return (dx if wrt == "x" else grads[wrt]), numeric


@pytest.mark.parametrize("wrt", ["x", "weight", "bias"])
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_backward_matches_finite_differences(k, name, wrt):
    """Conv (3 -> 4 maps, non-square 7x9 input): dx, dW, db equal finite differences."""
    rng = np.random.default_rng(k)
    layer = _conv(rng, 3, 4, k, name)
    x = rng.standard_normal((2, 3, 7, 9))
    analytic, numeric = _layer_grad_check(layer, x, wrt)
    assert_grad_close(analytic, numeric, f"conv k={k} {name} d/d{wrt}")


@pytest.mark.parametrize("s", [2, 3])
def test_mean_pool_backward_matches_finite_differences(s):
    """Mean-pool dx equals finite differences (catches s² multiplied instead of divided)."""
    rng = np.random.default_rng(s)
    x = rng.standard_normal((2, 3, 2 * s, 3 * s))
    analytic, numeric = _layer_grad_check(MeanPool(s), x, "x")
    assert_grad_close(analytic, numeric, f"mean-pool s={s}")


@pytest.mark.parametrize("s", [2, 3])
def test_mean_pool_backward_divides_by_s_squared(s):
    """A unit error in a pooled map becomes 1/s² at each of the s² pixels of its block."""
    up = MeanPool(s).backward(np.ones((1, 2, 2, 1)), None)[0]  # CHWN
    np.testing.assert_array_equal(up, np.full((1, 2 * s, 2 * s, 1), 1.0 / (s * s)))


def _distinct_values(rng, shape):
    """Values at least 0.01 apart, so an eps-step never changes which unit is a maximum."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 1.0


@pytest.mark.parametrize("s", [2, 3])
def test_max_pool_backward_matches_finite_differences(s):
    """Max-pool dx (no ties) equals finite differences."""
    rng = np.random.default_rng(s)
    x = _distinct_values(rng, (2, 3, 2 * s, 3 * s))
    analytic, numeric = _layer_grad_check(MaxPool(s), x, "x")
    assert_grad_close(analytic, numeric, f"max-pool s={s}")


@pytest.mark.parametrize("s", [2, 3])
def test_max_pool_tie_goes_to_first_unit_in_row_major_order(s):
    """In an all-equal block the whole error goes to the block's top-left unit."""
    pool = MaxPool(s)
    _, idx = pool.forward(np.zeros((1, 2 * s, 2 * s, 1)))  # CHWN
    up = pool.backward(np.ones((1, 2, 2, 1)), idx)[0]
    want = np.zeros((2 * s, 2 * s))
    want[::s, ::s] = 1
    np.testing.assert_array_equal(up[0, :, :, 0], want)


@pytest.mark.parametrize("wrt", ["x", "weight", "bias"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_dense_backward_matches_finite_differences(name, wrt):
    """Dense (maps flattened in (map, row, col) order): dx, dW, db equal finite differences."""
    rng = np.random.default_rng(3)
    layer = Dense(12, 5, get_activation(name), np.dtype("float64"))
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, (5, 12))
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, 5)
    x = rng.standard_normal((3, 2, 2, 3))
    analytic, numeric = _layer_grad_check(layer, x, wrt)
    assert_grad_close(analytic, numeric, f"dense {name} d/d{wrt}")


# ------------------------------------------------------------------------ kernel identities
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_col2im_is_the_adjoint_of_im2col(k):
    """<im2col(x), y> == <x, col2im(y)> for random x and y."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 6, 7))
    cols = im2col(x, k)
    y = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, y)
    rhs = np.vdot(x, col2im(y, x.shape, k))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs), (lhs, rhs)


def rot180(k: np.ndarray) -> np.ndarray:
    return k[::-1, ::-1]


def convn_full(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB's convn(a, k, 'full') on 2-D arrays, written out: zero-pad a by k-1 on every
    side, then slide the flipped kernel (a true convolution) over every position."""
    kh, kw = k.shape
    p = np.pad(a, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    out = np.zeros((a.shape[0] + kh - 1, a.shape[1] + kw - 1))
    for u in range(out.shape[0]):
        for v in range(out.shape[1]):
            out[u, v] = np.sum(p[u : u + kh, v : v + kw] * rot180(k))
    return out


def test_literal_full_convolution_matches_scipy():
    """The test's literal convn(., ., 'full') agrees with scipy.signal.convolve2d."""
    from scipy import signal
    rng = np.random.default_rng(0)
    a, k = rng.standard_normal((4, 6)), rng.standard_normal((3, 3))
    np.testing.assert_allclose(convn_full(a, k), signal.convolve2d(a, k, "full"), atol=1e-13)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_backward_dx_is_equation_12(k):
    """dx of ``kernels.conv_backward`` (the kernel the network runs) is
    Σ_j δ_j *full* rot180(K_ij), the paper's (12), with K the toolbox kernel (stored
    rotated: K_ij = rot180(w[j, i])); identity activation, no pooling, so δ = dL/da."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 7, 9))
    w = rng.standard_normal((4, 3, k, k))
    delta = rng.standard_normal((2, 4, 7 - k + 1, 9 - k + 1))
    xc = to_chwn(x)
    z, a = np.empty((4, 7 - k + 1, 9 - k + 1, 2)), np.empty((4, 7 - k + 1, 9 - k + 1, 2))
    consts = np.array([1.0, 0.0, 1.0])
    kernels.conv_forward(xc, w, np.zeros(4), kernels.IDENTITY, consts, 1, z, a, np.empty((0,) * 4))
    dw, db, dx = np.empty_like(w), np.empty(4), np.empty_like(xc)
    kernels.conv_backward(xc, w, to_chwn(delta), kernels.IDENTITY, consts, 1, z, a, dw, db, dx)
    want = np.zeros_like(x)
    for n in range(2):
        for i in range(3):
            for j in range(4):
                toolbox_kernel = rot180(w[j, i])
                want[n, i] += convn_full(delta[n, j], rot180(toolbox_kernel))
    np.testing.assert_allclose(np.moveaxis(dx, -1, 0), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(z, -1, 0), conv2d_forward(x, w, np.zeros(4))[0],
                               rtol=0, atol=1e-12)


# ----------------------------------------------------------------------- repeatability
def _layers_with_inputs():
    rng = np.random.default_rng(0)
    return {  # inputs in the layers' CHWN layout
        "conv": (_conv(rng, 2, 3, 3, "tanh-linear:0.13"), rng.standard_normal((2, 6, 6, 2))),
        "mean-pool": (MeanPool(2), rng.standard_normal((2, 2, 6, 6))),
        "max-pool": (MaxPool(2), _distinct_values(rng, (2, 2, 6, 6))),
        "dense": (Dense(8, 3, get_activation("sigmoid"), np.dtype("float64")),
                  rng.standard_normal((2, 2, 2, 2))),
    }


@pytest.mark.parametrize("kind", ["conv", "mean-pool", "max-pool", "dense"])
def test_layer_backward_twice_gives_identical_gradients(kind):
    """Nothing accumulates between two backward calls on the same cache and upstream."""
    layer, x = _layers_with_inputs()[kind]
    out, cache = layer.forward(x)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    dx1, g1 = layer.backward(upstream, cache)
    dx2, g2 = layer.backward(upstream, cache)
    np.testing.assert_array_equal(dx1, dx2)
    assert g1.keys() == g2.keys()
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name], err_msg=name)


def _default_net_and_batch(dtype="float64"):
    net = Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    return net, rng.uniform(0, 1, (4, 28, 28)), rng.integers(0, 10, 4)


def test_loss_and_grads_twice_gives_identical_results():
    """Two loss_and_grads calls on the same batch return the same loss and gradients."""
    net, x, y = _default_net_and_batch()
    loss1, g1 = net.loss_and_grads(x, y)
    loss2, g2 = net.loss_and_grads(x, y)
    assert loss1 == loss2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name], err_msg=name)


def test_mutating_returned_grads_does_not_change_the_next_call():
    """loss_and_grads returns fresh arrays: overwriting them leaves later calls intact."""
    net, x, y = _default_net_and_batch()
    _, g1 = net.loss_and_grads(x, y)
    saved = {k: v.copy() for k, v in g1.items()}
    for v in g1.values():
        v[...] = 999.0
    _, g2 = net.loss_and_grads(x, y)
    for name in saved:
        np.testing.assert_array_equal(g2[name], saved[name], err_msg=name)


def test_returned_grads_share_no_memory_with_params():
    """No gradient array is a view of a parameter (an in-place update cannot corrupt it)."""
    net, x, y = _default_net_and_batch()
    _, grads = net.loss_and_grads(x, y)
    for g in grads.values():
        for p in net.params.values():
            assert not np.shares_memory(g, p)


# ----------------------------------------------------------------- whole networks
NETWORKS = [
    ("6c5-2s-12c5-2s", (28, 28)),
    ("4c3-2m-3c3-2s", (14, 14)),
    ("2c3", (7, 9)),
    ("3c5-2m", (12, 16)),
    ("2c3-3m", (3, 11, 8)),
    ("3s-2c3-2m", (12, 12)),
]
SAMPLES = 30


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("spec,input_shape", NETWORKS, ids=[s for s, _ in NETWORKS])
def test_network_gradients_match_finite_differences(spec, input_shape, name):
    """loss_and_grads equals finite differences of loss_value for every parameter
    (up to 30 sampled entries per parameter)."""
    net = Network.from_spec(spec, activation=name, input_shape=input_shape, seed=1,
                            dtype="float64")
    rng = np.random.default_rng(2)
    for k in net.params:
        if k.endswith(".bias"):  # non-zero biases, so a forgotten bias would show
            net.params[k] = rng.uniform(-0.2, 0.2, net.params[k].shape)
    x = rng.standard_normal((3, *input_shape))
    y = rng.integers(0, 10, 3)
    _, grads = net.loss_and_grads(x, y)
    assert list(grads) == list(net.params)
    for k, p in net.params.items():
        flat = rng.choice(p.size, min(p.size, SAMPLES), replace=False)
        numeric = numerical_gradient(lambda: net.loss_value(x, y), p, flat=flat)
        assert_grad_close(grads[k].ravel()[flat], numeric, f"{spec} {name} {k}")
