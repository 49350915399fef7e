"""The `convprop` command: train, evaluate, help, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from convprop.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(*args, cwd=None):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "CONVPROP_DATA_DIR": "/nonexistent"}
    return subprocess.run([sys.executable, "-m", "convprop", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_tests_run_outside_the_checkout():
    """conftest's scratch directory: a CLI default such as ``--out runs/train`` must not
    meet the results of README's ``convprop train`` in a user's clone, nor write there."""
    repo, here = SRC.parent.resolve(), Path.cwd().resolve()
    assert here != repo and repo not in here.parents
    assert not any(here.iterdir())


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "data"):
        assert command in out


def test_train_then_evaluate_on_the_bundled_sample(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    code = main(["train", "--spec", "4c5-2s", "--iterations", "60", "--out", str(out),
                 "--no-progress", "--dtype", "float64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "MNIST sample" in captured.err  # says which data it used
    assert "test error:" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["name"] == "sample" and summary["iterations"] == 60
    assert summary["config"]["dtype"] == "float64"
    assert (out / "metrics.csv").read_text().splitlines()[0] == "iteration,loss,rL"

    code = main(["evaluate", str(out / "model.npz"), "--data", "sample"])
    captured = capsys.readouterr()
    assert code == 0
    reported = float(captured.out.split("test error: ")[1].split("%")[0])
    assert reported == pytest.approx(100 * summary["test_error"], abs=0.005)
    assert "confusion matrix" in captured.out


@pytest.mark.parametrize("args,needle", [
    (["train", "--spec", "6x5"], "6x5"),
    (["train", "--spec", "6c5-5s"], "layer size must be integer"),
    (["train", "--activation", "swish"], "swish"),
    (["train", "--activation", "leaky-relu:abc"], "abc"),
    (["train", "--lr", "-1"], "-1"),
    (["train", "--lr", "nan"], "nan"),
    (["train", "--batch-size", "0"], "0"),
    (["train", "--iterations", "0"], "0"),
    (["train", "--epochs", "1", "--iterations", "5"], "not allowed with"),
    (["train", "--data", "/no/such/dir"], "/no/such/dir"),
    (["evaluate", "/no/such/model.npz"], "/no/such/model.npz"),
])
def test_user_mistakes_give_one_line_and_status_2(args, needle, capsys):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:") and needle in err
    assert "Traceback" not in err


def test_no_traceback_reaches_the_terminal(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    proc = run_cli("evaluate", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_output_directory_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code = main(["train", "--iterations", "1", "--out", str(f), "--data", "sample"])
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_default_length_on_the_sample_is_one_full_mnist_epoch_of_images(tmp_path):
    """No --epochs/--iterations on the 10,000-image sample: 6 epochs = 1200 iterations of
    50, said on stderr; the paper's network then learns (the 200 iterations of a single
    sample epoch leave it on the sigmoid plateau)."""
    proc = run_cli("train", "--data", "sample", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "training 6 epochs of the sample" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 1200 and summary["config"]["epochs"] == 6
    assert summary["test_error"] < 0.2
    proc = run_cli("train", "--data", "sample", "--no-progress", "--iterations", "3",
                   "--out", str(tmp_path / "short"))
    assert proc.returncode == 0 and "epochs of the sample" not in proc.stderr
