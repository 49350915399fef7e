"""One batch part shared by the team's members layer by layer, in lockstep.

A batch of the paper's size is one part (:meth:`Network.part_limit`), so the team
(``team.py``) has no second part to hand out.  Instead every member runs the same
layers on the same arrays, in a shared *arena*, each doing its share of every kernel
call, and all meet at a barrier before the next layer reads what the others wrote:

- forward, per conv layer: output rows, in whole pooling blocks (``rows`` of
  ``kernels.conv_forward``); then a barrier;
- the fully connected layers and the loss: every member alone, on the whole batch
  (small, and no barrier: each gets dL/d(features) itself);
- backward, per conv layer (``part`` of ``kernels.conv_backward``): δ and db for a
  share of the maps (equation 11, 14); a barrier; a share of the dW tasks (equation 13)
  and of the rows of the error below (equation 12); a barrier.

Each value is computed by exactly the loops that compute it in one process, so the
loss and gradients are bit-identical to one thread's, whichever member did what.
Only networks whose conv layers all run the direct kernels with a fused built-in
activation take this path (:func:`eligible`); others share a batch by its parts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from convprop.maths import kernels
from convprop.maths.layers import fused_code, kept, kernel_consts
from convprop.maths.team_shm import fence

_LINE = 8  # int64 slots per cache line: each member's barrier counter on its own line
# Polls of a barrier before each further poll yields the core (about 80 us: balanced
# members meet within a few; with another process busy on the other core, a member
# waits for one that shares its core, which runs only when it yields).
_SPINS = 512
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
_HEADER_LINES = 1  # line 0: the abort slot (the job that was abandoned)


class Aborted(Exception):
    """Another member gave up on this job."""


def conv_steps(net) -> list[tuple[int, int]]:
    return [(i, pool) for i, pool in net._steps if net.layers[i].kind == "conv"]


def eligible(net) -> bool:
    """Whether the members can share a part of this network layer by layer: every
    conv layer on the direct kernels with a fused activation (no learnable parameter),
    every pooling layer a mean-pooling fused into the conv layer before it, and the
    fully connected layers after them; at least one conv layer."""
    convs = 0
    for i, _ in net._steps:
        layer = net.layers[i]
        if layer.kind == "conv":
            if layer.gemm or fused_code(layer.activation) is None:
                return False
            convs += 1
        elif layer.kind == "pool":
            return False
    return convs > 0  # (a perceptron alone: nothing to share)


def arena_shapes(net, n: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of every array the members share for a part of n images: the
    ``images`` as given (N, C, H, W), the input ``x`` (CHWN: each member transposes the
    rows it reads) and targets ``t``, and per conv layer j: ``z{j}``, ``a{j}`` (as
    the one-process forward keeps them, else empty), ``p{j}`` (pooled), ``d{j}`` (δ),
    ``dx{j}`` (the error of the layer below, j > 0), ``dw{j}``, ``db{j}``."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("images", (n, *net.input_shape)),
                                                 ("x", (*net.input_shape, n)),
                                                 ("t", (n, net.n_outputs))]
    c, h, w = net.input_shape
    for j, (i, pool) in enumerate(conv_steps(net)):
        layer = net.layers[i]
        keep_z, keep_a = kept(fused_code(layer.activation)[0], pool)
        ho, wo = h - layer.k + 1, w - layer.k + 1
        full = (layer.out_maps, ho, wo, n)
        shapes += [(f"z{j}", full if keep_z else (0, 0, 0, 0)),
                   (f"a{j}", full if keep_a else (0, 0, 0, 0)),
                   (f"p{j}", (layer.out_maps, ho // pool, wo // pool, n) if pool > 1
                    else (0, 0, 0, 0)),
                   (f"d{j}", full),
                   (f"dx{j}", (c, h, w, n) if j > 0 else (0, 0, 0, 0)),
                   (f"dw{j}", layer.params["weight"].shape), (f"db{j}", (layer.out_maps,))]
        c, h, w = layer.out_maps, ho // pool, wo // pool
    return tuple(shapes)


class Arena:
    """Byte offsets of the shared arrays (:func:`arena_shapes`) after a header of
    barrier counters, computed alike by every member from (dtype, members, shapes)."""

    def __init__(self, dtype: str, members: int, shapes: tuple):
        self.dtype, self.members, self.shapes = np.dtype(dtype), members, shapes
        offset = 64 * (_HEADER_LINES + members)
        self.offsets = []
        for _, shape in shapes:
            self.offsets.append(offset)
            offset += -(-int(np.prod(shape)) * self.dtype.itemsize // 64) * 64
        self.size = max(offset, 64)

    def args(self) -> tuple:
        return (self.dtype.str, self.members, self.shapes)

    def views(self, buf) -> dict[str, np.ndarray]:
        out = {"header": np.frombuffer(buf, np.int64, _LINE * (_HEADER_LINES + self.members))}
        for (name, shape), offset in zip(self.shapes, self.offsets):
            out[name] = np.frombuffer(buf, self.dtype, int(np.prod(shape)), offset).reshape(shape)
        return out


def barrier(header: np.ndarray, me: int, members: int, job: int,
            watch: Callable[[], None] | None = None) -> Callable[[], None]:
    """A function that waits, each time it is called, until every member has called it
    as often in this job; Aborted when a member abandons the job (header slot 0 =
    job); ``watch`` runs now and then while waiting (the caller checks its workers)."""
    count = [job << 8]

    def wait() -> None:
        count[0] += 1
        gen = count[0]
        fence()
        header[_LINE * (_HEADER_LINES + me)] = gen
        fence()
        spins = 0
        for m in range(members):
            slot = _LINE * (_HEADER_LINES + m)
            while header[slot] < gen:
                if header[0] == job:
                    raise Aborted(f"job {job} abandoned")
                spins += 1
                if spins > _SPINS:  # a member not running now: let it have this core
                    _yield()
                    if spins & 255 == 0 and watch is not None:
                        watch()
        fence()

    return wait


def share(n: int, me: int, members: int) -> tuple[int, int]:
    """Member ``me``'s range of n equal tasks."""
    return n * me // members, n * (me + 1) // members


class Plan:
    """Member ``me``'s calls for one part in the arena ``arrays``: the kernel calls with
    their arguments bound (views made once), the fully connected layers in order.
    Made once per network structure, arena and member (the caller's team and each
    worker keep theirs)."""

    def __init__(self, net, arrays: dict[str, np.ndarray], me: int, members: int):
        self.net, self.arrays, self.me, self.members = net, arrays, me, members
        a, dt = arrays["x"], net.dtype
        self.forward: list[Callable[[], None]] = []
        self.backward: list[tuple[Callable[[], None], Callable[[], None]]] = []
        steps = conv_steps(net)
        for j, (i, pool) in enumerate(steps):  # forward: rows in whole pooling blocks
            layer = net.layers[i]
            w, b = layer.params["weight"], layer.params["bias"]
            code, param = fused_code(layer.activation)
            consts = kernel_consts(dt, param, 1.0 / (pool * pool))
            lo, hi = share((a.shape[1] - layer.k + 1) // pool, me, members)
            if j == 0:  # the input rows this member's output rows read, into CHWN
                self.rows = (lo * pool, hi * pool + layer.k - 1) if hi > lo else (0, 0)
            z, act, p = arrays[f"z{j}"], arrays[f"a{j}"], arrays[f"p{j}"]
            self.forward.append(kernels.conv_forward_call(
                a, w, b, code, consts, pool, z, act, p, rows=(lo * pool, hi * pool)))
            out = p if pool > 1 else act
            # dL/d(out): the arena's dx of the next conv layer, or (the last) the fully
            # connected layers' error, copied in by each member into its own array
            dp = arrays[f"dx{j + 1}"] if j + 1 < len(steps) else np.empty_like(out)
            dw, db, delta, dx = (arrays[f"{k}{j}"] for k in ("dw", "db", "d", "dx"))
            nw, nx = kernels.conv_tasks(w.shape, a.shape[1])
            maps = kernels.conv_backward_call(
                a, w, dp, code, consts, pool, z, act, dw, db, dx, delta,
                part=(share(layer.out_maps, me, members), (0, 0), (0, 0)))
            tasks = kernels.conv_backward_call(
                a, w, dp, code, consts, pool, z, act, dw, db, dx, delta,
                part=((0, 0), share(nw, me, members), share(nx, me, members) if j else (0, 0)))
            self.backward.insert(0, (maps, tasks))
            self.features, self.dp = out, dp
            a = out
        self.dense = [(i, net.layers[i], net.layer_names[i]) for i, _ in net._steps
                      if net.layers[i].kind != "conv"]

    def run(self, sync: Callable[[], None]) -> tuple[float, dict[str, np.ndarray]]:
        """The member's share of the part: the loss and the gradients of the fully
        connected layers (each member computes them whole); the conv layers' gradients
        are in the arena (``dw{j}``, ``db{j}``) once every member has finished."""
        r0, r1 = self.rows  # (rows both members read get the same values from each)
        images, x = self.arrays["images"], self.arrays["x"]
        x[:, r0:r1] = images[:, :, r0:r1].transpose(1, 2, 3, 0)
        for call in self.forward:
            call()
            sync()
        caches: list[Any] = []
        h = self.features
        for _, layer, _ in self.dense:
            h, cache = layer.forward(h)
            caches.append(cache)
        loss, dout = self.net.loss(h.T, self.arrays["t"])
        grads: dict[str, np.ndarray] = {}
        d = np.asarray(dout).T
        for (_, layer, name), cache in zip(reversed(self.dense), reversed(caches)):
            d, g = layer.backward(d, cache, need_dx=True)
            for k, v in g.items():
                grads[f"{name}.{k}"] = v
        self.dp[...] = d
        last = len(self.backward) - 1
        for j, (maps, tasks) in enumerate(self.backward):  # maps, then dW and dx tasks
            maps()
            sync()
            tasks()
            if j < last:
                sync()
        return float(loss), grads
