"""`convprop sweep`, `reproduce`, `report` and `plot activations` from the command line."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convprop.cli import main
from convprop.experiments.stats import read_summary
from convprop.experiments.sweep import summary_columns

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = ["--data", "sample", "--spec", "4c5-2s", "--batch-size", "20"]


def cli(*args):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "CONVPROP_DATA_DIR": "/nonexistent",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "convprop", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def table(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_summary(path)]


def test_sweep_writes_runs_summary_figure_and_report(tmp_path, capsys):
    out = tmp_path / "k"
    code = main(["sweep", *SMALL, "--activation", "tanh-linear:0,0.13", "--lr", "0.5",
                 "--iterations", "20", "--seeds", "0-1", "--workers", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = read_summary(out / "summary.csv")
    assert len(rows) == 4 and set(summary_columns()) <= set(rows[0])
    assert {r["activation"] for r in rows} == {"tanh-linear:0", "tanh-linear:0.13"}
    assert all(r["iterations"] == "20" and r["batch_size"] == "20" for r in rows)
    assert (out / "sweep.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| tanh-linear:0.13 | 2/2 |" in report and "![" in report
    assert "4 runs (0 stalled or diverged)" in captured.out
    # `convprop report` redraws from the stored files, without training
    (out / "sweep.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "sweep.png").is_file() and (out / "report.md").read_text() == report


@pytest.mark.parametrize("args,needle", [
    (["--lr", "0.1,abc"], "--lr: 'abc' is not a number"),
    (["--seeds", "5-2"], "--seeds: '5-2'"),
    (["--activation", "tanh-linear:0,,0.1"], "--activation: empty value"),
    (["--activation", "tanh-linear:"], "needs a parameter"),
    (["--lr", "0.1,0.2,0.3,0.4", "--seeds", "0-299"], "1200 runs, more than the limit"),
    (["--executor", "dask"], "invalid choice"),
])
def test_sweep_user_mistakes_are_one_line_errors(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) if "invalid" in needle else contextlib.nullcontext():
        code = main(["sweep", *SMALL, "--out", str(tmp_path / "x"), *args])
        assert code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x" / "summary.csv").exists()


def test_interrupted_sweep_resumes_without_losing_runs(tmp_path):
    args = [*SMALL, "--activation", "sigmoid,tanh-linear:0.13", "--lr", "0.5,1",
            "--iterations", "40", "--seeds", "0-1", "--executor", "serial"]
    whole = cli("sweep", *args, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    part = tmp_path / "part"
    p = cli("sweep", *args, "--out", str(part))
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once two runs are in summary.csv
        if (part / "summary.csv").is_file() and len(read_summary(part / "summary.csv")) >= 2:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # complete = the runs whose summary.json is written (what a resume skips); the kill
    # may land after a run's summary.json and before summary.csv is rewritten with it,
    # so the table lists every complete run or all but that last one
    listed = {r["run"] for r in read_summary(part / "summary.csv")}
    complete = {d.name for d in (part / "runs").iterdir() if (d / "summary.json").is_file()}
    done = len(complete)
    assert listed <= complete and done - len(listed) <= 1
    assert 2 <= done < 8, "the sweep finished before it could be interrupted"
    again = cli("sweep", *args, "--out", str(part))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"8 runs: {done} already complete" in err
    assert table(part / "summary.csv") == table(tmp_path / "whole" / "summary.csv")


def test_reproduce_on_the_sample_writes_every_figure_and_verdict(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["reproduce", "--data", "sample", "--spec", "4c5-2s", "--iterations", "20",
                 "--seeds", "2", "--workers", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "WARNING" in captured.err and "NOT the paper's setting" in captured.err
    report = (out / "report.md").read_text()
    assert "not the paper's setting" in report
    for key, claim in [("fig6", "k = 0.13"), ("fig7", "learning rate 2"), ("fig9", "α = 0.05")]:
        assert (out / f"{key}.png").stat().st_size > 1000
        assert f"({key}.png)" in report and claim in report
    assert report.count("| **verdict** |") == 3
    assert all(w in ("holds", "does not hold", "inconclusive") for w in
               [line.split("**")[3].rstrip(":") for line in report.splitlines()
                if line.startswith("| **verdict**")])
    rows = read_summary(out / "summary.csv")
    # shared runs trained once; 4 learned activations beyond the paper
    assert len(rows) == 2 * (21 + 4) == len({r["run"] for r in rows})
    meta = json.loads((out / "reproduce.json").read_text())
    assert meta["options"]["seeds"] == 2
    assert meta["sections"] == ["activations", "fig6", "fig7", "fig9", "learned",
                                "diagnostics"]
    for stem in ("fig4_tanh", "fig5_tanh_linear", "fig8_relu"):
        assert f"({stem}.png)" in report and (out / f"{stem}.png").is_file()
    # a second call reuses every run; `report` rebuilds the same text
    assert main(["reproduce", "--data", "sample", "--spec", "4c5-2s", "--iterations", "20",
                 "--seeds", "2", "--out", str(out)]) == 0
    assert "50 runs: 50 already complete, 0 to train" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().split("\n\n")[2:] == report.split("\n\n")[2:]


def test_reproduce_options_of_an_earlier_record_are_read():
    from convprop.experiments.paper import ReproduceOptions

    old = {"seeds": 2, "data": "sample", "iterations": 20, "batch_size": 50,
           "dtype": "float32", "spec": "4c5-2s", "extra": {"modern": True, "diagnostics": 4}}
    o = ReproduceOptions.from_dict(old)
    assert (o.modern, o.diagnostics, o.seeds) == (True, 4, 2)
    assert o.run("sigmoid", 1.0)[0].diagnostics == 4

def test_reproduce_without_full_mnist_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(tmp_path / "empty"))
    assert main(["reproduce", "--seeds", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: full MNIST is not in the cache") and err.count("\n") == 1


def test_report_of_a_single_run_and_of_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--iterations", "10", "--out", str(run), "--no-progress"]) == 0
    assert main(["report", str(run)]) == 0
    assert (run / "rL.png").stat().st_size > 1000
    text = (run / "report.md").read_text()
    assert "| status | stalled |" in text  # 10 iterations: at chance level
    assert text.count("| iterations |") == 1 and "| data | None |" not in text
    assert "| data | MNIST sample" in text and "| test error | 89.65% |" in text
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "is not a directory" in err[0] and "holds no convprop results" in err[1]


def test_plot_activations(tmp_path, capsys):
    assert main(["plot", "activations", "--out", str(tmp_path)]) == 0
    for stem in ("fig4_tanh", "fig5_tanh_linear", "fig8_relu"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 1000
    assert main(["plot", "activations", "--activation", "leaky-relu:0,0.05,0.3",
                 "--out", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "activations.png").is_file()
    capsys.readouterr()
    assert main(["plot", "activations", "--activation", "tanh-linear:x", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a number" in err and err.count("\n") == 1


def test_help_stays_fast_and_lists_the_new_commands():
    code = ("import sys, convprop.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'ray'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr  # no matplotlib or Ray for --help
    from convprop.cli.plot import SUBCOMMANDS, register_activations

    assert register_activations in SUBCOMMANDS
