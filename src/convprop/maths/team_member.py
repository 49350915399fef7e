"""The caller's handle on one worker process of the team (``team.py``): its control
pipes, its shared memory, the replica of the network it holds, and its jobs."""

from __future__ import annotations

import mmap
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convprop.maths import kernels_gemm
from convprop.maths.team_shm import DONE, JOB, SLEEP, _Layout, _read, _unmap, fence


def shared_memory(size: int, share: Callable[[str], None]) -> mmap.mmap:
    """A new shared-memory file of ``size`` bytes, mapped here; ``share(path)`` has the
    workers map it too, then the file is unlinked (every side holds it mapped: nothing
    is left behind)."""
    fd, path = tempfile.mkstemp(prefix="convprop-", dir="/dev/shm"
                                if os.path.isdir("/dev/shm") else None)
    mem = None
    try:
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):  # a full /dev/shm: OSError now, not
            os.posix_fallocate(fd, 0, size)  # SIGBUS at the first write
        mem = mmap.mmap(fd, size)
        share(path)
    except BaseException:
        _unmap(mem)
        raise
    finally:
        os.close(fd)
        os.unlink(path)
    return mem


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

    def prepare(self, net, key: tuple, layout_args: tuple) -> bool:
        """Shared memory big enough for this job, and the replica of the network whose
        :func:`structure` is ``key``; True if either had to be made."""
        made = False
        self.wait(self.posted)  # a job left behind by an interrupted call
        if self.layout is None or self.layout.args() != layout_args:
            layout, made = _Layout(*layout_args), True
            mem = shared_memory(layout.size, lambda path: self.request(
                b"m", pickle.dumps((path, layout_args))))
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
            self.replica, made = key, True
        return made

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

    def post(self, job: int) -> bool:
        """Post ``job``; True if the worker was asleep (woken by a byte on its pipe)."""
        header = self.views["header"]
        fence()
        header[JOB] = job
        fence()
        asleep = bool(header[SLEEP])
        if asleep:
            self.send(b"w")
        self.posted = job
        return asleep

    def wait(self, job: int) -> None:
        """Until the worker has finished ``job`` (polling: it takes about as long as the
        caller's own parts); _TeamError if the worker died."""
        if not self.views:
            return
        header, spins = self.views["header"], 0
        while header[DONE] < job:
            spins += 1
            if spins > 512:  # past about 80 us: yield the core (the worker may share it)
                os.sched_yield()
                if spins & 255 == 0 and self.proc.poll() is not None:
                    raise _TeamError("a worker process ended")
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
