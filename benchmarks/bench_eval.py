"""Evaluation speed: the test error on 10,000 MNIST images, convprop against PyTorch eager.

convprop runs ``convprop.training.trainer.error_rate`` (what ``convprop evaluate`` and the end of
``convprop train`` call: uint8 images converted chunk by chunk, forward, arg-max);
PyTorch converts the same chunks and runs its twin network under ``torch.inference_mode``.
Both use the same chunk size.  Prints a table, the peak memory of one convprop
evaluation, and finally ``speedup_vs_torch float32=<x> float64=<y>``.

    python benchmarks/bench_eval.py --quick
    python benchmarks/bench_eval.py --sizes     # 3 specs x dtypes x 1/2 threads
"""

from __future__ import annotations

import time
import tracemalloc

from _common import (
    DTYPES,
    SIZES_SPECS,
    SPEC,
    TORCH_DTYPES,
    Network,
    alternate,
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

from convprop.training.trainer import error_rate

N_IMAGES = 10_000


def ten_thousand(ds):
    """The 10,000 test images (tiled from what there is when the data set is smaller)."""
    x, y = ds.test_x, ds.test_y
    if len(x) < N_IMAGES:
        x, y = np.concatenate([ds.test_x, ds.train_x]), np.concatenate([ds.test_y, ds.train_y])
        reps = -(-N_IMAGES // len(x))
        x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
    return x[:N_IMAGES], y[:N_IMAGES]


def runners(dtype: str, images, labels, chunk: int, spec: str = SPEC):
    net = Network.from_spec(spec, activation="sigmoid", seed=0, dtype=dtype)
    model = torch_twin(net).eval()
    tdt = TORCH_DTYPES[dtype]
    out = {}

    def run_convprop() -> float:
        t0 = time.perf_counter()
        out["c"] = error_rate(net, images, labels, chunk)
        return time.perf_counter() - t0

    def run_torch() -> float:
        t0 = time.perf_counter()
        wrong = 0
        with torch.inference_mode():
            for i in range(0, len(images), chunk):
                xb = torch.from_numpy(images[i:i + chunk]).to(tdt).div_(255).unsqueeze(1)
                pred = model(xb).argmax(dim=1).numpy()
                wrong += int((pred != labels[i:i + chunk]).sum())
        out["t"] = wrong / len(images)
        return time.perf_counter() - t0

    return net, out, run_convprop, run_torch


def sizes(x, y, chunk: int, rounds: int, specs=SIZES_SPECS, dtypes=DTYPES,
          thread_counts=(1, 2)) -> None:
    """Microseconds per evaluated image, convprop / torch, for each spec, dtype and
    thread count (the same on both sides), then both libraries' defaults."""
    rows = []

    def row(spec, dtype, threads, label=None):
        if isinstance(threads, tuple):
            use_threads(threads[0])
            torch.set_num_threads(threads[1])
        else:
            use_threads(threads)
        _, out, run_c, run_t = runners(dtype, x, y, chunk, spec)
        alternate(run_c, run_t, 1)
        tc, tt = alternate(run_c, run_t, rounds)
        c, t = float(np.median(tc)), float(np.median(tt))
        rows.append([spec, dtype, label or str(threads), f"{1e6 * c / len(x):.1f}",
                     f"{1e6 * t / len(x):.1f}", f"{median_ratio(tt, tc):.2f}x"])
        print(" | ".join(rows[-1]), flush=True)

    for spec in specs:
        for dtype in dtypes:
            for threads in thread_counts:
                row(spec, dtype, threads)
    both = default_threads()
    for dtype in dtypes:
        row(SPEC, dtype, both, f"defaults ({both[0]} / {both[1]})")
    print(f"\nEvaluation of {len(x)} images in chunks of {chunk}, microseconds per image "
          f"(median of alternating rounds):")
    print(table(["spec", "dtype", "threads", "convprop us/img", "torch us/img",
                 "speed-up (median)"], rows))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chunk", type=int, default=1000, help="images per forward pass")
    p.add_argument("--sizes", action="store_true",
                   help="issue 13's table for evaluation: 3 specs x float32/float64 x 1/2 "
                        "threads, and the out-of-the-box row")
    p.add_argument("--specs", default=",".join(SIZES_SPECS), help="specs for --sizes")
    args = p.parse_args()
    if args.sizes:
        ds = data(args.data)
        x, y = ten_thousand(ds)
        if args.quick:
            x, y = x[:2000], y[:2000]
        print(f"machine: {machine()}\ndata: {ds.name}")
        sizes(x, y, args.chunk, args.rounds or (3 if args.quick else 7),
              args.specs.split(","))
        return
    rounds = args.rounds or (5 if args.quick else 11)
    ds = data(args.data)
    x, y = ten_thousand(ds)
    print(f"machine: {machine()}")
    print(f"network {SPEC}, sigmoid; {len(x)} images of {ds.name} in chunks of "
          f"{args.chunk}; {rounds} alternating rounds\n")
    rows, ratios = [], {}
    for dtype in DTYPES:
        net, out, run_c, run_t = runners(dtype, x, y, args.chunk)
        alternate(run_c, run_t, 1)  # warm-up (numba compile or cache load)
        assert abs(out["c"] - out["t"]) <= 2 / len(x), (out, "the two disagree")
        tc, tt = alternate(run_c, run_t, rounds)
        c, t = float(np.median(tc)), float(np.median(tt))
        ratios[dtype] = median_ratio(tt, tc)
        gflops = flops_per_image(net, backward=False) * len(x) / c / 1e9
        rows.append([dtype, f"{c:.3f}", f"{t:.3f}", f"{ratios[dtype]:.2f}x", f"{gflops:.1f}",
                     f"{len(x) / c:,.0f}"])
    print(table(["dtype", "convprop s", "torch s", "speed-up (median)", "convprop GFLOP/s",
                 "convprop img/s"], rows))

    net, _, run_c, _ = runners("float64", x, y, args.chunk)
    run_c()
    tracemalloc.start()
    run_c()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"\nMemory: peak traced memory of one float64 evaluation: {peak:.1f} MB "
          f"(the images themselves: {x.nbytes / 2**20:.1f} MB as uint8)")
    print(f"\nspeedup_vs_torch float32={ratios['float32']:.2f} float64={ratios['float64']:.2f}")


if __name__ == "__main__":
    main()
