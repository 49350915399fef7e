"""convprop against an independent reference: the same network in PyTorch autograd.

The torch model is rebuilt from the spec string and a convprop network's parameters
(conv2d is a cross-correlation with the same (out, in, k, k) layout; features flatten
in (map, row, column) order), and everything is compared in float64 to 1e-10.

Three kinds of batch:
- ``random``: uniform pixels and non-zero biases, the generic case;
- ``mnist``: real digits (the packaged sample) with zero biases, so the blank borders
  give pre-activations exactly 0 and exactly tied max-pool blocks: the conventions
  f'(0) (0 for relu, A for leaky-relu, as torch) and the tie-break matter here;
- ``quantized``: binarised digits and conv1 kernels on a 1/16 grid, so z is exact in
  both libraries and max-pool ties fall between units with *different* inputs (in the
  blank border a tie is invisible: every tied unit has the same gradient), which makes
  the first-in-row-major tie-break visible in conv1's gradients.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch  # noqa: E402  (a test dependency: missing, the suite fails)

from convprop.maths import kernels_pool
from convprop.maths.activations import ReLU
from convprop.maths.layers import to_chwn, to_nchw
from convprop.maths.network import Network
from convprop.maths.optim import SGD
from torch_reference import torch_activation

F = torch.nn.functional

ACTIVATIONS = [
    "sigmoid", "tanh", "tanh-linear:0.13", "tanh-linear:0", "relu", "leaky-relu:0.05",
    "identity",
]
SPECS = ["6c5-2s-12c5-2s", "6c5-2m-12c5-2m", "4c5-2m-6c3-2s", "3c5-3m-4c3-2s"]
KINDS = ["random", "mnist", "quantized"]
# the quantised batch only matters where there is max-pooling
CASES = [(spec, act, kind) for spec in SPECS for act in ACTIVATIONS for kind in KINDS
         if kind != "quantized" or "m" in spec]
TOL64 = 1e-10
TOL32 = 1e-4
N = 8


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's thread pool only costs time (a lot on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------ the reference
def torch_forward(spec: str, activation: str, params: dict, x):
    """The spec read token by token: 'Nck' conv + f, 'Ss' avg-pool, 'Sm' max-pool, then
    a sigmoid fully connected layer."""
    a, i = x, 0
    for token in spec.split("-"):
        if token.endswith("s"):
            a = F.avg_pool2d(a, int(token[:-1]))
        elif token.endswith("m"):
            a = F.max_pool2d(a, int(token[:-1]))
        else:
            i += 1
            a = torch_activation(activation,
                                 F.conv2d(a, params[f"conv{i}.weight"], params[f"conv{i}.bias"]))
    return torch.sigmoid(F.linear(a.flatten(1), params["out.weight"], params["out.bias"]))


def torch_loss_and_grads(spec, activation, params_np, x_np, y_onehot):
    """(output, loss, grads) by autograd in the parameters' dtype; L = 1/2 Σ (o - y)² / N."""
    params = {k: torch.tensor(v, requires_grad=True) for k, v in params_np.items()}
    x = torch.tensor(x_np[:, None])
    y = torch.tensor(y_onehot)
    o = torch_forward(spec, activation, params, x)
    loss = 0.5 * ((o - y) ** 2).sum() / x.shape[0]
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in params.items()}
    return o.detach().numpy(), loss.item(), grads


# ------------------------------------------------------------------------------- batches
@functools.cache
def mnist_batch() -> tuple[np.ndarray, np.ndarray]:
    """N real digits in [0, 1] (the packaged sample), or synthetic strokes on a blank
    28x28 canvas when convprop.data.mnist is not available."""
    try:
        from convprop.data.mnist import load_sample
        ds = load_sample()
        return ds.train_x[:N].astype(np.float64) / 255.0, ds.train_y[:N].astype(np.int64)
    except ImportError:
        rng = np.random.default_rng(0)
        x = np.zeros((N, 28, 28))
        for img in x:
            for _ in range(4):
                r, c = rng.integers(6, 20, 2)
                img[r : r + rng.integers(2, 8), c : c + 2] = 1.0
        return x, rng.integers(0, 10, N)


def make_case(spec: str, activation: str, kind: str, dtype: str = "float64"):
    """A convprop network and a batch of the given kind."""
    net = Network.from_spec(spec, activation=activation, seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    if kind == "random":
        for k in net.params:
            if k.endswith(".bias"):
                net.params[k] = rng.uniform(-0.3, 0.3, net.params[k].shape)
        x, y = rng.uniform(0, 1, (N, 28, 28)), rng.integers(0, 10, N)
    else:
        x, y = mnist_batch()
        if kind == "quantized":
            x = (x > 0.5).astype(np.float64)
            net.params["conv1.weight"] = np.round(net.params["conv1.weight"] * 16) / 16
    return net, x, y


def run_both(spec, activation, kind, dtype="float64"):
    """convprop's and torch's (output, loss, grads); torch in float64 on the same values."""
    net, x, y = make_case(spec, activation, kind, dtype)
    loss_c, grads_c = net.loss_and_grads(x, y)
    out_c = net.forward(x)
    params64 = {k: v.astype(np.float64) for k, v in net.params.items()}
    x64 = x.astype(net.dtype).astype(np.float64)
    out_t, loss_t, grads_t = torch_loss_and_grads(spec, activation, params64, x64,
                                                  np.eye(10)[y])
    return (out_c, loss_c, grads_c), (out_t, loss_t, grads_t)


cached_run = functools.cache(run_both)


def assert_close(got, want, tol, what):
    """max |got - want| <= tol · max |want|, with a message naming the worst entry."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = np.abs(want).max()
    assert scale > 0, f"{what}: reference is trivially zero"
    err = np.abs(got - want).max() / scale
    assert err <= tol, f"{what}: max relative difference {err:.3g} > {tol:g}"


# ------------------------------------------------------------------------- float64 checks
@pytest.mark.parametrize("spec,activation,kind", CASES)
def test_output_matches_torch(spec, activation, kind):
    """The network outputs equal torch's."""
    (out_c, _, _), (out_t, _, _) = cached_run(spec, activation, kind)
    assert_close(out_c, out_t, TOL64, "output")


@pytest.mark.parametrize("spec,activation,kind", CASES)
def test_loss_matches_torch(spec, activation, kind):
    """The loss 1/2 Σ (o - y)² / N equals torch's."""
    (_, loss_c, _), (_, loss_t, _) = cached_run(spec, activation, kind)
    assert_close(loss_c, loss_t, TOL64, "loss")


@pytest.mark.parametrize("spec,activation,kind", CASES)
def test_gradients_match_torch(spec, activation, kind):
    """Every parameter's gradient equals torch autograd's."""
    (_, _, grads_c), (_, _, grads_t) = cached_run(spec, activation, kind)
    assert list(grads_c) == list(grads_t)
    for name in grads_t:
        assert_close(grads_c[name], grads_t[name], TOL64, f"{spec} {activation} {kind} {name}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spec", SPECS)
def test_sgd_step_matches_torch(spec, activation):
    """One SGD step with learning rate 1 leaves the same parameters as torch's p -= grad."""
    net, x, y = make_case(spec, activation, "random")
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in net.params.items()}
    o = torch_forward(spec, activation, params, torch.tensor(x[:, None]))
    (0.5 * ((o - torch.tensor(np.eye(10)[y])) ** 2).sum() / N).backward()
    with torch.no_grad():
        for p in params.values():
            p -= 1.0 * p.grad
    _, grads = net.loss_and_grads(x, y)
    SGD(lr=1.0).step(net.params, grads)
    for name, p in params.items():
        assert_close(net.params[name], p.detach().numpy(), TOL64, name)


# ------------------------------------------------------------------------- float32 checks
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spec", SPECS)
def test_float32_output_matches_torch_float64(spec, activation):
    """A float32 network's outputs agree with the float64 reference to 1e-4."""
    (out_c, _, _), (out_t, _, _) = cached_run(spec, activation, "random", "float32")
    assert out_c.dtype == np.float32
    assert_close(out_c, out_t, TOL32, "float32 output")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spec", SPECS)
def test_float32_gradients_match_torch_float64(spec, activation):
    """A float32 network's gradients agree with the float64 reference to 1e-4."""
    (_, _, grads_c), (_, _, grads_t) = cached_run(spec, activation, "random", "float32")
    for name in grads_t:
        assert grads_c[name].dtype == np.float32, name
        assert_close(grads_c[name], grads_t[name], TOL32, f"float32 {name}")


# ------------------------------------------------ the conventions, and that they are tested
def test_max_pool_tie_gradient_matches_torch():
    """On heavily tied blocks, max-pool routes each error to the same unit as torch."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (2, 3, 6, 6)).astype(np.float64)
    delta = rng.standard_normal((2, 3, 3, 3))
    out, idx = kernels_pool.max_pool_forward(to_chwn(a), 2)  # the CHWN kernels
    dx = to_nchw(kernels_pool.max_pool_backward(to_chwn(delta), idx, 2))
    out = to_nchw(out)
    at = torch.tensor(a, requires_grad=True)
    ot = F.max_pool2d(at, 2)
    ot.backward(torch.tensor(delta))
    np.testing.assert_array_equal(out, ot.detach().numpy())
    np.testing.assert_array_equal(dx, at.grad.numpy())


def test_mnist_batch_has_exact_zero_preactivations():
    """The real-digit batch gives z = 0 exactly in conv1 (blank borders, zero biases)."""
    net, x, _ = make_case("6c5-2m-12c5-2m", "relu", "mnist")
    _, caches = net.forward_with_caches(x)
    z = caches[0][2]
    assert (z == 0).mean() > 0.1


def _tied_blocks(a: np.ndarray, s: int) -> int:
    n, c, h, w = a.shape
    blocks = a.reshape(n, c, h // s, s, w // s, s).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, h // s, w // s, s * s)
    return int(((blocks == blocks.max(axis=4, keepdims=True)).sum(axis=4) > 1).sum())


@pytest.mark.parametrize("kind", ["mnist", "quantized"])
def test_batch_has_max_pool_ties(kind):
    """The real-digit and quantised batches put exact ties into conv1's max-pool blocks."""
    net, x, _ = make_case("6c5-2m-12c5-2m", "sigmoid", kind)
    a1, _ = net.layers[0].forward(to_chwn(net._inputs(x)))
    assert _tied_blocks(to_nchw(a1), 2) > 100


def _last_max_pool_forward(a, s):
    """max_pool_forward (CHWN) with ties sent to the *last* unit: a wrong convention."""
    c, h, w, n = a.shape
    blocks = a.reshape(c, h // s, s, w // s, s, n).transpose(0, 1, 3, 5, 2, 4)
    blocks = blocks.reshape(c, h // s, w // s, n, s * s)
    idx = s * s - 1 - blocks[..., ::-1].argmax(axis=4)
    return np.take_along_axis(blocks, idx[..., None], axis=4)[..., 0], idx


def test_quantized_batch_detects_a_wrong_tie_break(monkeypatch):
    """With ties sent to the last unit, conv1's gradient no longer matches torch: the
    quantised crosscheck really tests the tie-break."""
    monkeypatch.setattr(kernels_pool, "max_pool_forward", _last_max_pool_forward)
    (_, _, grads_c), (_, _, grads_t) = run_both("6c5-2m-12c5-2m", "sigmoid", "quantized")
    with pytest.raises(AssertionError):
        assert_close(grads_c["conv1.weight"], grads_t["conv1.weight"], TOL64, "conv1.weight")


def test_mnist_batch_detects_a_wrong_relu_slope_at_zero(monkeypatch):
    """With relu'(0) = 1, the biases' gradients no longer match torch: the real-digit
    crosscheck really tests the convention at z = 0."""
    monkeypatch.setattr(ReLU, "derivative", lambda self, z, a: (z >= 0).astype(z.dtype))
    (_, _, grads_c), (_, _, grads_t) = run_both("6c5-2m-12c5-2m", "relu", "mnist")
    with pytest.raises(AssertionError):
        assert_close(grads_c["conv1.bias"], grads_t["conv1.bias"], TOL64, "conv1.bias")
