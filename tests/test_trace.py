"""``Network.trace``: every layer's output and error signal, checked against PyTorch.

δ of a conv layer is dL/dz (equation 11), the error on a pooling layer's output is the
"full" convolution of equation (12); torch gives both as ``.grad`` of retained tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convprop.maths.network import Network

F = torch.nn.functional


@pytest.mark.parametrize("spec,act", [("6c5-2s-12c5-2s", "sigmoid"),
                                      ("4c5-2m-6c3-2s", "leaky-relu:0.05"),
                                      ("3c3-2s", "tanh-linear:0.13")])
def test_trace_matches_torch(spec, act):
    net = Network.from_spec(spec, activation=act, seed=3, dtype="float64")
    rng = np.random.default_rng(0)
    for name in net.params:
        if name.endswith("bias"):
            net.params[name] = rng.normal(0, 0.1, net.params[name].shape)
    x, y = rng.random((5, 28, 28)), rng.integers(0, 10, 5)
    tr = net.trace(x, y)

    f = {"sigmoid": torch.sigmoid, "leaky-relu:0.05": lambda z: F.leaky_relu(z, 0.05),
         "tanh-linear:0.13": lambda z: torch.tanh(z) + 0.13 * z}[act]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    a = torch.tensor(x)[:, None]
    zs, outs = {}, {}
    for layer, name in zip(net.layers, net.layer_names):
        if layer.kind == "conv":
            z = F.conv2d(a, p[f"{name}.weight"], p[f"{name}.bias"])
            a = f(z)
        elif layer.kind == "pool":
            pool = F.avg_pool2d if type(layer).__name__ == "MeanPool" else F.max_pool2d
            z, a = None, pool(a, layer.scale)
        else:
            z = a.flatten(1) @ p["out.weight"].T + p["out.bias"]
            a = torch.sigmoid(z)
        for t in (z, a):
            if t is not None:
                t.retain_grad()
        zs[name], outs[name] = z, a
    loss = 0.5 * ((a - F.one_hot(torch.tensor(y), 10)) ** 2).sum() / len(x)
    loss.backward()

    assert tr.loss == pytest.approx(loss.item(), rel=1e-12)
    assert [r.name for r in tr.layers] == net.layer_names
    for rec in tr.layers:
        np.testing.assert_allclose(rec.a, outs[rec.name].detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(rec.d_out, outs[rec.name].grad.numpy(), atol=1e-12)
        if rec.kind == "pool":
            assert rec.delta is None and rec.slope is None
        else:
            np.testing.assert_allclose(rec.delta, zs[rec.name].grad.numpy(), atol=1e-12)
        for pname, g in rec.grads.items():
            np.testing.assert_allclose(g, p[f"{rec.name}.{pname}"].grad.numpy(), atol=1e-12)
    loss2, grads = net.loss_and_grads(x, y)   # the fused fast path: same up to rounding
    assert loss2 == pytest.approx(tr.loss, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], tr.grads[k], rtol=1e-10, atol=1e-15)
