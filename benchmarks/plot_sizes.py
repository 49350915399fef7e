"""Plot how training cost grows with maps and batch, from ``bench_train.py --sizes`` output.

Reads the markdown table(s) that ``--sizes`` prints (saved output files, one or more) and
draws microseconds per training image against the spec's maps, one panel per dtype and
thread count, convprop and PyTorch for batch 50 and 256:

    python benchmarks/bench_train.py --sizes > sizes.txt
    python benchmarks/plot_sizes.py sizes.txt -o docs/figures/performance.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from convprop.fileio import atomic_open  # noqa: E402

COLUMNS = ["spec", "batch", "dtype", "threads", "convprop us/img", "torch us/img"]


def read_rows(paths: list[Path]) -> list[dict[str, str]]:
    """The table rows of the files (the last row wins for a repeated key), without the
    out-of-the-box and colour rows (their thread column is not a plain count)."""
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for path in paths:
        header: list[str] | None = None
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.startswith("|") or set("".join(cells)) <= set("-: "):
                continue
            if cells[0] == "spec":
                header = cells
                continue
            if header is None or len(cells) != len(header):
                continue
            row = dict(zip(header, cells))
            if not row.get("threads", "").isdigit() or not all(c in row for c in COLUMNS):
                continue
            rows[tuple(row[c] for c in COLUMNS[:4])] = row
    return list(rows.values())


def maps(spec: str) -> int:
    """Total feature maps of a spec's conv layers (6c5-2s-12c5-2s: 18)."""
    return sum(int(part.split("c")[0]) for part in spec.split("-") if "c" in part)


def plot(rows: list[dict[str, str]], out: Path) -> None:
    panels = sorted({(r["dtype"], r["threads"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (dtype, threads) in zip(axes[0], panels):
        for batch, style in (("50", "-"), ("256", "--")):
            sel = sorted((r for r in rows if (r["dtype"], r["threads"], r["batch"])
                          == (dtype, threads, batch)), key=lambda r: maps(r["spec"]))
            if not sel:
                continue
            xs = [maps(r["spec"]) for r in sel]
            for col, colour, name in (("convprop us/img", "C0", "convprop"),
                                      ("torch us/img", "C3", "PyTorch eager")):
                ax.plot(xs, [float(r[col]) for r in sel], style, color=colour, marker="o",
                        label=f"{name}, batch {batch}")
            ax.set_xticks(xs, [r["spec"].replace("-2s", "") for r in sel], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{dtype}, {threads} thread{'s' if threads != '1' else ''}")
        ax.set_xlabel("conv layers (maps, kernel)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("microseconds per training image")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Training cost per image as maps and batch grow (bench_train.py --sizes)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, dpi=110, format="png")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="saved output of --sizes")
    p.add_argument("-o", "--output", type=Path, default=Path("performance.png"))
    args = p.parse_args()
    rows = read_rows(args.files)
    if not rows:
        print("plot_sizes: no --sizes table rows in " + ", ".join(map(str, args.files)),
              file=sys.stderr)
        return 1
    plot(rows, args.output)
    print(f"wrote {args.output} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
