"""Shared pieces of the benchmarks: thread settings, data, the PyTorch twin of a convprop
network, and the alternating timer.

Fairness rules: both implementations get the same images (already converted to the
dtype), the same initial weights (copied from the convprop network), the same batch,
dtype and thread count; their runs alternate in one process (ABAB..., the order
swapped every round) and the reported ratio is the median of the per-round ratios, so
a slow minute on a shared machine hits both alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THREADS = int(os.environ.get("CONVPROP_BENCH_THREADS", "1"))
# Before numpy/torch load: every BLAS/OpenMP pool gets the same thread count.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS", "CONVPROP_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from convprop import Network  # noqa: E402
from convprop.data.mnist import images_to_float, load_data, mnist_in_cache  # noqa: E402

torch.set_num_threads(THREADS)
SPEC = "6c5-2s-12c5-2s"
SIZES_SPECS = ("6c5-2s-12c5-2s", "20c5-2s-50c5-2s", "32c5-2s-64c5-2s")  # issue 13's table
DTYPES = ("float32", "float64")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    p.add_argument("--data", default=None,
                   help="'sample', 'mnist' or a directory with the four MNIST files "
                        "(default: the MNIST cache if present, else the bundled sample)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    return p


def use_threads(n: int) -> None:
    """The same thread count everywhere: convprop's parts, numpy's BLAS, torch."""
    from threadpoolctl import threadpool_limits

    from convprop import set_num_threads

    set_num_threads(n)
    torch.set_num_threads(n)
    threadpool_limits(n, user_api="blas")


def default_threads() -> tuple[int, int]:
    """(convprop's, torch's) thread count out of the box: every available core each."""
    from convprop.maths.parallel import available_cores

    return available_cores(), os.cpu_count() or 1


def machine() -> str:
    from convprop.maths import kernels_gemm
    from convprop.maths.network import get_num_threads

    blas = ", ".join(f"{api} {core}" for api, core in kernels_gemm.numpy_blas()) or "unknown"
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; threads: convprop {get_num_threads()} "
            f"(inference: slices on threads; training: batch parts on the caller and "
            f"worker processes), BLAS {THREADS}, torch {torch.get_num_threads()}; "
            f"torch {torch.__version__}, numpy {np.__version__}; NumPy's BLAS: {blas}"
            + (f" (OPENBLAS_CORETYPE={pinned} in the environment)" if pinned else "")
            + f"; wide layers' GEMM passes: {'+'.join(kernels_gemm.gemm_passes())}")


SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def data(source: str | None):
    """The data set to time on: ``source``, else full MNIST from the cache or from the
    developers' ``../shared/datasets/mnist``, else the bundled sample."""
    if source is None and SHARED_MNIST.is_dir() and not mnist_in_cache():
        source = str(SHARED_MNIST)
    return load_data(source)


def torch_twin(net: Network) -> torch.nn.Sequential:
    """The same network in PyTorch (Conv2d, sigmoid, AvgPool2d, ..., Linear, sigmoid),
    with convprop's initial weights copied in (same initialisation scheme)."""
    layers: list[torch.nn.Module] = []
    for layer in net.layers:
        if layer.kind == "conv":
            conv = torch.nn.Conv2d(layer.in_maps, layer.out_maps, layer.k)
            layers += [conv, torch.nn.Sigmoid()]
        elif layer.kind == "pool":
            layers.append(torch.nn.AvgPool2d(layer.scale))
        else:
            layers += [torch.nn.Flatten(), torch.nn.Linear(layer.n_in, layer.n_out),
                       torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers).to(TORCH_DTYPES[net.dtype.name])
    params = [p for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
              for p in (m.weight, m.bias)]
    with torch.no_grad():
        for p, (_, v) in zip(params, net.params.items()):
            p.copy_(torch.from_numpy(v.copy()))
    return model


def alternate(a: Callable[[], float], b: Callable[[], float], rounds: int
              ) -> tuple[list[float], list[float]]:
    """Run a() and b() (each returns its own elapsed seconds) ``rounds`` times, the order
    swapped every round; returns both lists of times."""
    ta, tb = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ta.append(a())
            tb.append(b())
        else:
            tb.append(b())
            ta.append(a())
    return ta, tb


def median_ratio(t_torch: list[float], t_convprop: list[float]) -> float:
    return statistics.median(t / c for t, c in zip(t_torch, t_convprop))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def as_float(images: np.ndarray, dtype: str) -> np.ndarray:
    return images_to_float(images, dtype)


def flops_per_image(net: Network, backward: bool = True) -> float:
    """Multiply-adds x 2 of one image: each conv/dense layer's forward product, and in
    training its two backward products (dW, and dx except for the first layer)."""
    total, shape = 0.0, net.input_shape
    for i, layer in enumerate(net.layers):
        if layer.kind == "conv":
            out = layer.output_shape(shape)
            f = 2.0 * layer.in_maps * layer.k ** 2 * out[0] * out[1] * out[2]
        elif layer.kind == "dense":
            out, f = (layer.n_out,), 2.0 * layer.n_in * layer.n_out
        else:
            out, f = layer.output_shape(shape), 0.0
        total += f * ((2 if i > 0 else 1) + 1 if backward else 1)
        shape = out
    return total
