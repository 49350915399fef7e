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
import mmap
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convprop.maths import kernels_gemm
from convprop.maths.team_shm import DONE, JOB, NPARTS, SLEEP, STATUS, _Layout, _read, _unmap, fence

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


class _Worker:
    """One worker process, its control pipes and its shared memory (caller's side)."""

    def __init__(self):
        env = {**os.environ, "CONVPROP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               kernels_gemm.ENV_PASSES: ",".join(kernels_gemm.gemm_passes())}  # same bits:
        cores = {core for api, core in kernels_gemm.numpy_blas() if api == "openblas" and core}
        if len(cores) == 1:  # the caller's OpenBLAS kernels, whatever the environment says now
            env["OPENBLAS_CORETYPE"] = cores.pop()
        src = str(Path(__file__).resolve().parents[2])  # where this convprop is imported from
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        to_worker, from_worker = os.pipe(), os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from convprop.maths.team_worker import serve; "
                 f"serve({to_worker[0]}, {from_worker[1]})"],
                pass_fds=(to_worker[0], from_worker[1]), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            os.close(to_worker[1])
            os.close(from_worker[0])
            raise
        finally:
            os.close(to_worker[0])
            os.close(from_worker[1])
        self.orders, self.answers = to_worker[1], from_worker[0]
        self.layout: _Layout | None = None
        self.views: dict[str, np.ndarray] = {}
        self.mem: mmap.mmap | None = None
        self.replica: tuple | None = None
        self._grad_views: tuple = (None, [])
        self.posted = 0  # the last job posted to it
        self.pending = 0  # messages asked and not yet answered
        self.ready = False  # its "started" byte read (it has imported convprop)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        data = memoryview(kind + struct.pack("<q", len(payload)) + payload)
        while data:  # a signal may cut a large write to a pipe short
            data = data[os.write(self.orders, data):]

    def request(self, kind: bytes, payload: bytes) -> None:
        """Send a setup message and wait for the worker's answer (ok, or its error)."""
        self.ask(kind, payload)
        self.answer()

    def ask(self, kind: bytes, payload: bytes) -> None:
        """Send a message that the worker answers; :meth:`answer` reads the answer."""
        while self.pending:  # one left unread by an interrupted caller
            self.answer()
        self.send(kind, payload)
        self.pending += 1

    def answer(self) -> None:
        """The worker's answer to the oldest message asked: None if ok, else
        _Unsupported with the worker's error, or _TeamError if the worker ended."""
        self.started()
        answer = _read(self.answers, 1)
        if not answer:
            raise self._ended()
        self.pending -= 1
        if answer != b"k":
            size = struct.unpack("<q", _read(self.answers, 8))[0]
            raise _Unsupported(_read(self.answers, size).decode())

    def started(self) -> None:
        """Wait for the worker's first byte, sent once it has imported convprop."""
        if not self.ready:
            first = _read(self.answers, 1)
            if first != b"r":
                raise self._ended() if not first else _TeamError(
                    f"a worker process said {first!r}")
            self.ready = True

    def _ended(self) -> _TeamError:
        """The error for a worker whose answers pipe closed: it has ended."""
        return _TeamError(f"a worker process ended (exit status {self.proc.wait()})")

    def settled(self) -> bool:
        """Whether the worker has started and answered every message asked, reading
        what has arrived without waiting for more; _TeamError if it ended."""
        while not self.ready or self.pending:
            if not select.select([self.answers], [], [], 0)[0]:
                return False
            if not self.ready:
                self.started()
                continue
            try:
                self.answer()
            except _Unsupported:
                pass  # kernels it failed to load: it compiles them at its first job
        return True

    def prepare(self, net, key: tuple, layout_args: tuple) -> None:
        """Shared memory big enough for this job, and the replica of the network whose
        :func:`structure` is ``key``."""
        self.wait(self.posted)  # a job left behind by an interrupted call
        if self.layout is None or self.layout.args() != layout_args:
            layout = _Layout(*layout_args)
            fd, path = tempfile.mkstemp(prefix="convprop-", dir="/dev/shm"
                                        if os.path.isdir("/dev/shm") else None)
            mem = None
            try:
                os.ftruncate(fd, layout.size)
                if hasattr(os, "posix_fallocate"):  # a full /dev/shm: OSError now, not
                    os.posix_fallocate(fd, 0, layout.size)  # SIGBUS at the first write
                mem = mmap.mmap(fd, layout.size)
                self.request(b"m", pickle.dumps((path, layout_args)))
            except BaseException:
                _unmap(mem)
                raise
            finally:
                os.close(fd)
                os.unlink(path)  # both sides hold it mapped; nothing is left behind
            self.views, self.posted, self._grad_views = {}, 0, (None, [])
            _unmap(self.mem)
            self.mem, self.layout = mem, layout
            self.views = layout.views(mem)
        if key != self.replica:
            self.replica = None
            try:
                blob = pickle.dumps(net)
            except Exception as e:  # noqa: BLE001 - any pickling failure: not for the team
                raise _Unsupported(f"{type(e).__name__}: {e}") from e
            self.request(b"n", blob)
            self.replica = key

    def grad_views(self, params: tuple) -> list[dict[str, np.ndarray]]:
        """Per part slot, {name: the gradient's view in the shared memory}, shaped as
        the parameters, for params = (names, shapes); made once per memory and
        structure."""
        names, shapes = params
        if self._grad_views[0] != params:  # reset when the memory is remapped
            offsets, g = self.layout.offsets, self.views["g"]
            self._grad_views = (params, [
                {k: g[j, offsets[i]:offsets[i + 1]].reshape(shape)
                 for i, (k, shape) in enumerate(zip(names, shapes))}
                for j in range(g.shape[0])])
        return self._grad_views[1]

    def post(self, job: int) -> None:
        header = self.views["header"]
        fence()
        header[JOB] = job
        fence()
        if header[SLEEP]:
            self.send(b"w")
        self.posted = job

    def wait(self, job: int) -> None:
        """Until the worker has finished ``job`` (polling: it takes about as long as the
        caller's own parts); _TeamError if the worker died."""
        if not self.views:
            return
        header, spins = self.views["header"], 0
        while header[DONE] < job:
            spins += 1
            if spins % 4096 == 0:
                if self.proc.poll() is not None:
                    raise _TeamError("a worker process ended")
                if spins > 1 << 16:
                    time.sleep(0)
        fence()

    def close(self, wait: bool = True) -> None:
        """Tell the worker to quit and (if ``wait``) wait for it to end; one still
        starting or loading its kernels is killed instead (a short run would otherwise
        wait for it at exit)."""
        try:
            idle = self.settled()
        except (_TeamError, OSError):
            idle = False
        for step in (lambda: self.send(b"q"), lambda: os.close(self.orders),
                     lambda: os.close(self.answers)):
            try:
                step()
            except OSError:
                pass
        if not idle:
            self.proc.kill()
        if wait or not idle:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.views, self._grad_views = {}, (None, [])
        _unmap(self.mem)


class _Unsupported(Exception):
    """The worker could not take this network (its classes do not import there, ...)."""


class _TeamError(Exception):
    """A worker process failed or ended, or one could not be started."""


class Team:
    """The caller and ``n - 1`` worker processes (see the module's docstring)."""

    def __init__(self, n: int):
        self.n, self.pid = n, os.getpid()
        self.busy = threading.Lock()
        self.workers: list[_Worker] = []
        self.jobs = 0
        self.plan: tuple | None = None
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
        for _, worker in busy:  # every setup first: a failure leaves no job half posted
            worker.prepare(net, key, layout_args)
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
            v["header"][NPARTS] = len(mine[w])
            worker.post(self.jobs)
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

    def close(self, wait: bool = True) -> None:
        with self.busy:  # after a batch another thread may be running on the team
            for worker in self.workers:
                worker.close(wait)


def run_parts(net, part: Callable[[int], Any], x: np.ndarray, t: np.ndarray,
              bounds: list[int], shares: list[float], threads: int) -> list | None:
    """[part(p) for each part p] (its loss · share and gradients · share: the caller's
    own parts by ``part``, part 0 among them, the others by the workers from x, t and
    ``shares``, their gradients views of the workers' memory, valid until the next
    call) on the team of ``threads`` members; None when the team cannot take this job
    (one thread or part, not POSIX, a network the worker cannot rebuild, another
    caller using the team, a worker still starting, a failed worker): the caller then
    runs the parts itself, with the same bits."""
    if threads < 2 or len(bounds) < 3 or os.name != "posix" or _TEAM.get("off"):
        return None
    key = structure(net)
    if key in _TEAM["unsupported"]:
        return None
    try:
        return _team(threads).run(net, key, part, x, t, bounds, shares)
    except _Unsupported as e:
        _TEAM["unsupported"].add(key)
        warnings.warn(f"convprop: this network's batch parts run on threads (worker "
                      f"processes cannot rebuild it: {str(e)[:200]})", RuntimeWarning,
                      stacklevel=3)
        return None
    except (_TeamError, OSError) as e:  # OSError: pipes, a process, shared memory
        close()
        _TEAM["off"] = True  # threads from now on: the same bits, a little slower
        warnings.warn(f"convprop: batch parts run on threads from now on (worker "
                      f"processes: {e})", RuntimeWarning, stacklevel=3)
        return None


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
