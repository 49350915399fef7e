"""The worker-process team that shares a batch's parts (maths/team.py): the same bits as
one thread, and a fallback to threads, with the same bits, whenever it cannot help."""

import glob
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from convprop import Network
from convprop.maths import compiling, split, team
from convprop.maths.activations import Sigmoid
from convprop.maths.network import get_num_threads, set_num_threads
from convprop.maths.parallel import batch_parts
from convprop.maths.team_shm import MODE, PARTS, SHARED
from team_helpers import FailsInWorkers

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the team runs on POSIX only")


@pytest.fixture(autouse=True)
def team_always(monkeypatch):
    """Every batch the team can take goes to it (no batch run alone for the Pacer's
    timing): these tests check what the team computes.  test_pacer checks the Pacer."""
    monkeypatch.setattr(team.Pacer, "team", lambda self, key: True)


@pytest.fixture
def threads():
    """Run a test at a given thread count, the team (and its flags) reset after.  The
    team is started and waited for (a worker takes batches only once it has started:
    the batches before run on threads, with the same bits, which would hide it)."""
    before = get_num_threads()

    def use(n):
        set_num_threads(n)
        team.start(n)
        started = team._TEAM["team"]
        deadline = time.monotonic() + 120
        while started is not None and not all(w.settled() for w in started.workers):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.01)

    yield use
    set_num_threads(before)
    team._TEAM["off"] = False
    team._TEAM["unsupported"].clear()


def batch(n, seed=0, shape=(28, 28)):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, *shape)), rng.integers(0, 10, n)


def assert_same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


def last_mode():
    """How the last job went to the worker: whole parts, or one part SHARED."""
    return team._TEAM["team"].workers[0].views["header"][MODE]


def one_thread(net, x, y):
    before = get_num_threads()
    set_num_threads(1)
    try:
        return net.loss_and_grads(x, y)
    finally:
        set_num_threads(before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec,activation,n,members", [
    ("6c5-2s-12c5-2s", "sigmoid", 50, 2), ("4c5-2m-6c3-2s-20f", "tanh-linear:0.2", 256, 3),
    ("6c5-2s-12c5-2s", "prelu:map", 77, 2), ("20c5-2s-50c5-2s", "relu", 40, 2),
    ("6c3-2s-12c5-100f", "tanh-linear:0.2", 64, 3), ("6c5-2s-12c5-2s", "relu", 128, 2)])
def test_the_team_gives_one_threads_bits(threads, spec, activation, n, members, dtype):
    """Two or three members (one or two worker processes) against one thread: the same
    loss and gradients, bit for bit, over a few SGD steps (parameters travel with every
    job), with the team really used (no fallback warning): whole parts to each member,
    or a batch of one part shared layer by layer (``split.py``: 50 and 64 images of
    networks it can share)."""
    net = Network.from_spec(spec, activation=activation, dtype=dtype, seed=3)
    ref = Network.from_spec(spec, activation=activation, dtype=dtype, seed=3)
    for step in range(3):
        x, y = batch(n, seed=step)
        want = one_thread(ref, x, y)
        threads(members)
        jobs = team._TEAM["team"].jobs
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = net.loss_and_grads(x, y)
        assert_same(got, want)
        assert team._TEAM["team"].n == members and team._TEAM["team"].jobs == jobs + 1
        one_part = len(batch_parts(n, net.part_limit())) == 2
        assert last_mode() == (SHARED if one_part else PARTS)
        assert one_part == (n <= 64 and split.eligible(net))
        for k, g in want[1].items():
            ref.params[k] -= 0.5 * g
            net.params[k] -= 0.5 * g


def test_the_team_keeps_up_with_networks_and_splits_in_turn(threads):
    """One team serving networks of other shapes and batches of other splits in turn
    (its plan and the gradients' views in shared memory are made again whenever either
    changes, the memory itself when the split outgrows it), and two networks of one
    structure whose parts are shared layer by layer (each has its own weights, which the
    shared plan must not mix up): one thread's bits every time, every batch on the
    team."""
    threads(2)
    nets = [Network.from_spec("6c5-2s-12c5-2s", seed=1),
            Network.from_spec("4c5-2m-6c3-2s-20f", activation="tanh", seed=2),
            Network.from_spec("6c5-2s-12c5-2s", seed=3)]  # net 0's structure, its own weights
    for which, n in [(0, 50), (1, 50), (0, 100), (0, 50), (1, 130), (1, 64), (0, 50),
                     (2, 50), (0, 50), (2, 49), (0, 49)]:
        x, y = batch(n, seed=n)
        jobs = team._TEAM["team"].jobs
        got = nets[which].loss_and_grads(x, y)
        assert team._TEAM["team"].jobs == jobs + 1
        assert_same(got, one_thread(nets[which], x, y))


def test_a_changed_setting_reaches_the_workers(threads):
    """An activation's setting changed in place (tanh-linear's k) is part of the
    network's structure: the worker gets a new replica, the bits still match."""
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", activation="tanh-linear:0.1", seed=1)
    x, y = batch(64)
    first = net.loss_and_grads(x, y)
    for layer in net.layers:
        if getattr(layer, "activation", None) is not None and hasattr(layer.activation, "k"):
            layer.activation.k = 0.4
    second = net.loss_and_grads(x, y)
    assert second[0] != first[0]
    assert_same(second, one_thread(net, x, y))


def test_the_structure_key_sees_every_setting_but_no_parameter_value():
    """The key that decides whether a worker needs a new replica: hashable (the set of
    networks the workers cannot rebuild holds it), changed by any activation setting,
    a non-plain one included (by its repr), unchanged by parameter values."""
    net = Network.from_spec("6c5-2s-12c5-2s", activation="tanh-linear:0.1", seed=1)
    first = team.structure(net)
    assert hash(first) == hash(team.structure(net))
    net.params["conv1.bias"] += 1.0
    assert team.structure(net) == first
    act = net.layers[0].activation
    act.k = 0.2
    assert team.structure(net) != first
    act.window = (1, 2)
    with_tuple = team.structure(net)
    act.window = (1, 3)
    assert team.structure(net) != with_tuple
    hash(team.structure(net))


class LocalSigmoid(Sigmoid):
    """Defined in a test module, which the worker processes cannot import."""


def test_a_network_the_workers_cannot_rebuild_runs_on_threads(threads):
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", activation=LocalSigmoid(), seed=2)
    x, y = batch(50)
    with pytest.warns(RuntimeWarning, match="run on threads"):
        got = net.loss_and_grads(x, y)
    assert_same(got, one_thread(net, x, y))
    with warnings.catch_warnings():  # said once per network structure
        warnings.simplefilter("error")
        assert_same(net.loss_and_grads(x, y), got)
    # other networks still use the team
    plain = Network.from_spec("6c5-2s-12c5-2s", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(plain.loss_and_grads(x, y), one_thread(plain, x, y))


def test_a_dead_worker_means_threads_from_then_on(threads):
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", seed=5)
    x, y = batch(50)
    net.loss_and_grads(x, y)
    worker = team._TEAM["team"].workers[0]
    worker.proc.kill()
    worker.proc.wait()
    with pytest.warns(RuntimeWarning, match="threads from now on"):
        got = net.loss_and_grads(x, y)
    assert_same(got, one_thread(net, x, y))
    assert team._TEAM["team"] is None and team._TEAM["off"]


@pytest.mark.parametrize("n", [50, 100])
def test_a_worker_failing_on_its_job_means_threads_from_then_on(threads, monkeypatch, n):
    """A worker whose share of a shared part (50 images) or whose own part (100) raises:
    the caller gives up at its next barrier or when the job is done, says so once, and
    runs the batch itself, with one thread's bits; no worker is left behind."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    team.close()  # a new team, whose workers can import team_helpers
    threads(2)
    procs = [w.proc for w in team._TEAM["team"].workers]
    net = Network.from_spec("6c5-2s-12c5-2s", seed=5)
    net.loss = FailsInWorkers()
    x, y = batch(n)
    with pytest.warns(RuntimeWarning, match="threads from now on"):
        got = net.loss_and_grads(x, y)
    assert_same(got, one_thread(net, x, y))
    assert team._TEAM["team"] is None and team._TEAM["off"]
    assert all(p.wait(timeout=10) is not None for p in procs)


def test_workers_stop_with_the_team_and_leave_no_files(threads):
    threads(2)
    before = set(glob.glob("/dev/shm/convprop-*"))
    net = Network.from_spec("6c5-2s-12c5-2s", seed=6)
    net.loss_and_grads(*batch(50))
    procs = [w.proc for w in team._TEAM["team"].workers]
    assert all(p.poll() is None for p in procs)
    assert set(glob.glob("/dev/shm/convprop-*")) == before  # unlinked once mapped
    threads(3)  # another count: a new team at the next call
    net.loss_and_grads(*batch(50))
    assert all(p.wait(timeout=10) is not None for p in procs)
    assert len(team._TEAM["team"].workers) == 2


def test_concurrent_callers_share_nothing_they_should_not(threads):
    """Two threads train at once (as the explorer's request threads may): one has the
    team, the other runs its parts itself; both get one thread's bits."""
    threads(2)
    nets = [Network.from_spec("6c5-2s-12c5-2s", seed=s) for s in (7, 8)]
    data = [batch(96, seed=s) for s in (7, 8)]
    want = [one_thread(net, *d) for net, d in zip(nets, data)]
    got: list = [[], []]

    def train(i):
        for _ in range(5):
            got[i].append(nets[i].loss_and_grads(*data[i]))

    workers = [threading.Thread(target=train, args=(i,)) for i in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in (0, 1):
        for result in got[i]:
            assert_same(result, want[i])


@pytest.mark.parametrize("n", [50, 100])
def test_a_call_interrupted_in_the_caller_leaves_the_team_usable(threads, monkeypatch, n):
    """The caller's own work fails (an interrupt, say) after the worker got its job:
    its own part (100 images: two parts), or its share of a part shared layer by layer
    (50: one part), interrupted between two barriers; the worker then gives the job up
    at its next barrier.  The next call waits for that job and gives one thread's
    bits."""
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", seed=9)
    x, y = batch(n)
    net.loss_and_grads(x, y)  # the worker has its replica
    assert last_mode() == (SHARED if n == 50 else PARTS)

    def interrupted(*args):
        raise KeyboardInterrupt

    def interrupted_at_second_barrier(plan, sync):
        calls = []

        def fail_second():
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            sync()

        return real_run(plan, fail_second)

    real_run = split.Plan.run
    with monkeypatch.context() as patch:
        if n == 50:
            patch.setattr(split.Plan, "run", interrupted_at_second_barrier)
        else:
            patch.setattr(Network, "_part", interrupted)  # the caller's side only
        with pytest.raises(KeyboardInterrupt):
            net.loss_and_grads(x, y)
    x2, y2 = batch(n, seed=1)
    jobs = team._TEAM["team"].jobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(net.loss_and_grads(x2, y2), one_thread(net, x2, y2))
    assert team._TEAM["team"].jobs == jobs + 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap trimming")
def test_float64_training_keeps_its_heap():
    """In a process without PyTorch (a worker, or `convprop train`), float64 training
    must not hand its temporaries' pages back to the system after every call and fault
    them in again (it did: 325 page faults a 25-image part, twice the part's time)."""
    code = """if True:
        import resource, numpy as np
        from convprop import Network, set_num_threads
        set_num_threads(1)
        net = Network.from_spec("6c5-2s-12c5-2s", dtype="float64", seed=0)
        rng = np.random.default_rng(0)
        x, y = rng.uniform(0, 1, (25, 28, 28)), rng.integers(0, 10, 25)
        for _ in range(5):
            net.loss_and_grads(x, y)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            net.loss_and_grads(x, y)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 10


def test_start_brings_the_workers_up_before_the_first_batch(threads):
    """The trainer starts the team while it compiles; one member starts nothing."""
    team.close()
    team.start(1)
    assert team._TEAM["team"] is None
    team.start(2)
    started = team._TEAM["team"]
    assert started is not None and started.n == 2
    assert all(w.proc.poll() is None for w in started.workers)
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", seed=10)
    x, y = batch(50)
    assert_same(net.loss_and_grads(x, y), one_thread(net, x, y))
    assert team._TEAM["team"] is started  # the same team took the batch


def test_a_cold_start_compiles_half_the_kernels_on_a_worker(tmp_path):
    """With an empty numba cache and a team started (as `convprop train` does), the
    worker compiles the forward kernel into the disk cache while the caller compiles
    the backward one, then the caller loads the forward one from the cache; one member
    compiles both itself.  Either way training gives the same bits."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    seen = {}
    for members in (2, 1):
        code = f"""if True:
            import hashlib, numpy as np
            from convprop import Network, set_num_threads
            from convprop.maths import kernels, team
            set_num_threads({members})
            team.start({members})
            net = Network.from_spec("6c5-2s-12c5-2s", dtype="float32", seed=0)
            assert net.compile_kernels() is True
            for k in (kernels._conv_forward, kernels._conv_backward):
                print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))
            rng = np.random.default_rng(0)
            x, y = rng.uniform(0, 1, (50, 28, 28)), rng.integers(0, 10, 50)
            loss, grads = net.loss_and_grads(x, y)
            print(hashlib.sha256(b"".join(g.tobytes() for g in grads.values())).hexdigest(), loss)
        """
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / str(members)),
               "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        forward, backward, seen[members] = done.stdout.strip().splitlines()[-3:]
        assert backward == "0 1"  # (cache hits, misses): compiled by the caller, cold
        assert forward == ("1 0" if members == 2 else "0 1")  # 2: loaded, the worker's
    assert seen[1] == seen[2]


def test_a_compile_interrupted_in_the_caller_leaves_the_team_usable(threads, monkeypatch):
    """The caller's compile fails (an interrupt) while the worker compiles its half: the
    team is freed at once; batches run on threads until the worker's answer has come
    (and been read), then on the team, with one thread's bits throughout."""
    threads(2)
    net = Network.from_spec("6c5-2s-12c5-2s", activation="tanh-linear:0.3", seed=11)
    real = compiling.compile_passes

    def interrupted(dtype, codes, gemm, passes=("forward", "backward")):
        if passes == ("backward",):
            raise KeyboardInterrupt
        return real(dtype, codes, gemm, passes)

    monkeypatch.setattr(compiling, "compile_passes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compiling.compile_kernels(net.dtype, net.kernel_codes(), False)
    started = team._TEAM["team"]
    worker = started.workers[0]
    assert worker.pending == 1 and not started.busy.locked()
    monkeypatch.setattr(compiling, "compile_passes", real)
    x, y = batch(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(net.loss_and_grads(x, y), one_thread(net, x, y))
        threads(2)  # until the worker's answer is in
        assert worker.pending == 0
        jobs = started.jobs
        assert_same(net.loss_and_grads(x, y), one_thread(net, x, y))
    assert started.jobs == jobs + 1 and team._TEAM["team"] is started


def test_warm_kernels_load_on_the_workers_alongside_the_caller(monkeypatch):
    """Kernels already in the disk cache: the workers are asked to load theirs before the
    caller loads its own, so the two loads overlap (asked after, the workers' 0.2-0.3 s
    load sent the first 376 batches of an epoch home); cold, the worker compiles half
    and loads the rest after the caller, as before."""
    calls = []
    monkeypatch.setattr(team, "load_aside", lambda *a: calls.append("workers load"))
    monkeypatch.setattr(team, "compile_aside", lambda *a: None)
    monkeypatch.setattr(compiling, "compile_passes",
                        lambda dtype, codes, gemm, passes=("forward", "backward"):
                        calls.append(f"caller {'+'.join(passes)}"))
    compiling.compile_kernels(np.float32, [0], False, cold=False)
    assert calls == ["workers load", "caller forward+backward"]
    calls.clear()
    compiling.compile_kernels(np.float32, [0], False, cold=True)
    assert calls == ["caller forward+backward", "workers load"]


def test_convprop_train_starts_the_workers_before_it_loads_the_data(monkeypatch):
    """`convprop train --threads 2` starts the team first: its workers import convprop
    while the caller reads the data."""
    from convprop.cli import main
    from convprop.training import jobs

    calls = []

    class Stop(Exception):
        pass

    def run_training(*a, **k):
        calls.append("train")
        raise Stop

    monkeypatch.setattr(team, "start", lambda n: calls.append(f"start {n}"))
    monkeypatch.setattr(jobs, "run_training", run_training)
    with pytest.raises(Stop):
        main(["train", "--threads", "2", "--iterations", "1", "--no-progress"])
    assert calls == ["start 2", "train"]


def test_batches_run_on_threads_until_the_worker_has_started(threads):
    """A worker that has not yet started (imported convprop, loaded its kernels) takes
    no batch: those run on threads at once, with the same bits, instead of waiting for
    it; the team takes the batches after it has."""
    threads(1)
    team.close()
    set_num_threads(2)
    team.start(2)
    started = team._TEAM["team"]
    assert not started.workers[0].ready  # just spawned: still importing
    net = Network.from_spec("6c5-2s-12c5-2s", seed=12)
    x, y = batch(50)
    assert_same(net.loss_and_grads(x, y), one_thread(net, x, y))
    assert started.jobs == 0
    threads(2)  # waits until it has started
    assert_same(net.loss_and_grads(x, y), one_thread(net, x, y))
    assert started.jobs == 1 and team._TEAM["team"] is started
