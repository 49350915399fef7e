"""The paper's setting on full MNIST: one epoch of the default network."""

import json

from convprop.cli import main


def test_one_epoch_on_full_mnist_reaches_the_toolbox_error(mnist_dir, tmp_path, capsys):
    """The toolbox reaches 11.3% under Octave; the issue asks for <= 12.5%. Skips without
    full MNIST (see conftest.full_mnist_dir), fails then under CONVPROP_REQUIRE_FULL_MNIST=1."""
    code = main(["train", "--data", str(mnist_dir), "--epochs", "1", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 1200 and summary["data"]["n_train"] == 60000
    assert summary["status"] == "completed"
    assert summary["test_error"] <= 0.125, summary["test_error"]
