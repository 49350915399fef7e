"""The benchmark helpers that are not timings: plot_sizes reads what --sizes prints."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

SIZES_OUTPUT = """machine: x86_64, 2 logical CPUs
6c5-2s-12c5-2s | 50 | float32 | 1 | 78.6 | 241.1 | 3.11x

Training, microseconds per image (median of alternating rounds):
| spec | batch | dtype | threads | convprop us/img | torch us/img | speed-up (median) |
|---|---|---|---|---|---|---|
| 6c5-2s-12c5-2s | 50 | float32 | 1 | 78.6 | 241.1 | 3.11x |
| 6c5-2s-12c5-2s | 256 | float32 | 1 | 70.4 | 196.6 | 2.79x |
| 20c5-2s-50c5-2s | 50 | float32 | 1 | 700.0 | 1000.0 | 1.43x |
| 6c5-2s-12c5-2s | 50 | float32 | defaults (2 / 2) | 70.6 | 235.2 | 3.44x |
| 6c5-2s-12c5-2s | 50 | float32 | 1, 3x32x32 | 157.7 | 291.8 | 1.84x |
"""


def run(*args):
    return subprocess.run([sys.executable, str(BENCH / "plot_sizes.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_plot_sizes_draws_the_table_rows(tmp_path):
    out_file = tmp_path / "sizes.txt"
    out_file.write_text(SIZES_OUTPUT)
    png = tmp_path / "perf.png"
    done = run(out_file, "-o", png)
    assert done.returncode == 0, done.stderr
    # the out-of-the-box and colour rows (not a plain thread count) are left out
    assert "(3 rows)" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_sizes_without_a_table_says_so_in_one_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("no table here\n")
    done = run(empty, "-o", tmp_path / "x.png")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no --sizes table rows" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_scaling_reports_the_machines_ceiling_from_two_processes():
    """--scaling times two one-thread copies of the training loop in child processes,
    alone and at once, and prints their gain as the ceiling row."""
    done = subprocess.run([sys.executable, str(BENCH / "bench_train.py"), "--scaling",
                           "--quick", "--rounds", "1", "--dtypes", "float32", "--data",
                           "sample"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines()
            if line.startswith("| 6c5-2s-12c5-2s") and "ceiling: 2 one-thread" in line]
    assert len(rows) == 1, done.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    alone, together, gain = float(cells[4]), float(cells[5]), float(cells[6].rstrip("x"))
    # Timings on a shared host say nothing fixed (CI once saw a lone copy slowed to
    # 28.7 us while two at once took 9.6: a "gain" of 2.98 on two cores), so the test
    # checks the row's arithmetic, not the machine: the '2 threads' column is the time
    # per image of both copies together, solo / gain, printed to 0.1 us.
    assert alone > 0 and together > 0 and gain > 0
    rounding = 0.05 * (alone / together + 1) / together + 0.005  # the printed digits
    assert abs(alone / together - gain) <= rounding + 1e-9
