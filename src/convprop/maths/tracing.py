"""What every layer saw in one forward and backward pass: ``Network.trace``'s records
(used by the explorer, the diagnostics and the feature plots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convprop.maths.layers import to_chwn, to_nchw


@dataclass
class LayerTrace:
    """What one layer saw in :meth:`Network.trace` (see there)."""

    name: str
    kind: str
    a: np.ndarray
    d_out: np.ndarray
    slope: np.ndarray | None
    delta: np.ndarray | None
    grads: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Trace:
    """Result of :meth:`Network.trace`: loss, outputs, gradients, one record per layer."""

    loss: float
    outputs: np.ndarray
    grads: dict[str, np.ndarray]
    layers: list[LayerTrace]


def trace(net, x: Any, y: Any) -> Trace:
    """``Network.trace`` (see there): the layers one by one, no fusion, in their CHWN
    layout as in training; only the records are transposed."""
    outs, caches = [], []
    a = to_chwn(net._inputs(x))
    for layer in net.layers:  # layer by layer (no fusion), to record every output
        if layer.kind == "conv":
            a, cache = layer.forward(a, full_cache=True)
        else:
            a, cache = layer.forward(a)
        outs.append(a)
        caches.append(cache)
    o = to_nchw(a)
    loss, dout = net.loss(o, net._targets(y, o.shape[0]))
    grads: dict[str, np.ndarray] = {}
    records: list[LayerTrace] = []
    d = to_chwn(dout)
    for i in range(len(net.layers) - 1, -1, -1):
        layer, name = net.layers[i], net.layer_names[i]
        slope = layer.slope(caches[i]) if hasattr(layer, "slope") else None
        rec = LayerTrace(name, layer.kind, to_nchw(outs[i]), to_nchw(d),
                         None if slope is None else to_nchw(slope),
                         None if slope is None else to_nchw(d * slope))
        d, g = layer.backward(d, caches[i], need_dx=i > 0)
        rec.grads = dict(g)
        grads.update({f"{name}.{pname}": arr for pname, arr in g.items()})
        records.append(rec)
    return Trace(loss, o, {name: grads[name] for name in net.params}, records[::-1])
