"""One batch part shared layer by layer (maths/split.py): the kernels' shares rebuild
the whole pass bit for bit, and members meeting at barriers give one process's loss
and gradients, whatever their count.  (The team's processes running it: test_team.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from convprop.maths import kernels, split
from convprop.maths.layers import to_chwn
from convprop.maths.network import Network

CODES = [kernels.SIGMOID, kernels.TANH_LINEAR, kernels.RELU]


def conv_case(k, s, n, dtype, maps=(3, 5), seed=0):
    rng = np.random.default_rng(seed)
    c, o = maps
    ho, wo = 4 * s, 3 * s
    x = to_chwn(rng.standard_normal((n, c, ho + k - 1, wo + k - 1)).astype(dtype))
    w = rng.uniform(-0.5, 0.5, (o, c, k, k)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, o).astype(dtype)
    dp = to_chwn(rng.standard_normal((n, o, ho // s, wo // s)).astype(dtype))
    return x, w, b, dp


def outputs(x, w, s):
    n_out, k, n = w.shape[0], w.shape[2], x.shape[3]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    full = (n_out, ho, wo, n)
    return [np.full(shape, np.nan, x.dtype) for shape in
            (full, full, (n_out, ho // s, wo // s, n), full)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,s", [(5, 2), (3, 1), (5, 1), (3, 2)])
@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("pieces", [2, 3])
def test_kernel_shares_rebuild_the_whole_pass_bit_for_bit(dtype, k, s, code, pieces):
    """conv_forward by row ranges (whole pooling blocks) and conv_backward by map ranges
    then dW / dx task ranges, each range run on its own, give exactly the arrays of one
    whole pass; every element is written (the outputs start as NaN)."""
    x, w, b, dp = conv_case(k, s, 6, dtype)
    consts = np.array([1.0, 0.1, 1.0 / (s * s)], dtype)
    z, a, p, _ = outputs(x, w, s)
    kernels.conv_forward(x, w, b, code, consts, s, z, a, p)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    delta = np.empty_like(z)
    kernels.conv_backward(x, w, dp, code, consts, s, z, a, dw, db, dx, delta)

    z2, a2, p2, delta2 = outputs(x, w, s)
    blocks = z.shape[1] // s
    for m in range(pieces):
        lo, hi = split.share(blocks, m, pieces)
        kernels.conv_forward(x, w, b, code, consts, s, z2, a2, p2, rows=(lo * s, hi * s))
    for got, want in [(z2, z), (a2, a), (p2, p)]:
        np.testing.assert_array_equal(got, want)
    dw2, db2, dx2 = (np.full_like(v, np.nan) for v in (w, b, x))
    nw, nx = kernels.conv_tasks(w.shape, x.shape[1])
    for m in range(pieces):
        kernels.conv_backward(x, w, dp, code, consts, s, z, a, dw2, db2, dx2, delta2,
                              part=(split.share(w.shape[0], m, pieces), (0, 0), (0, 0)))
    for m in range(pieces):
        kernels.conv_backward(x, w, dp, code, consts, s, z, a, dw2, db2, dx2, delta2,
                              part=((0, 0), split.share(nw, m, pieces), split.share(nx, m, pieces)))
    for name, got, want in [("delta", delta2, delta), ("dw", dw2, dw), ("db", db2, db),
                            ("dx", dx2, dx)]:
        np.testing.assert_array_equal(got, want, err_msg=name)


def on_threads(net, x, t, members):
    """Plan.run on ``members`` threads meeting at a threading.Barrier (the kernels
    release the GIL); returns member 0's loss and all gradients."""
    n = x.shape[0]
    arena = split.Arena(net.dtype.str, members, split.arena_shapes(net, n))
    views = arena.views(bytearray(arena.size))
    views["images"][...] = x.reshape(n, *net.input_shape)  # the members make CHWN
    views["x"][...] = np.nan
    views["t"][...] = t
    meet = threading.Barrier(members, timeout=60)
    results: list = [None] * members

    def member(m):
        results[m] = split.Plan(net, views, m, members).run(meet.wait)

    threads = [threading.Thread(target=member, args=(m,)) for m in range(members)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    loss, grads = results[0]
    for j, (i, _) in enumerate(split.conv_steps(net)):
        name = net.layer_names[i]
        grads[f"{name}.weight"], grads[f"{name}.bias"] = views[f"dw{j}"], views[f"db{j}"]
    for m in range(1, members):  # every member computed the fully connected part alike
        assert results[m][0] == loss
    return loss, grads


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec,activation", [
    ("6c5-2s-12c5-2s", "sigmoid"), ("6c5-2s-12c5-2s", "tanh-linear:0.1"),
    ("6c3-2s-12c5-100f", "leaky-relu:0.05"), ("4c5-12c5-2s", "relu"),
    ("7c5-2s", "tanh")])
@pytest.mark.parametrize("members", [1, 2, 3])
def test_members_meeting_at_barriers_give_one_parts_bits(dtype, spec, activation, members):
    """The whole part computed by 1-3 members sharing every layer gives exactly the loss
    and gradients of ``Network._part`` in one thread (odd map counts, 3x3 and 5x5
    kernels, no pooling, a hidden fully connected layer included)."""
    net = Network.from_spec(spec, activation, dtype=dtype, seed=4)
    rng = np.random.default_rng(1)
    n = 37
    x = rng.uniform(0, 1, (n, 1, 28, 28)).astype(dtype)
    t = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    want_loss, want = net._part(x, t, None)
    loss, grads = on_threads(net, x, t, members)
    assert loss == want_loss
    assert grads.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(grads[k], want[k], err_msg=k)


def test_which_networks_are_shared_and_their_part_size():
    """Conv layers on the direct kernels with a fused activation share a part (and take
    parts of 64 images); an im2col + GEMM layer, max-pooling, a learnable or a custom
    activation, or no conv layer at all keep parts of 32."""
    shared = ["6c5-2s-12c5-2s", "6c3-2s-12c5-100f", "4c5-12c5-2s"]
    for spec in shared:
        net = Network.from_spec(spec)
        assert split.eligible(net) and net.part_limit() == 64, spec
    for spec, act in [("20c5-2s-50c5-2s", "sigmoid"), ("6c5-2m-12c5-2s", "sigmoid"),
                      ("6c5-2s-12c5-2s", "prelu:map"), ("300f-100f", "sigmoid")]:
        net = Network.from_spec(spec, act)
        assert not split.eligible(net) and net.part_limit() == 32, (spec, act)
    net = Network.from_spec()
    net.part_images = 20
    assert net.part_limit() == 20


def test_a_member_that_gives_up_stops_the_others_at_their_next_barrier():
    """Two members meet at the barrier of job 7 although job 6 was given up (the abort
    slot holds 6); at job 8 member 0 waits alone until the slot says 8: Aborted."""
    arena = split.Arena("<f8", 2, ())
    header = arena.views(bytearray(arena.size))["header"]
    header[0] = 6
    met = []
    other = threading.Thread(target=lambda: met.append(split.barrier(header, 1, 2, 7)()))
    other.start()
    split.barrier(header, 0, 2, 7)()
    other.join(timeout=60)
    assert met == [None]
    wait = split.barrier(header, 0, 2, 8)
    errors = []

    def alone():
        try:
            wait()
        except split.Aborted as e:
            errors.append(e)

    waiting = threading.Thread(target=alone)
    waiting.start()
    waiting.join(timeout=0.2)
    assert waiting.is_alive()  # still waiting for member 1
    header[0] = 8
    waiting.join(timeout=60)
    assert not waiting.is_alive() and len(errors) == 1
