"""The worker's side of the team (:mod:`convprop.maths.team`): a process started by the
caller that takes setup messages on a pipe and batch jobs through shared memory, and
runs ``Network._part`` on its replica of the network."""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import struct
import time

import numpy as np

from convprop.maths.compiling import compile_passes
from convprop.maths.parallel import set_num_threads
from convprop.maths.split import Aborted, Arena, Plan, barrier
from convprop.maths.team_shm import (
    DONE,
    JOB,
    MEMBER,
    MEMBERS,
    MODE,
    NPARTS,
    SHARED,
    SLEEP,
    STATUS,
    _Layout,
    _read,
    _unmap,
    fence,
)

_SPIN_SECONDS = 2e-3  # a worker polls this long after a job before it sleeps


def serve(orders: int, answers: int) -> None:
    """A worker's life: setup messages on the ``orders`` pipe (m: map shared memory,
    s: map the arena of parts shared layer by layer, n: a network replica, c: compile
    kernels, w: wake up, q: quit), answers on ``answers``; jobs through shared
    memory."""
    # Ctrl-C and a SIGTERM to the whole group are the caller's to handle (it stops after
    # a checkpoint); a worker ends when the caller closes its pipe, or with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_num_threads(1)
    net, layout, views, mem, done = None, None, None, None, 0
    # the members' shared arrays (split.py) and this worker's plan for them; the replica
    # and memory whose parameters are bound (_bind), and the parameters left to copy
    arena: dict = {"views": None, "mem": None, "plan": None, "bound": (None, None),
                   "copies": []}
    fence()  # compiled (or loaded) before the first job
    os.write(answers, b"r")  # started: the caller sends it batches once it has seen this
    while True:
        if views is not None and _job_posted(views, done, orders):
            done = int(views["header"][JOB])
            fence()
            views["header"][STATUS] = _work(net, layout, views, arena, done)
            fence()
            views["header"][DONE] = done
            continue
        head = _read(orders, 9)
        if len(head) < 9 or head[:1] == b"q":
            return
        payload = _read(orders, struct.unpack("<q", head[1:])[0])
        if head[:1] == b"w":
            continue
        try:
            if head[:1] == b"m":
                path, args = pickle.loads(payload)
                layout = _Layout(*args)
                new = _map(path, layout.size)
                views = layout.views(new)
                _unmap(mem)
                mem, done = new, 0
            elif head[:1] == b"s":  # the arena of jobs shared layer by layer
                path, args = pickle.loads(payload)
                shape = Arena(*args)
                new = _map(path, shape.size)
                arena["views"] = arena["plan"] = None
                _unmap(arena["mem"])
                arena["views"], arena["mem"] = shape.views(new), new
            elif head[:1] == b"c":  # compile kernels into the disk cache (team.compile_aside)
                dtype, codes, gemm, passes = pickle.loads(payload)
                compile_passes(dtype, codes, gemm, passes)
            elif head[:1] == b"n":
                net = None  # the old replica goes before the new one is built
                net = pickle.loads(payload)
            os.write(answers, b"k")
        except Exception as e:  # noqa: BLE001 - told to the caller, which falls back
            text = f"{type(e).__name__}: {e}".encode()
            os.write(answers, b"e" + struct.pack("<q", len(text)) + text)


def _map(path: str, size: int) -> mmap.mmap:
    """The caller's shared-memory file at ``path``, mapped here (it unlinks it after)."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), size)


def _job_posted(views, done: int, orders: int) -> bool:
    """True when a job newer than ``done`` is posted: polled for a while, then slept
    for on the orders pipe (the caller writes a byte when it finds the worker asleep);
    False when a message is waiting instead."""
    header = views["header"]
    end, rounds = time.perf_counter() + _SPIN_SECONDS, 0
    while True:
        for _ in range(256):
            if header[JOB] > done:
                return True
        rounds += 1
        if rounds > 2:  # past about 100 us: yield the core (the caller may share it)
            os.sched_yield()
        if time.perf_counter() > end:
            break
    header[SLEEP] = 1
    fence()
    try:
        while header[JOB] <= done:
            if select.select([orders], [], [], 0.05)[0]:
                return False  # a message (a wake-up byte is read and skipped)
        return True
    finally:
        header[SLEEP] = 0


def _bind(net, layout: _Layout, views) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make the replica's weights and biases views of the shared memory, where the
    caller writes the parameters before every job: no copy at the start of a job.
    Returns (array, shared view) of the parameters left to copy (a learnable
    activation's, which its activation object holds too)."""
    offsets, flat, copies = layout.offsets, views["params"], []
    for i, (name, arr) in enumerate(list(net.params.items())):
        view = flat[offsets[i]:offsets[i + 1]].reshape(arr.shape)
        lname, pname = name.rsplit(".", 1)
        layer = net.layers[net.layer_names.index(lname)]
        if pname in ("weight", "bias"):
            layer.params[pname] = net.params._arrays[name] = view
        else:
            copies.append((arr, view))
    return copies


def _work(net, layout: _Layout, views, state: dict, job: int) -> int:
    """Run this worker's parts of the posted job, or its share of a part shared layer
    by layer (``split.py``); 0 if done, 1 if it failed."""
    header = views["header"]
    try:
        if state["bound"][0] is not net or state["bound"][1] is not views:
            state["bound"], state["plan"] = (None, None), None  # (the plan holds the old)
            state["copies"] = _bind(net, layout, views)
            state["bound"] = (net, views)
        for arr, view in state["copies"]:
            arr[...] = view
        if header[MODE] == SHARED:
            me, members, parent = int(header[MEMBER]), int(header[MEMBERS]), os.getppid()

            def watch() -> None:
                if os.getppid() != parent:  # the caller has gone
                    raise Aborted("the caller ended")

            plan = state["plan"]
            if plan is None or plan.net is not net or plan.arrays is not state["views"] \
                    or (plan.me, plan.members) != (me, members):
                plan = state["plan"] = None
                plan = state["plan"] = Plan(net, state["views"], me, members)
            plan.run(barrier(state["views"]["header"], me, members, job, watch))
            return 0
        for j in range(int(header[NPARTS])):
            m = int(views["counts"][j])
            x = views["x"][j, :m].reshape(m, *net.input_shape)
            loss, grads = net._part(x, views["t"][j, :m], float(views["floats"][j, 0]))
            views["floats"][j, 1] = loss
            g, offsets = views["g"][j], layout.offsets
            for i, arr in enumerate(grads.values()):
                g[offsets[i]:offsets[i + 1]] = arr.ravel()
        return 0
    except Exception:  # noqa: BLE001 - the caller raises and falls back to threads
        if header[MODE] == SHARED and state["views"] is not None:
            state["views"]["header"][0] = job  # the others give the job up at their next barrier
        return 1
