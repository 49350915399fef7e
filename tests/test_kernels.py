"""The numba kernels (CHWN layout) against plain NumPy / PyTorch references, for odd
shapes, both dtypes and every fused activation; their determinism; and the generic
(unfused) activation path, with a learnable activation checked by finite differences."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch  # noqa: E402  (a test dependency: missing, the suite fails)

from conftest import numerical_gradient
from convprop.maths import compiling, kernels, kernels_dense, kernels_gemm
from convprop.maths.activations import Activation, Sigmoid, get_activation
from convprop.maths.layers import Conv, fused_code, to_chwn, to_nchw
from convprop.maths.network import Network
from reference import conv2d_backward, conv2d_forward

F = torch.nn.functional

FUSED = {  # kernel code -> (activation string, torch f)
    kernels.IDENTITY: ("identity", lambda z: z),
    kernels.SIGMOID: ("sigmoid", torch.sigmoid),
    kernels.TANH: ("tanh", torch.tanh),
    kernels.TANH_LINEAR: ("tanh-linear:0.13", lambda z: torch.tanh(z) + 0.13 * z),
    kernels.RELU: ("relu", F.relu),
    kernels.LEAKY_RELU: ("leaky-relu:0.05", lambda z: F.leaky_relu(z, 0.05)),
}
PARAM = {kernels.TANH_LINEAR: 0.13, kernels.LEAKY_RELU: 0.05}
TOL = {"float64": 1e-12, "float32": 2e-5}


def close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got - want).max() / scale
    assert err <= TOL[dtype], f"{what}: max relative difference {err:.3g}"


def case(k, s, n, dtype, seed=0):
    """3 -> 5 maps (odd counts: the kernels pair maps up), a non-square input whose conv
    output divides by s."""
    rng = np.random.default_rng(seed)
    ho, wo = 2 * s, 3 * s
    x = rng.standard_normal((n, 3, ho + k - 1, wo + k - 1))
    w = rng.uniform(-0.5, 0.5, (5, 3, k, k))
    b = rng.uniform(-0.5, 0.5, 5)
    dp = rng.standard_normal((n, 5, ho // s, wo // s))
    return [v.astype(dtype) for v in (x, w, b, dp)]


def torch_reference(code, x, w, b, dp, s):
    """(z, a, p, dw, db, dx) by autograd in float64: p = avgpool_s(f(conv(x) + b)),
    the gradients of sum(p * dp)."""
    xt, wt, bt = (torch.tensor(v.astype(np.float64), requires_grad=True) for v in (x, w, b))
    z = F.conv2d(xt, wt, bt)
    a = FUSED[code][1](z)
    p = F.avg_pool2d(a, s)
    (p * torch.tensor(dp.astype(np.float64))).sum().backward()
    return [v.detach().numpy() for v in (z, a, p, wt.grad, bt.grad, xt.grad)]


def run_kernels(code, x, w, b, dp, s, path=kernels):
    dt = x.dtype
    xc = to_chwn(x)
    n_out, k = w.shape[0], w.shape[2]
    ho, wo = x.shape[2] - k + 1, x.shape[3] - k + 1
    n = x.shape[0]
    z, a = np.empty((n_out, ho, wo, n), dt), np.empty((n_out, ho, wo, n), dt)
    p = np.empty((n_out, ho // s, wo // s, n), dt)
    consts = np.array([1.0, PARAM.get(code, 0.0), 1.0 / (s * s)], dt)
    path.conv_forward(xc, w, b, code, consts, s, z, a, p)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(xc)
    path.conv_backward(xc, w, to_chwn(dp), code, consts, s, z, a, dw, db, dx)
    return to_nchw(z), to_nchw(a), to_nchw(p), dw, db, to_nchw(dx)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("path", ["direct", "gemm", "gemm-dx"])
def test_fused_conv_kernels_match_torch(path, k, s, n, dtype, monkeypatch):
    """conv_forward (z, f(z), mean-pool) and conv_backward (dW, db, dx) equal PyTorch
    autograd for every fused activation, kernel sizes 1-5, pool scales 1-3, batch 1 and 7,
    on both paths (direct kernels, im2col + GEMM), the latter with either plan of
    ``kernels_gemm.gemm_passes`` (every pass a GEMM, or only dx)."""
    if path != "direct":
        plan = ("dx",) if path == "gemm-dx" else ("forward", "dw", "dx")
        monkeypatch.setitem(kernels_gemm._PLAN, "passes", plan)
    path = kernels if path == "direct" else kernels_gemm
    x, w, b, dp = case(k, s, n, dtype, seed=10 * k + s)
    for code, (name, _) in FUSED.items():
        got = run_kernels(code, x, w, b, dp, s, path)
        want = torch_reference(code, x, w, b, dp, s)
        for what, g, r in zip(["z", "a", "p", "dw", "db", "dx"], got, want):
            assert g.dtype == np.dtype(dtype)
            close(g, r, dtype, f"{name} k={k} s={s} n={n} {what}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, 7, 25, 100])
def test_dense_kernels_match_torch(n, dtype):
    """The fully connected layers' compiled pass: o = f(z + b) forward, δ = do ∘ f'(z)
    and Σ_n δ backward, equal PyTorch autograd for every fused activation; rows of 1-100
    images (vector loops and their remainders)."""
    rng = np.random.default_rng(n)
    z0 = rng.normal(0, 2, (10, n)).astype(dtype)
    b, do = rng.normal(0, 1, 10).astype(dtype), rng.normal(0, 1, (10, n)).astype(dtype)
    for code, (name, f) in FUSED.items():
        consts = np.array([1.0, PARAM.get(code, 0.0), 1.0], dtype)
        z = z0.copy()
        o = kernels_dense.dense_forward(z, b, code, consts)
        delta, db = kernels_dense.dense_backward(code, consts, z, o, do.T.copy().T)
        zt = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
        ot = f(zt + torch.tensor(b, dtype=torch.float64)[:, None])
        ot.backward(torch.tensor(do, dtype=torch.float64))
        for what, g, r in [("z + b", z, (zt + torch.tensor(b, dtype=torch.float64)[:, None])
                            .detach()), ("o", o, ot.detach()), ("delta", delta, zt.grad),
                           ("db", db, zt.grad.sum(1))]:
            assert g.dtype == np.dtype(dtype)
            close(g, r.numpy(), dtype, f"{name} n={n} {what}")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_kernels_equal_the_im2col_reference(k):
    """conv_forward / conv_backward (identity, no pooling) equal the readable im2col +
    matrix-product reference of tests/reference.py, float64."""
    x, w, b, dp = case(k, 1, 3, "float64", seed=k)
    z, _, _, dw, db, dx = run_kernels(kernels.IDENTITY, x, w, b, dp, 1)
    z_ref, cols = conv2d_forward(x, w, b)
    dx_ref, dw_ref, db_ref = conv2d_backward(dp, cols, w, x.shape)
    for what, got, want in [("z", z, z_ref), ("dw", dw, dw_ref), ("db", db, db_ref),
                            ("dx", dx, dx_ref)]:
        close(got, want, "float64", f"k={k} {what}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernels_are_deterministic(dtype):
    """Two runs on the same inputs give bit-identical outputs and gradients."""
    x, w, b, dp = case(5, 2, 7, dtype)
    first = run_kernels(kernels.SIGMOID, x, w, b, dp, 2)
    second = run_kernels(kernels.SIGMOID, x, w, b, dp, 2)
    for f, s in zip(first, second):
        np.testing.assert_array_equal(f, s)


def test_network_training_steps_are_bitwise_reproducible():
    """Two fresh networks trained 5 steps on the same batches end bit-identical."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (50, 28, 28)).astype(np.float32), rng.integers(0, 10, 50)
    nets = [Network.from_spec(dtype="float32", seed=1) for _ in range(2)]
    for net in nets:
        for _ in range(5):
            _, grads = net.loss_and_grads(x, y)
            for k, g in grads.items():
                net.params[k] -= g
    for k in nets[0].params:
        np.testing.assert_array_equal(nets[0].params[k], nets[1].params[k], err_msg=k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_sigmoid_and_tanh_are_accurate_and_saturate_cleanly(dtype):
    """The kernels' own exp gives sigmoid/tanh within a few ulp over ±100, exact limits
    at ±1000, and passes NaN through."""
    z = np.concatenate([np.linspace(-100, 100, 2001), [-1000.0, 1000.0, np.nan]]).astype(dtype)
    one = np.array(1, dtype)
    for code, ref in [(kernels.SIGMOID, lambda v: 1 / (1 + np.exp(-v))), (kernels.TANH, np.tanh)]:
        a = np.empty_like(z)
        with np.errstate(over="ignore"):
            want = ref(z.astype(np.float64))
        kernels._activate(code, 0.0, one, z, a)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(a[:-1], want[:-1], rtol=8 * eps, atol=8 * eps)
        assert np.isnan(a[-1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sliced_inference_equals_one_image_at_a_time(dtype):
    """forward() on 150 images (several inference slices) equals forward() per image."""
    net = Network.from_spec(dtype=dtype, seed=2)
    x = np.random.default_rng(3).uniform(0, 1, (150, 28, 28))
    whole = net.forward(x)
    single = np.concatenate([net.forward(x[i : i + 1]) for i in range(0, 150, 7)])
    np.testing.assert_allclose(whole[::7], single, rtol=0, atol=TOL[dtype])


def test_training_does_not_grow_memory():
    """After warm-up, 40 more training steps leave no numpy memory behind."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (50, 28, 28)), rng.integers(0, 10, 50)
    net = Network.from_spec(dtype="float32")

    def steps(n):
        for _ in range(n):
            _, grads = net.loss_and_grads(x, y)
            for k, g in grads.items():
                net.params[k] -= g

    steps(3)
    tracemalloc.start()
    steps(10)
    mid = tracemalloc.get_traced_memory()[0]
    steps(30)
    end, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert end - mid < 64 * 1024, (mid, end)
    assert peak < 16 * 2**20, peak


# ------------------------------------------------------------------- the generic path
class ScaledSigmoid(Activation):
    """A learnable test activation: f(z) = s_j σ(z) with one scale s_j per map (axis 0 of
    the CHWN layout the conv layer hands over)."""

    name = "scaled-sigmoid"

    def __init__(self, n_maps: int):
        self.params = {"scale": np.linspace(0.5, 1.5, n_maps)}

    def _s(self, z):
        return self.params["scale"].reshape(-1, *([1] * (z.ndim - 1)))

    def __call__(self, z):
        return self._s(z) * Sigmoid()(z)

    def derivative(self, z, a):
        sig = Sigmoid()(z)
        return self._s(z) * sig * (1 - sig)

    def param_grads(self, z, a, da, map_axis):
        axes = tuple(i for i in range(z.ndim) if i != map_axis)
        return {"scale": (da * Sigmoid()(z)).sum(axis=axes)}


def test_fused_code_only_for_unmodified_builtins(monkeypatch):
    """Built-ins run fused; a learnable or patched activation takes the generic path."""
    assert fused_code(get_activation("tanh-linear:0.13")) == (kernels.TANH_LINEAR, 0.13)
    assert fused_code(ScaledSigmoid(2)) is None
    monkeypatch.setattr(Sigmoid, "derivative", lambda self, z, a: a)
    assert fused_code(get_activation("sigmoid")) is None


def test_learnable_activation_params_belong_to_the_conv_layer():
    """The layer's params include the activation's; backward returns their gradient."""
    layer = Conv(2, 3, 3, ScaledSigmoid(3), np.dtype("float64"))
    assert list(layer.params) == ["weight", "bias", "scale"]
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 2))  # CHWN
    out, cache = layer.forward(x)
    _, grads = layer.backward(np.ones_like(out), cache)
    assert grads["scale"].shape == (3,)


@pytest.mark.parametrize("wrt", ["x", "weight", "bias", "scale"])
def test_generic_conv_path_matches_finite_differences(wrt):
    """Conv with a learnable activation: dx, dW, db and d(scale) equal finite differences."""
    rng = np.random.default_rng(4)
    layer = Conv(2, 3, 3, ScaledSigmoid(3), np.dtype("float64"))
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, layer.params["weight"].shape)
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, 3)
    x = rng.standard_normal((2, 6, 7, 2))  # CHWN
    out, cache = layer.forward(x)
    up = rng.standard_normal(out.shape)
    dx, grads = layer.backward(up, cache)
    target = x if wrt == "x" else layer.params[wrt]
    numeric = numerical_gradient(lambda: (layer.forward(x)[0] * up).sum(), target)
    analytic = dx if wrt == "x" else grads[wrt]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_generic_path_with_fused_pooling_in_a_network_matches_finite_differences():
    """A network conv + mean-pool (fused step) with the learnable activation: every
    gradient, the activation's scale included, equals finite differences."""
    net = Network.from_spec("3c3-2s", activation=ScaledSigmoid(3), input_shape=(8, 8),
                            seed=1, dtype="float64")
    assert "conv1.scale" in net.params
    rng = np.random.default_rng(5)
    net.params["conv1.bias"] = rng.uniform(-0.3, 0.3, 3)
    x, y = rng.uniform(0, 1, (4, 8, 8)), rng.integers(0, 10, 4)
    _, grads = net.loss_and_grads(x, y)
    for name, p in net.params.items():
        numeric = numerical_gradient(lambda: net.loss_value(x, y), p)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("name", ["sigmoid", "relu", "identity", "tanh-linear:0.13"])
def test_full_cache_keeps_z_and_a(name):
    """``forward(full_cache=True)`` (what trace uses) keeps z and a = f(z) whatever f'
    needs, so diagnostics can evaluate f'(z); the network's fused path keeps only what f'
    reads."""
    layer = Conv(2, 3, 3, get_activation(name), np.dtype("float64"))
    layer.params["weight"][...] = 0.1
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 4))
    a, (_, _, z, a_kept) = layer.forward(x, full_cache=True)
    assert z.shape == a_kept.shape == a.shape == (3, 4, 4, 4)
    np.testing.assert_allclose(layer.activation(z), a, atol=1e-15)
    _, (_, _, z_fast, a_fast) = layer.forward(x, pool=2)
    kept = 2 if name.startswith("tanh-linear") else 1  # tanh-linear's f' reads z and a
    assert z_fast.size + a_fast.size == kept * z.size


def test_threaded_inference_gives_the_same_outputs():
    """forward() with 2 threads (slices in parallel) equals forward() with 1, bit for bit."""
    from convprop.maths.network import get_num_threads, set_num_threads

    net = Network.from_spec(dtype="float32", seed=4)
    x = np.random.default_rng(6).uniform(0, 1, (300, 28, 28))
    before = get_num_threads()
    try:
        set_num_threads(1)
        one = net.forward(x)
        set_num_threads(2)
        two = net.forward(x)
    finally:
        set_num_threads(before)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec,n", [("6c5-2s-12c5-2s", 50), ("4c5-2m-6c3-2s", 77),
                                    ("3c3-2s", 256), ("20c5-2s-50c5-2s", 40)])
def test_training_results_do_not_depend_on_the_thread_count(spec, n, dtype):
    """loss_and_grads with 1, 2 and 3 threads: bit-identical loss and gradients (the
    batch's parts depend on its size only), and equal to one whole-batch pass up to
    rounding.  20c5-2s-50c5-2s's conv2 runs the im2col + GEMM path."""
    from convprop.maths.network import get_num_threads, set_num_threads

    net = Network.from_spec(spec, dtype=dtype, seed=4)
    assert getattr(net.layers[2], "gemm", False) == spec.startswith("20c5")
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 1, (n, 28, 28)), rng.integers(0, 10, n)
    before = get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 1):
            set_num_threads(threads)
            results.append(net.loss_and_grads(x, y))
    finally:
        set_num_threads(before)
    loss1, g1 = results[0]
    for loss, g in results[1:]:
        assert loss == loss1
        for k in g1:
            np.testing.assert_array_equal(g[k], g1[k], err_msg=k)
    net.part_images = n  # one part: the whole batch at once
    loss_whole, whole = net.loss_and_grads(x, y)
    assert loss_whole == pytest.approx(loss1, rel=TOL[dtype])
    for k in g1:
        close(g1[k], whole[k], dtype, k)


def test_batch_parts_depend_on_size_only():
    """50 images in parts of at most 32: 26 + 24 (parts after the first a multiple of 8);
    256: eight of 32; 1: one; near-equal parts when the first would outgrow 32."""
    from convprop.maths.parallel import batch_parts

    assert batch_parts(50, 32) == [0, 26, 50]
    assert batch_parts(256, 32) == list(range(0, 257, 32))
    assert batch_parts(1, 32) == [0, 1]
    assert batch_parts(33, 32) == [0, 17, 33]
    assert batch_parts(100, 32) == [0, 28, 52, 76, 100]
    assert batch_parts(62, 32) == [0, 31, 62]  # 38 + 24 would exceed 32
    assert batch_parts(200, 32) == [0, 28, 57, 85, 114, 142, 171, 200]
    for n in range(1, 300):
        bounds = batch_parts(n, 32)
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        assert bounds[0] == 0 and bounds[-1] == n and min(sizes) > 0
        assert len(sizes) == -(-n // 32) and max(sizes) <= 32


def test_compile_kernels_says_so_only_when_it_compiles(monkeypatch):
    """Network.compile_kernels: after it, nothing is left to compile for that dtype; the
    message goes out only when something will compile (simulated for the second call)."""
    net = Network.from_spec("3c3-2s", input_shape=(8, 8), dtype="float32")
    said = []
    net.compile_kernels(said.append)
    assert not compiling.needs_compile("float32")
    said.clear()
    assert net.compile_kernels(said.append) is False and said == []
    monkeypatch.setattr(compiling, "needs_compile", lambda *a: True)
    assert net.compile_kernels(said.append) is True
    assert said == ["compiling kernels (first run only)"]


def test_single_threaded_blas_holds_until_the_last_concurrent_caller_leaves():
    """Two callers overlap (as the explorer's request threads do): BLAS stays on one
    thread until both have left, then gets its setting back."""
    from threadpoolctl import ThreadpoolController

    from convprop.maths import parallel

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    assert libs, "numpy's BLAS not found by threadpoolctl"
    assert len(parallel._blas_switches()) == len(libs)
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(2)
    try:
        first, second = parallel.single_threaded_blas(), parallel.single_threaded_blas()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert [lib.num_threads for lib in libs] == [1] * len(libs)
        second.__exit__(None, None, None)
        assert [lib.num_threads for lib in libs] == [2] * len(libs)
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


@pytest.mark.parametrize("blas,wide", [
    ([("openblas", "Haswell")], True), ([("openblas", "Zen")], True),
    ([("openblas", "SkylakeX")], False), ([("openblas", "Cooperlake")], False),
    ([("mkl", None)], False), ([], False)])
def test_gemm_passes_follow_the_machine_and_the_environment(monkeypatch, blas, wide):
    """kernels_gemm.gemm_passes: only dx as a GEMM where numba has AVX-512 and NumPy's
    BLAS is an OpenBLAS on narrower kernels, every pass otherwise (an unknown BLAS
    included); $CONVPROP_GEMM_PASSES overrides the rule, an invalid value does not."""
    import llvmlite.binding as ll

    avx512 = bool(ll.get_host_cpu_features().get("avx512f", False))
    rule = ("dx",) if wide and avx512 else ("forward", "dw", "dx")
    monkeypatch.setattr(kernels_gemm, "_PLAN", {"blas": tuple(blas)})
    monkeypatch.delenv(kernels_gemm.ENV_PASSES, raising=False)
    assert kernels_gemm.gemm_passes() == rule
    for text, want in [("dx", ("dx",)), ("forward, dw, dx", ("forward", "dw", "dx")),
                       ("everything", rule)]:
        monkeypatch.setattr(kernels_gemm, "_PLAN", {"blas": tuple(blas)})
        monkeypatch.setenv(kernels_gemm.ENV_PASSES, text)
        assert kernels_gemm.gemm_passes() == want, text
