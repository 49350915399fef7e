"""Per conv layer: the direct kernels against im2col + GEMM, the measurement behind
``kernels_gemm.use_gemm``'s rule.

Each layer (5x5 kernels, mean-pool 2 fused, sigmoid) runs forward + backward on a part
of 32 images with each path forced, one thread, timed in CPU time (``process_time``,
robust to other jobs taking the wall clock), best of 9.  Prints microseconds per image
and gemm/direct (< 1: the GEMM path is faster).

    python benchmarks/bench_layers.py [--dtypes float32,float64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from convprop.maths import kernels, kernels_gemm  # noqa: E402
from convprop.maths.activations import get_activation  # noqa: E402
from convprop.maths.layers import Conv  # noqa: E402

# (in maps, out maps, input size, input error needed): the three specs' layers and more
LAYERS = [(1, 6, 28, False), (6, 12, 12, True), (1, 20, 28, False), (20, 50, 12, True),
          (1, 32, 28, False), (32, 64, 12, True), (6, 16, 12, True), (12, 24, 12, True),
          (8, 32, 12, True), (16, 32, 12, True)]


def best(fn, rounds: int = 9) -> float:
    out = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        fn()
        fn()
        out = min(out, (time.process_time() - t) / 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--images", type=int, default=32, help="images per part")
    args = p.parse_args()
    n = args.images
    print("| dtype | layer | direct us/img | gemm us/img | gemm/direct | rule picks |")
    print("|---|---|---|---|---|---|")
    for dt in args.dtypes.split(","):
        for ci, co, hw, need_dx in LAYERS:
            res = {}
            for path in (kernels, kernels_gemm):
                layer = Conv(ci, co, 5, get_activation("sigmoid"), np.dtype(dt))
                layer._conv_forward, layer._conv_backward = path.conv_forward, \
                    path.conv_backward
                rng = np.random.default_rng(0)
                layer.params["weight"][...] = rng.uniform(-0.1, 0.1, (co, ci, 5, 5))
                x = rng.random((ci, hw, hw, n)).astype(dt)

                def step(layer=layer, x=x, need_dx=need_dx):
                    out, cache = layer.forward(x, pool=2)
                    layer.backward(out, cache, need_dx=need_dx)

                step()
                res[path] = best(step) / n * 1e6
            d, g = res[kernels], res[kernels_gemm]
            pick = "gemm" if kernels_gemm.use_gemm(ci, co, 5) else "direct"
            print(f"| {dt} | {ci} -> {co}, {hw}x{hw} | {d:.1f} | {g:.1f} | {g / d:.2f} | "
                  f"{pick} |", flush=True)


if __name__ == "__main__":
    main()
