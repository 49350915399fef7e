"""Worker processes that share the parts of a training batch.

``Network.loss_and_grads`` cuts a batch into fixed parts (``parallel.batch_parts``).
With n threads set (``set_num_threads``) it first offers the parts to a team of n - 1
worker processes (:func:`run_parts`): part p goes to member p mod n, member 0 being the
caller itself, and the caller sums every part's loss and gradients in part order.  A
worker runs ``Network._part``, the same code on the same numbers as the caller would,
so the result is bit-identical to one thread's, whichever member ran what.

Why processes: a batch's two parts on two threads run the same layers in lockstep, so
their Python steps between the kernels collide on the interpreter lock at every layer,
each collision costing a sleeping thread's wake-up (30-50 us on a virtual CPU).  Two
threads made the paper's network 1.2-1.4x faster, two processes 1.7x.

How a batch travels: each worker has a shared-memory file (``/dev/shm``, unlinked as
soon as both sides have mapped it) holding a header of counters, the parameters, its
parts' images and one-hot targets, and one slot per part for the loss and gradients.
The caller writes a part's inputs and the parameters, bumps ``JOB``; the worker, which
polls ``JOB`` for a while after each job (then sleeps on its control pipe, woken by a
byte), runs its parts, writes the results and bumps ``DONE``.  A memory fence on both
sides orders the data before the counters.  The worker keeps a replica of the network,
sent (pickled) when the network's structure changes; parameters travel with every job.

The team is used only where it can be: on POSIX, with a network that pickles and whose
classes the worker can import, and a worker that has started.  Otherwise (or if a
worker fails) the caller runs the parts on threads, with the same bits.
The worker's side is ``team_worker.py``."""

from __future__ import annotations

import atexit
import os
import pickle
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from convprop.maths import split
from convprop.maths.team_member import _TeamError, _Unsupported, _Worker, shared_memory
from convprop.maths.team_shm import (
    DONE,
    MEMBER,
    MEMBERS,
    MODE,
    NPARTS,
    PARTS,
    SHARED,
    STATUS,
    _unmap,
)

_TEAM: dict[str, Any] = {"team": None, "unsupported": set()}
_LOCK = threading.Lock()


_PLAIN = (int, float, str, bool, type(None))


def _settings(obj) -> tuple:
    """An object's settings for :func:`structure`: its attributes but arrays and dicts
    (a learnable activation's parameters), other values than plain ones by their repr."""
    return tuple((k, v if isinstance(v, _PLAIN) else repr(v)) for k, v in vars(obj).items()
                 if not isinstance(v, (np.ndarray, dict)))


def structure(net) -> tuple:
    """What the worker's replica must share with the network besides its parameter
    values: class, spec, shapes, dtype, loss, and each layer's activation with its
    settings (a tanh-linear's k, a leaky ReLU's α).  A change sends a new replica.
    A tuple of plain values, built on every batch (6 us; its repr took 15)."""
    acts = tuple([(type(a), _settings(a)) for layer in net.layers
                  if (a := getattr(layer, "activation", None)) is not None])
    return (type(net), net.spec, net.input_shape, net.n_outputs, net.dtype.str,
            type(net.loss), _settings(net.loss), acts,
            tuple((k, v.shape) for k, v in net.params.items()))


class Team:
    """The caller and ``n - 1`` worker processes (see the module's docstring)."""

    def __init__(self, n: int):
        self.n, self.pid = n, os.getpid()
        self.busy = threading.Lock()
        self.workers: list[_Worker] = []
        self.jobs = 0
        self.plan: tuple | None = None
        self.arena: tuple = (None, None, {})  # (split.Arena, its memory, its views)
        # ((key, images), [(parameter name, its gradient's array in the arena or None)],
        #  split.Plan, arena views, the workers' replicas and layouts)
        self.shared: tuple | None = None
        self.pacer = Pacer()
        self.cold = False  # the last job met a setup or a sleeping worker
        try:
            for _ in range(n - 1):
                self.workers.append(_Worker())
        except BaseException:
            self.close()
            raise

    def run(self, net, key: tuple, part: Callable[[int], Any], x: np.ndarray,
            t: np.ndarray, bounds: list[int], shares: list[float]) -> list | None:
        """[part(p) for each part p], parts p % n != 0 computed on the workers; None
        (nothing run) if another caller holds the team."""
        if not self.busy.acquire(blocking=False):
            return None
        try:
            return self._run(net, key, part, x, t, bounds, shares)
        finally:
            self.busy.release()

    def _plan(self, net, key: tuple, bounds: list[int], x: np.ndarray, t: np.ndarray):
        """((parameter names, shapes), each worker's parts, the shared memory's layout
        arguments) for this structure and split: the same from batch to batch, made
        once."""
        plan_key = (key, tuple(bounds), x[0].size, t.shape[1])
        if self.plan is None or self.plan[0] != plan_key:
            n_parts = len(bounds) - 1
            names = list(net.params)
            shapes = tuple(net.params[k].shape for k in names)
            sizes = [net.params[k].size for k in names]
            images = max(b - a for a, b in zip(bounds, bounds[1:]))
            mine = {w: list(range(w, n_parts, self.n)) for w in range(1, self.n)}
            layout_args = (sizes, net.dtype.str, x[0].size, t.shape[1],
                           -(-n_parts // self.n), images)
            self.plan = (plan_key, (names, shapes), mine, layout_args)
        return self.plan[1:]

    def _run(self, net, key, part, x, t, bounds, shares):
        n_parts = len(bounds) - 1
        params, mine, layout_args = self._plan(net, key, bounds, x, t)
        names = params[0]
        busy = [(w, worker) for w, worker in enumerate(self.workers, start=1) if mine[w]]
        if not all(worker.settled() for _, worker in busy):
            return None  # still starting or loading kernels: this batch on threads
        self.cold = False  # set when a setup or a sleeping worker slows this batch
        for _, worker in busy:  # every setup first: a failure leaves no job half posted
            self.cold |= worker.prepare(net, key, layout_args)
        self.jobs += 1
        for w, worker in busy:
            v, offsets = worker.views, worker.layout.offsets
            np.concatenate([net.params[k].ravel() for k in names],  # straight into place
                           out=v["params"][:offsets[-1]])
            for j, p in enumerate(mine[w]):
                a, b = bounds[p], bounds[p + 1]
                v["counts"][j] = b - a
                v["floats"][j, 0] = shares[p]
                v["x"][j, :b - a] = x[a:b].reshape(b - a, -1)
                v["t"][j, :b - a] = t[a:b]
            v["header"][NPARTS], v["header"][MODE] = len(mine[w]), PARTS
            self.cold |= worker.post(self.jobs)
        results: list[Any] = [None] * n_parts
        for p in range(0, n_parts, self.n):
            results[p] = part(p)
        for w, worker in busy:
            worker.wait(self.jobs)
            v = worker.views
            if v["header"][STATUS]:
                raise _TeamError("a worker process failed on its part")
            grads = worker.grad_views(params)
            for j, p in enumerate(mine[w]):  # views: summed before the next job
                results[p] = (float(v["floats"][j, 1]), grads[j])
        return results

    def run_shared(self, net, key: tuple, x: np.ndarray, t: np.ndarray) -> list | None:
        """[(loss, grads)] of the whole batch as one part, shared by every member layer
        by layer (``split.py``); None (nothing run) if another caller holds the team or
        a worker is not ready."""
        if not self.busy.acquire(blocking=False):
            return None
        try:
            if not all(worker.settled() for worker in self.workers):
                return None
            return self._run_shared(net, key, x, t)
        finally:
            self.busy.release()

    def _setup_shared(self, net, key: tuple, n: int, n_out: int) -> tuple:
        """Workers (replica, memory) and the arena ready for a shared part of n images
        of this structure, and the caller's :class:`split.Plan`: made once."""
        names = list(net.params)
        sizes = [net.params[k].size for k in names]
        for worker in self.workers:
            old = worker.layout  # any memory with room for the parameters will do
            fits = old is not None and old.sizes == sizes and old.dtype == net.dtype
            worker.prepare(net, key, old.args() if fits else
                           (sizes, net.dtype.str, int(np.prod(net.input_shape)), n_out, 1, 1))
        arena, mem, views = self.arena
        args = (net.dtype.str, self.n, split.arena_shapes(net, n))
        if arena is None or arena.args() != args:
            self.arena, self.shared = (None, None, {}), None
            _unmap(mem)
            arena = split.Arena(*args)
            mem = shared_memory(arena.size, lambda path: [
                worker.request(b"s", pickle.dumps((path, args))) for worker in self.workers])
            views = arena.views(mem)
            self.arena = (arena, mem, views)
        workers = [(worker.replica, worker.layout) for worker in self.workers]
        arena_grads = {f"{net.layer_names[i]}.{p}": views[f"{a}{j}"]
                       for j, (i, _) in enumerate(split.conv_steps(net))
                       for p, a in (("weight", "dw"), ("bias", "db"))}
        order = [(name, arena_grads.get(name)) for name in names]  # (name, arena array)
        return (key, n), order, split.Plan(net, views, 0, self.n), views, workers

    def _run_shared(self, net, key, x, t):
        n = x.shape[0]
        if self.shared is None or self.shared[2].net is not net or self.shared[0] != (key, n) \
                or any(worker.replica is not replica or worker.layout is not layout  # a job
                       for worker, (replica, layout) in zip(self.workers, self.shared[4])):
            self.shared = None
            self.shared = self._setup_shared(net, key, n, t.shape[1])
            self.cold = True
        else:
            self.cold = False
            for worker in self.workers:
                worker.wait(worker.posted)  # a job left behind by an interrupted call
        _, order, plan, views, _ = self.shared
        self.jobs += 1
        views["images"].reshape(n, -1)[...] = x.reshape(n, -1)  # each member makes CHWN
        views["t"][...] = t
        for w, worker in enumerate(self.workers, start=1):
            v, offsets = worker.views, worker.layout.offsets
            np.concatenate([net.params[k].ravel() for k, _ in order],
                           out=v["params"][:offsets[-1]])
            v["header"][MODE], v["header"][MEMBER], v["header"][MEMBERS] = SHARED, w, self.n
            self.cold |= worker.post(self.jobs)

        def watch() -> None:  # a worker that ended, or finished its job failed (one that
            for worker in self.workers:  # finished well met us at every barrier: not it)
                header = worker.views["header"]
                if (header[DONE] >= self.jobs and header[STATUS]) or worker.proc.poll() is not None:
                    raise _TeamError("a worker process failed on its share of a batch")

        try:
            loss, grads = plan.run(split.barrier(views["header"], 0, self.n, self.jobs, watch))
            for worker in self.workers:
                worker.wait(self.jobs)
                if worker.views["header"][STATUS]:
                    raise _TeamError("a worker process failed on its share of a batch")
        except split.Aborted as e:
            raise _TeamError("a worker process failed on its share of a batch") from e
        except BaseException:
            views["header"][0] = self.jobs  # the workers give the job up at their next barrier
            raise
        return [(loss, {name: grads[name] if shared is None else shared.copy()
                        for name, shared in order})]

    def close(self, wait: bool = True) -> None:
        with self.busy:  # after a batch another thread may be running on the team
            for worker in self.workers:
                worker.close(wait)
            self.arena, self.shared, mem = (None, None, {}), None, self.arena[1]
            _unmap(mem)


class Pacer:
    """Team or alone, by measured time.  The team wins on idle cores; with another
    process busy on one, its members wait for each other at every barrier and a batch
    can take twice as long as the caller alone (the same bits either way).  So the
    last ``WINDOW`` times of each mode are kept, per network and split.  The first
    ``WINDOW`` batches run alone; the team's first batch after a spell alone, and any
    batch that woke a sleeping worker or set one up, is not timed.  When the team's
    window is full and its median more than ``MARGIN`` times the other's (a loaded
    host slows the team in bursts of a few batches, which a median of nine mostly
    ignores; another process busy on a core doubled the team's times for good), the
    next ``WINDOW`` batches run alone to time that mode afresh (the machine may have
    slowed for both); if the team still loses, the next ``HOLD`` batches run alone
    (about 20 ms for the paper's network: a wrong call costs little), then the team is
    timed afresh.  Every ``PROBE``-th batch runs alone, to keep that time current."""

    WINDOW, MARGIN, HOLD, PROBE = 9, 1.5, 32, 256

    def __init__(self):
        self.key: Any = None
        self.times: dict[bool, list[float]] = {True: [], False: []}
        self.batches = self.hold = self.recheck = 0
        self.wake = True

    def team(self, key) -> bool:
        """Whether this batch goes to the team."""
        if key != self.key:
            self.__init__()
            self.key = key
        self.batches += 1
        if self.recheck:
            return False
        if self.hold:
            self.hold -= 1
            return False
        return len(self.times[False]) >= self.WINDOW and self.batches % self.PROBE != 0

    def _slower(self) -> bool:
        team, alone = self.times[True], self.times[False]
        # (statistics.median of nine floats: 0.2 us; np.median took 7 us each, on every
        # team batch: it alone cost the team 4-8% of the paper's batch)
        return statistics.median(team) > self.MARGIN * statistics.median(alone)

    def took(self, team: bool, seconds: float) -> None:
        if team and self.wake:  # a worker waking up: not the team's speed
            self.wake = False
            return
        times = self.times[team]
        times.append(seconds)
        del times[:-self.WINDOW]
        if not team:
            self.wake = True
            if self.recheck:
                self.recheck -= 1
                if not self.recheck:  # alone timed afresh: decide
                    self.hold = self.HOLD if self._slower() else 0
                    self.times[True] = []
        elif len(times) == self.WINDOW and self.times[False] and self._slower():
            self.recheck = self.WINDOW


def run_parts(net, part: Callable[[int], Any], alone: Callable[[], list], x: np.ndarray,
              t: np.ndarray, bounds: list[int], shares: list[float], threads: int) -> list:
    """[part(p) for each part p] (its loss · share and gradients · share: the caller's
    own parts by ``part``, part 0 among them, the others by the workers from x, t and
    ``shares``, their gradients views of the workers' memory, valid until the next
    call) on the team of ``threads`` members; a batch of one part, [(loss, gradients)],
    shared by the members layer by layer (``split.py``).  ``alone()`` (the caller runs
    every part itself, with the same bits) when the team cannot take this job (one
    thread, not POSIX, one part of a network ``split`` cannot share, a network the
    worker cannot rebuild, another caller using the team, a worker still starting, a
    failed worker) or is slower now (:class:`Pacer`)."""
    if threads < 2 or os.name != "posix" or _TEAM.get("off"):
        return alone()
    shared = len(bounds) == 2
    if shared and not split.eligible(net):
        return alone()
    key = structure(net)
    if key in _TEAM["unsupported"]:
        return alone()
    results = pacer = None
    try:
        team = _team(threads)
        pacer = team.pacer
        if pacer.team((id(net), bounds[1], len(bounds))):
            start = time.perf_counter()
            results = team.run_shared(net, key, x, t) if shared else \
                team.run(net, key, part, x, t, bounds, shares)
            if results is not None:
                if not team.cold:  # (a setup or a worker's wake-up is not its speed)
                    pacer.took(True, time.perf_counter() - start)
                return results
    except _Unsupported as e:
        _TEAM["unsupported"].add(key)
        warnings.warn(f"convprop: this network's batch parts run on threads (worker "
                      f"processes cannot rebuild it: {str(e)[:200]})", RuntimeWarning,
                      stacklevel=3)
    except (_TeamError, OSError) as e:  # OSError: pipes, a process, shared memory
        close()
        _TEAM["off"] = True  # threads from now on: the same bits, a little slower
        warnings.warn(f"convprop: batch parts run on threads from now on (worker "
                      f"processes: {e})", RuntimeWarning, stacklevel=3)
        pacer = None
    start = time.perf_counter()
    results = alone()
    if pacer is not None:
        pacer.took(False, time.perf_counter() - start)
    return results


def _team(threads: int) -> Team:
    """The process's team of ``threads`` members, started if need be (one per process,
    whichever thread asks first)."""
    with _LOCK:
        team = _TEAM["team"]
        if team is not None and (team.n != threads or team.pid != os.getpid()):
            close()
            team = None
        if team is None:
            team = _TEAM["team"] = Team(threads)
        return team


def start(threads: int) -> None:
    """Start the workers now, if training on ``threads`` members will use them: they
    import convprop (about half a second) while the caller compiles or loads its
    kernels, instead of before the first batch.  A failure is left to the first batch,
    which falls back to threads and says why."""
    if threads < 2 or os.name != "posix" or _TEAM.get("off"):
        return
    try:
        _team(threads)
    except OSError:
        pass


def compile_aside(dtype, codes, gemm: bool, passes=("forward",),
                  worker: int = 0) -> Callable[..., None] | None:
    """Have a worker compile (or load) the kernels of ``passes`` for ``dtype``, ``codes``
    (and the GEMM path's if ``gemm``) into numba's disk cache while the caller compiles
    the others: a cold start in about half the time on two cores.  Returns a function
    that waits for the worker (the caller then loads those kernels from the cache;
    ``wait(abandon=True)`` frees the team at once: batches run on threads until the
    worker has answered), or None when no started team can take it."""
    team = _TEAM["team"]
    if team is None or team.pid != os.getpid() or not team.workers or _TEAM.get("off"):
        return None
    if not team.busy.acquire(blocking=False):
        return None
    member = team.workers[worker]
    try:
        member.ask(b"c", pickle.dumps((np.dtype(dtype).str, sorted(set(codes)), gemm,
                                       tuple(passes))))
    except OSError:
        team.busy.release()
        return None

    def wait(abandon: bool = False) -> None:
        try:
            if not abandon:
                member.answer()
        except (_Unsupported, _TeamError, OSError):
            pass  # the caller compiles them; a dead worker shows at the first batch
        finally:
            team.busy.release()

    return wait


def load_aside(dtype, codes, gemm: bool) -> None:
    """Have every worker load (or compile) all its kernels now, without waiting: the
    first batches run on threads until it has (instead of waiting for a worker that
    loads them at its first part)."""
    team = _TEAM["team"]
    for w in range(len(team.workers) if team is not None else 0):
        wait = compile_aside(dtype, codes, gemm, ("forward", "backward"), worker=w)
        if wait is not None:
            wait(abandon=True)


def close(at_exit: bool = False) -> None:
    """Stop the team's workers: at a new thread count, after a failed worker, and at
    the interpreter's exit (without waiting for their own exits then: each follows
    when its pipe closes)."""
    team, _TEAM["team"] = _TEAM["team"], None
    if team is not None and team.pid == os.getpid():
        team.close(wait=not at_exit)


atexit.register(close, True)
