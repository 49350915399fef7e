"""Gradient-flow diagnostics: the recorded numbers, the dead-ReLU and saturated-tanh
effects they exist to show, diagnostics.csv and `convprop plot diagnostics`."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from convprop.cli import main
from convprop.maths.network import Network
from convprop.training import diagnostics
from convprop.training.config import TrainConfig
from convprop.training.trainer import Trainer


@functools.cache
def sample():
    from convprop.data.mnist import load_sample

    return load_sample()


def run(activation, iterations, bias=0.0, scale=1.0, every=10, spec="6c5-2s-12c5-2s"):
    """Train on the bundled sample with diagnostics; conv biases start at ``bias`` and
    the inputs are multiplied by ``scale``.  Returns {(iteration, layer, metric): value}."""
    ds = sample()
    net = Network.from_spec(spec, activation=activation, seed=0, dtype="float32")
    for name in net.params:
        if name.startswith("conv") and name.endswith(".bias"):
            net.params[name] = np.full(net.params[name].shape, bias)
    x = ds.train_x[:2000].astype(np.float32) * (scale / 255)
    tr = Trainer(net, x, ds.train_y[:2000], TrainConfig(spec=spec, activation=activation,
                                                        iterations=iterations,
                                                        diagnostics=every))
    tr.run()
    return {(i, layer, m): v for i, layer, m, v in tr.diagnostics}


def test_recorded_values_are_the_trace_means():
    net = Network.from_spec("3c3-2s-4c3-2s", activation="relu", input_shape=(14, 14),
                            seed=1, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 14, 14)), rng.integers(0, 10, 6)
    tr = net.trace(x, y)
    got = {(layer, m): v for _, layer, m, v in diagnostics.record(net, tr, 7)}
    conv2 = tr.layers[2]
    assert got["conv2", "delta"] == pytest.approx(np.abs(conv2.delta).mean())
    assert got["pool1", "delta"] == pytest.approx(np.abs(tr.layers[1].d_out).mean())
    assert got["conv1", "grad"] == pytest.approx(np.abs(tr.grads["conv1.weight"]).mean())
    assert got["conv2", "dead"] == pytest.approx(np.all(conv2.a <= 0, axis=0).mean())
    assert got["out", "saturated"] == pytest.approx(
        (np.abs(tr.layers[-1].slope) < 0.0025).mean())
    assert ("conv1", "saturated") not in got and ("out", "dead") not in got


def test_diagnostics_do_not_change_training():
    """Diagnostics trace the batch separately: the run's numbers do not change."""
    ds = sample()
    x, y = ds.train_x[:500], ds.train_y[:500]
    results = []
    for every in (0, 3):
        net = Network.from_spec("4c5-2s", seed=0, dtype="float64")
        tr = Trainer(net, x, y, TrainConfig(spec="4c5-2s", iterations=10, dtype="float64",
                                            diagnostics=every))
        results.append((tr.run().losses, dict(net.params), tr.diagnostics))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for k in results[0][1]:
        np.testing.assert_array_equal(results[0][1][k], results[1][1][k])
    assert results[0][2] == [] and sorted({r[0] for r in results[1][2]}) == [1, 3, 6, 9]


def test_plain_relu_keeps_dead_units_that_leaky_relu_revives():
    """Conv biases start at -0.5: almost every conv2 unit starts off for every image.
    Under relu they get (almost) no gradient and stay dead (the network cannot learn);
    under leaky-relu:0.05 they get 5% of the error and some come back.  Averaged over
    iterations 25-100, as one batch's fraction is noisy."""
    relu = run("relu", 100, bias=-0.5, every=25)
    leaky = run("leaky-relu:0.05", 100, bias=-0.5, every=25)
    assert relu[1, "conv2", "dead"] > 0.95 and leaky[1, "conv2", "dead"] > 0.95

    def mean(r, metric):
        return np.mean([r[i, "conv2", metric] for i in (25, 50, 75, 100)])

    assert mean(relu, "dead") > 0.97
    assert mean(leaky, "dead") < mean(relu, "dead") - 0.05
    assert mean(leaky, "grad") > 10 * mean(relu, "grad")


def test_tanh_saturates_on_large_inputs():
    normal = run("tanh", 20, every=10)
    large = run("tanh", 20, scale=20, every=10)
    for it in (1, 20):
        assert large[it, "conv1", "saturated"] > 0.2
        assert normal[it, "conv1", "saturated"] < 0.05
    linear = run("tanh-linear:0.13", 20, scale=20, every=10)
    assert linear[20, "conv1", "saturated"] == 0  # slope >= 0.13 > 1% of 1.13


def test_cli_writes_diagnostics_csv_and_plots_runs_side_by_side(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONVPROP_DATA_DIR", str(tmp_path / "empty-cache"))
    runs = []
    for act in ("relu", "prelu:layer:0.1"):
        out = tmp_path / act.replace(":", "_")
        code = main(["train", "--data", "sample", "--spec", "4c5-2s", "--iterations", "12",
                     "--activation", act, "--diagnostics", "5", "--out", str(out),
                     "--no-progress"])
        assert code == 0, capsys.readouterr().err
        runs.append(str(out))
    lines = (tmp_path / "relu" / "diagnostics.csv").read_text().splitlines()
    assert lines[0] == "iteration,layer,metric,value"
    assert {line.split(",")[0] for line in lines[1:]} == {"1", "5", "10"}
    data = diagnostics.read_diagnostics(runs[1])
    assert set(data) == {"delta", "grad", "dead", "saturated", "alpha"}
    png = tmp_path / "fig" / "d.png"
    capsys.readouterr()
    assert main(["plot", "diagnostics", *runs, "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", "diagnostics", str(tmp_path / "nope"), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert "no diagnostics" in err and len(err.strip().splitlines()) == 1
    assert main(["plot", "diagnostics", runs[0], "--metrics", "bogus", "-o", str(png)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_bad_diagnostics_file_is_a_one_line_error(tmp_path):
    from convprop.errors import ConvpropError

    (tmp_path / "diagnostics.csv").write_text("iteration,layer,metric,value\n1,conv1,dead\n")
    with pytest.raises(ConvpropError, match="line 2 has 3 fields"):
        diagnostics.read_diagnostics(tmp_path)
    with pytest.raises(ConvpropError, match="integer >= 0"):
        TrainConfig(diagnostics=-1).validate()
