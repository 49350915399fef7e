"""Training speed: convprop against the same network in PyTorch eager, float32 and float64.

One training iteration is the public API in a user's loop:
``loss, grads = net.loss_and_grads(x, y)`` then ``net.params[k] -= lr * grads[k]``;
PyTorch runs forward, ``0.5 * ((o - y)**2).sum() / N``, backward and ``SGD.step``.
Prints a table (s/epoch = 1200 iterations of 50 images, speed-up = median over the
alternating rounds of torch time / convprop time), a batch-size scaling table, a memory
check, and finally ``speedup_vs_torch float32=<x> float64=<y>``.

    python benchmarks/bench_train.py --quick      # about half a minute (with compilation)
    python benchmarks/bench_train.py --sizes      # issue 13's table (--quick: shorter)
    python benchmarks/bench_train.py --scaling    # 1 vs 2 threads, alternating
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

from _common import (
    DTYPES,
    SIZES_SPECS,
    SPEC,
    Network,
    alternate,
    as_float,
    data,
    default_threads,
    flops_per_image,
    machine,
    median_ratio,
    np,
    parser,
    table,
    torch,
    torch_twin,
    use_threads,
)

PEAK_GFLOPS = {"float32": 319.0, "float64": 162.0}  # issue 3: GEMM peak, this machine type
LR = 1.0
# Untimed iterations at the start of every timed run, for both libraries: a run follows
# the other library's, whose idle threads (or convprop's idle worker process) take a few
# batches to get going again (measured: the first 4 batches after a torch run cost 2-4
# ms each instead of 0.5), a transient that training, one batch after another, never
# sees and that the benchmark's alternation every ~50 ms would otherwise multiply.
WARM = 5


def runners(dtype: str, images, labels, batch: int, iterations: int,
            max_images: int = 60_000, spec: str = SPEC):
    """(convprop run, torch run): each trains ``WARM`` + ``iterations`` steps on
    consecutive batches of a fixed shuffled copy of (at most ``max_images`` of) the data
    and returns the elapsed seconds of the last ``iterations``."""
    net = Network.from_spec(spec, activation="sigmoid", seed=0, dtype=dtype,
                            input_shape=images.shape[1:])
    model = torch_twin(net)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(images))[:max(max_images, batch)]
    xs = as_float(images[perm], dtype)
    ys = labels[perm].astype(np.int64)
    onehot = np.eye(10, dtype=dtype)[ys]
    per_epoch = len(xs) // batch
    state = {"c": 0, "t": 0}

    def run_convprop() -> float:
        for it in range(-WARM, iterations):
            if it == 0:
                t0 = time.perf_counter()
            i = state["c"] % per_epoch * batch
            state["c"] += 1
            loss, grads = net.loss_and_grads(xs[i:i + batch], ys[i:i + batch])
            for k, g in grads.items():
                net.params[k] -= LR * g
        return time.perf_counter() - t0

    def run_torch() -> float:
        for it in range(-WARM, iterations):
            if it == 0:
                t0 = time.perf_counter()
            i = state["t"] % per_epoch * batch
            state["t"] += 1
            xb = torch.from_numpy(xs[i:i + batch])
            if xb.ndim == 3:  # grey (N, H, W): one channel
                xb = xb.unsqueeze(1)
            yb = torch.from_numpy(onehot[i:i + batch])
            opt.zero_grad()
            loss = 0.5 * ((model(xb) - yb) ** 2).sum() / batch
            loss.backward()
            opt.step()
            loss.item()
        return time.perf_counter() - t0

    return net, run_convprop, run_torch


def speed(ds, dtype, batch, iterations, rounds, max_images, spec=SPEC):
    net, run_c, run_t = runners(dtype, ds.train_x, ds.train_y, batch, iterations, max_images,
                                spec)
    alternate(run_c, run_t, 2)  # warm-up: numba compiles (or loads its cache), torch allocs
    tc, tt = alternate(run_c, run_t, rounds)
    return net, statistics.median(tc) / iterations, statistics.median(tt) / iterations, \
        median_ratio(tt, tc)


def memory_check(ds, dtype: str, iterations: int, max_images: int, epochs: int = 3
                 ) -> list[float]:
    """(memory still held, peak) in MB for each of ``epochs`` blocks of training, traced
    from the start of the first block (numpy's arrays included)."""
    net, run_c, _ = runners(dtype, ds.train_x, ds.train_y, 50, iterations, max_images)
    run_c()
    tracemalloc.start()
    after = []
    for _ in range(epochs):
        tracemalloc.reset_peak()
        run_c()
        held, peak = tracemalloc.get_traced_memory()
        after.append((held / 2**20, peak / 2**20))
    tracemalloc.stop()
    return after


def colour_data(n: int = 5_000, seed: int = 0):
    """Random uint8 3x32x32 images (CIFAR-10's shape) and labels 0..9: time does not
    depend on what the pixels show."""
    rng = np.random.default_rng(seed)

    class Colour:
        name = "random 3x32x32 (CIFAR-10-sized)"
        train_x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        train_y = rng.integers(0, 10, n)

    return Colour


def sizes(ds, quick: bool, rounds: int | None, specs=SIZES_SPECS, batches=(50, 256),
          dtypes=DTYPES, thread_counts=(1, 2), ootb: bool = True, colour: bool = True
          ) -> None:
    """Issue 13's table: microseconds per training image, convprop / torch, for each
    spec, batch 50 and 256, float32 and float64, 1 and 2 threads (the same count on both
    sides), then the out-of-the-box row (both libraries' default thread counts) and the
    paper's spec on colour 3x32x32 input (batch 50)."""
    rounds = rounds or (5 if quick else 9)
    images = 800 if quick else 3200  # per timed run and implementation
    rows = []

    def row(spec, batch, dtype, threads, label=None, on=ds):
        if isinstance(threads, tuple):  # out of the box: each library's own default
            use_threads(threads[0])
            torch.set_num_threads(threads[1])
        else:
            use_threads(threads)
        its = max(2, images // batch)
        _, c, t, ratio = speed(on, dtype, batch, its, rounds, 5_000, spec)
        rows.append([spec, str(batch), dtype, label or str(threads), f"{1e6 * c / batch:.1f}",
                     f"{1e6 * t / batch:.1f}", f"{ratio:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)

    for spec in specs:
        for batch in batches:
            for dtype in dtypes:
                for threads in thread_counts:
                    row(spec, batch, dtype, threads)
    if ootb:
        both = default_threads()
        for dtype in dtypes:
            row(SPEC, 50, dtype, both, f"defaults ({both[0]} / {both[1]})")
    if colour:
        rgb = colour_data()
        for dtype in dtypes:
            for threads in thread_counts:
                row(SPEC, 50, dtype, threads, f"{threads}, 3x32x32", on=rgb)
    print("\nTraining, microseconds per image (median of alternating rounds):")
    print(table(["spec", "batch", "dtype", "threads", "convprop us/img", "torch us/img",
                 "speed-up (median)"], rows))


class _Copies:
    """Single-thread copies of the convprop loop in child processes (this script with
    ``--copy-worker``), each started and warmed up once, then timed on demand: alone, or
    all at once.  How much faster k copies get through images than one copy is the
    machine's own ceiling for k threads (shared caches, memory, a host's other work on
    a virtual CPU), whatever the code does."""

    def __init__(self, k: int, spec: str, dtype: str, batch: int, its: int, source):
        args = [sys.executable, __file__, "--copy-worker",
                f"{spec},{dtype},{batch},{its}"] + (["--data", source] if source else [])
        env = {**os.environ, "CONVPROP_BENCH_THREADS": "1"}
        self.procs = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env) for _ in range(k)]
        for proc in self.procs:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("bench_train.py: a --copy-worker child failed to start")

    def run(self, k: int) -> list[float]:
        """Seconds of one timed run of each of the first k copies, started together."""
        for proc in self.procs[:k]:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [float(proc.stdout.readline()) for proc in self.procs[:k]]

    def gain(self, k: int, alone: list[float], gains: list[float]) -> float:
        """One copy alone, then k at once: appends the first's seconds to ``alone`` and
        the images per second of the k together over that of one to ``gains``."""
        one = self.run(1)[0]
        gains.append(one * sum(1 / t for t in self.run(k)))
        alone.append(one)
        return one

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.wait()


def copy_worker(ds, spec: str, dtype: str, batch: int, its: int) -> None:
    """The child of :class:`_Copies`: says ``ready`` after a warm-up run, then on each
    ``go`` line runs once and prints its seconds, until its input closes."""
    use_threads(1)
    _, run_c, _ = runners(dtype, ds.train_x, ds.train_y, batch, its, 5_000, spec)
    run_c()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            print(run_c(), flush=True)


def scaling(ds, quick: bool, rounds: int | None, spec: str = SPEC, batch: int = 50,
            dtypes=DTYPES, threads: int = 2, source=None) -> None:
    """What a second thread buys: each library at 1 thread and at ``threads`` threads,
    the four runs rotating in one process, so a busy spell of the machine hits each
    alike; the median over rounds of t(1) / t(n).  In the same rotation, the machine's
    ceiling: ``threads`` single-thread copies of the convprop loop in separate processes,
    run alone and all at once; the ceiling is the median over rounds of the images per
    second of all copies together over that of one alone (n for perfect cores)."""
    rounds = rounds or (5 if quick else 11)
    its = max(2, (800 if quick else 3200) // batch)
    rows = []
    for dtype in dtypes:
        _, run_c, run_t = runners(dtype, ds.train_x, ds.train_y, batch, its, 5_000, spec)
        copies = _Copies(threads, spec, dtype, batch, its, source)
        alone: list[float] = []
        ceiling: list[float] = []

        runs = [(lib, n, fn) for lib, fn in (("convprop", run_c), ("torch", run_t))
                for n in (1, threads)]
        runs.append(("copies", 0, functools.partial(copies.gain, threads, alone, ceiling)))
        times: dict[tuple[str, int], list[float]] = {(lib, n): [] for lib, n, _ in runs}
        try:
            for r in range(rounds + 1):  # round 0 warms up (compiles, allocates)
                for lib, n, fn in runs[r % len(runs):] + runs[:r % len(runs)]:
                    use_threads(max(n, 1))
                    elapsed = fn()
                    if r:
                        times[(lib, n)].append(elapsed)
        finally:
            copies.close()
        for lib in ("convprop", "torch"):
            one, many = times[(lib, 1)], times[(lib, threads)]
            gain = statistics.median(a / b for a, b in zip(one, many))
            per_image = [1e6 * statistics.median(t) / its / batch for t in (one, many)]
            rows.append([spec, str(batch), dtype, lib, f"{per_image[0]:.1f}",
                         f"{per_image[1]:.1f}", f"{gain:.2f}x"])
            print(" | ".join(rows[-1]), flush=True)
        ceil = statistics.median(ceiling[1:])  # ceiling[0]: the warm-up round
        solo = 1e6 * statistics.median(alone[1:]) / its / batch
        rows.append([spec, str(batch), dtype, f"ceiling: {threads} one-thread processes",
                     f"{solo:.1f}", f"{solo / ceil:.1f}", f"{ceil:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)
    print(f"\nThreads: microseconds per training image at 1 and {threads} threads, and the "
          f"median over {rounds} rotating rounds of t(1) / t({threads}).  The ceiling row: "
          f"{threads} copies of the one-thread convprop loop in separate processes, alone "
          f"and at once (its '{threads} threads' column: the time per image of all copies "
          f"together); its speed-up is what {threads} cores give the best-split code:")
    print(table(["spec", "batch", "dtype", "library", "1 thread us/img",
                 f"{threads} threads us/img", "speed-up from threads"], rows))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", action="store_true",
                   help="issue 13's table: 3 specs x batch 50/256 x float32/float64 x 1/2 "
                        "threads, and the out-of-the-box row")
    p.add_argument("--specs", default=",".join(SIZES_SPECS), help="specs for --sizes")
    p.add_argument("--batches", default="50,256", help="batch sizes for --sizes")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="dtypes for --sizes")
    p.add_argument("--threads", default="1,2", help="thread counts for --sizes")
    p.add_argument("--no-defaults-row", action="store_true",
                   help="--sizes without the out-of-the-box row")
    p.add_argument("--no-colour-rows", action="store_true",
                   help="--sizes without the 3x32x32 (colour, CIFAR-10-sized) rows")
    p.add_argument("--scaling", action="store_true",
                   help="what a second thread buys on the paper's network (batch 50): 1 and "
                        "2 threads rotating in one process, convprop and torch, and the "
                        "machine's ceiling (two one-thread processes at once)")
    p.add_argument("--copy-worker", metavar="SPEC,DTYPE,BATCH,ITS", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.copy_worker:  # a child of --scaling's ceiling
        spec, dtype, batch, its = args.copy_worker.split(",")
        copy_worker(data(args.data), spec, dtype, int(batch), int(its))
        return
    if args.scaling:
        ds = data(args.data)
        print(f"machine: {machine()}\ndata: {ds.name}")
        scaling(ds, args.quick, args.rounds, dtypes=args.dtypes.split(","), source=args.data)
        return
    if args.sizes:
        ds = data(args.data)
        print(f"machine: {machine()}\ndata: {ds.name}")
        sizes(ds, args.quick, args.rounds, args.specs.split(","),
              [int(b) for b in args.batches.split(",")], args.dtypes.split(","),
              [int(t) for t in args.threads.split(",")], not args.no_defaults_row,
              not args.no_colour_rows)
        return
    iterations = 20 if args.quick else 100
    rounds = args.rounds or (5 if args.quick else 11)
    max_images = 5_000 if args.quick else 60_000
    ds = data(args.data)
    print(f"machine: {machine()}")
    print(f"network {SPEC}, sigmoid, MSE, SGD lr {LR}; data: {ds.name}; {rounds} alternating "
          f"rounds of {iterations} iterations per implementation\n")

    rows, ratios = [], {}
    for dtype in DTYPES:
        net, c, t, ratio = speed(ds, dtype, 50, iterations, rounds, max_images)
        gflops = flops_per_image(net) * 50 / c / 1e9
        ratios[dtype] = ratio
        rows.append([dtype, f"{c * 1200:.2f}", f"{t * 1200:.2f}", f"{ratio:.2f}x",
                     f"{gflops:.1f}", f"{100 * gflops / PEAK_GFLOPS[dtype]:.0f}%"])
    print("Training, batch 50 (one epoch = 1200 iterations):")
    print(table(["dtype", "convprop s/epoch", "torch s/epoch", "speed-up (median)",
                 "convprop GFLOP/s", "% of GEMM peak"], rows))

    rows = []
    for batch in (50, 128, 256):
        for dtype in DTYPES:
            its = max(4, iterations * 50 // batch)
            _, c, t, ratio = speed(ds, dtype, batch, its, 3, max_images)
            rows.append([str(batch), dtype, f"{batch / c:,.0f}", f"{batch / t:,.0f}",
                         f"{ratio:.2f}x"])
    print("\nThroughput scaling (training images per second):")
    print(table(["batch", "dtype", "convprop img/s", "torch img/s", "speed-up"], rows))

    mem = memory_check(ds, "float32", iterations, max_images)
    print(f"\nMemory (float32, traced): held after each of {len(mem)} blocks of {iterations} "
          f"iterations " + ", ".join(f"{h:.2f}" for h, _ in mem) + " MB (growth "
          f"{mem[-1][0] - mem[0][0]:+.2f} MB); peak within a block "
          f"{max(p for _, p in mem):.2f} MB; process peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (data and "
          f"torch included)")
    print(f"\nspeedup_vs_torch float32={ratios['float32']:.2f} float64={ratios['float64']:.2f}")


if __name__ == "__main__":
    main()
