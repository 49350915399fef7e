"""Regenerate the "Beyond the paper" results (README, docs/beyond.md).

    python scripts/beyond_paper.py --data /path/to/mnist --seeds 0,1 --out runs/beyond

Runs (serially, skipping runs whose summary.json already exists; each run's folder is
named from every option that tells runs apart, data, spec and dtype included, so results
on the sample are never reused for full MNIST):
- the learned-activation comparison (convprop.experiments.beyond.learned_runs, 600 iterations);
- the modern baselines (convprop.experiments.beyond.modern_runs: 600 iterations and 1 epoch);
- the four gradient-flow runs of the diagnostics figure (300 iterations, every 10).
Writes OUT/beyond.md (both tables) and docs/figures/diagnostics.png.  The same runs
with the CLI: `convprop train --activation prelu:map:0.25 --iterations 600 --data DIR`,
`convprop train --loss cross-entropy --lr 0.5 ...`, then `convprop plot diagnostics`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from convprop.data.mnist import load_data
from convprop.experiments import beyond
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="sample, mnist or an MNIST directory")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--modern-seeds", default="0", help="seeds of the baselines (default 0)")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--diag-iterations", type=int, default=300)
    p.add_argument("--out", default="runs/beyond")
    p.add_argument("--figure", default="docs/figures/diagnostics.png")
    p.add_argument("--skip", default="", help="comma list of parts to skip: learned,modern,diag")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    modern_seeds = [int(s) for s in args.modern_seeds.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out)
    data = load_data(args.data)
    print(f"data: {data.description}", file=sys.stderr)

    def run_all(configs):
        dirs = []
        for cfg in configs:
            d = out / beyond.run_name(cfg)
            if not (d / "summary.json").exists():
                t0 = time.perf_counter()
                s = run_training(cfg, d, dataset=data).summary
                error = "n/a" if s["test_error"] is None else f"{100 * s['test_error']:.2f}%"
                print(f"{d.name}: {s['status']}, rL {s['final_rL']}, test error {error} "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            dirs.append(d)
        return dirs

    report = []
    if "learned" not in skip:
        dirs = run_all(beyond.learned_runs(seeds, args.iterations, data=args.data))
        report += [f"## Learned activation parameters ({args.iterations} iterations, "
                   f"seeds {args.seeds})", "", beyond.render_learned(dirs)]
    if "modern" not in skip:
        dirs = run_all(beyond.modern_runs(modern_seeds, args.iterations, data=args.data))
        report += [f"## Modern baselines (seeds {args.modern_seeds})", "",
                   beyond.render_modern(dirs)]
    if "diag" not in skip:
        dirs, labels = [], []
        for folder, label, act, bias, scale in beyond.DIAGNOSTIC_RUNS:
            d = out / "diagnostics" / folder
            if not (d / "summary.json").exists():
                cfg = TrainConfig(activation=act, iterations=args.diag_iterations,
                                  diagnostics=10, data=args.data)
                beyond.diagnostic_run(cfg, d, data, conv_bias=bias, input_scale=scale)
            s = json.loads((d / "summary.json").read_text())
            dirs.append(d)
            labels.append(f"{label}\nrL {s['final_rL']:.3f}, test error "
                          f"{100 * s['test_error']:.1f}%")
        beyond.plot_diagnostics(dirs, args.figure, labels=labels,
                                metrics=["delta", "grad", "saturated", "dead"])
        report += [f"Diagnostics figure: {args.figure}", ""]
    text = "\n".join(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "beyond.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
