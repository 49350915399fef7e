"""The run lists and report tables of convprop.experiments.beyond (used by `convprop reproduce`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from convprop.data.mnist import load_sample
from convprop.experiments import beyond
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training


def test_learned_runs_cover_grid_best_and_learned_variants():
    cfgs = beyond.learned_runs([0, 1], iterations=600, data="sample")
    acts = {c.activation for c in cfgs}
    assert {"tanh-linear:0.13", "leaky-relu:0.05", "prelu:map:0.25", "prelu:layer:0.25",
            "tanh-linear-learned:map:0", "tanh-linear-learned:layer:0"} == acts
    assert len(cfgs) == 2 * len(acts)
    assert all(c.iterations == 600 and c.data == "sample" for c in cfgs)
    assert {c.lr for c in cfgs if c.activation.startswith("tanh")} == {0.1}
    assert {c.lr for c in cfgs if "relu" in c.activation} == {1.0}
    assert len({beyond.run_name(c) for c in cfgs}) == len(cfgs)


def test_run_names_tell_data_spec_and_dtype_apart(tmp_path):
    """`scripts/beyond_paper.py --data sample` then `--data mnist` into one --out must not
    reuse the sample's results."""
    base = beyond.learned_runs([0], iterations=600, data="sample")[0]
    names = {beyond.run_name(base)}
    for change in (dict(data=str(tmp_path)), dict(data="mnist"), dict(spec="4c5-2s"),
                   dict(dtype="float64"), dict(batch_size=10)):
        names.add(beyond.run_name(TrainConfig.from_dict({**base.to_dict(), **change})))
    assert len(names) == 6


def test_modern_runs_change_one_thing_at_a_time():
    cfgs = beyond.modern_runs([0], iterations=600)
    assert len(cfgs) == 2 * len(beyond.MODERN)
    assert {(c.iterations, c.epochs) for c in cfgs} == {(600, None), (None, 1)}
    paper = TrainConfig()
    for c in cfgs:
        changed = {k for k, v in c.to_dict().items()
                   if v != paper.to_dict()[k] and k not in ("iterations", "epochs")}
        assert changed <= {"loss", "lr", "optimizer", "momentum", "init", "activation"}
    assert {c.optimizer for c in cfgs} == {"sgd", "momentum", "adam"}
    assert {c.loss for c in cfgs} == {"mse", "cross-entropy"}
    assert {c.init for c in cfgs} == {"dlt", "he"}


def fake_summary(cfg: TrainConfig, rl: float, err: float, params=None, status="completed"):
    return {"config": cfg.to_dict(), "final_rL": rl, "test_error": err, "status": status,
            "activation_params": params or {}}


def test_render_learned_reports_mean_sd_and_learned_values():
    cfgs = beyond.learned_runs([0, 1], iterations=10)
    results = []
    for i, c in enumerate(cfgs):
        params = ({"conv1.alpha": [0.1 + 0.1 * (i % 2), 0.3]} if c.activation ==
                  "prelu:map:0.25" else None)
        results.append(fake_summary(c, 0.1 + 0.02 * (i % 2), 0.05 + 0.01 * (i % 2), params))
    table = beyond.render_learned(results)
    row = next(line for line in table.splitlines() if "`prelu:map:0.25`" in line)
    # seed 0: mean 0.2, seed 1: mean 0.25 -> 0.225; range 0.1..0.3
    assert "conv1.alpha 0.225 [0.10, 0.30]" in row
    assert f"0.1100 ± {np.std([0.1, 0.12], ddof=1):.4f}" in row
    assert "5.50 ± 0.71%" in row and row.endswith("| 2 |")
    assert "(fixed)" in next(line for line in table.splitlines() if "leaky-relu:0.05" in line)


def test_render_modern_has_both_lengths_and_flags_bad_runs():
    cfgs = beyond.modern_runs([0], iterations=600)
    results = [fake_summary(c, 0.2, 0.1 if c.iterations else 0.05,
                            status="diverged" if c.optimizer == "adam" else "completed")
               for c in cfgs]
    table = beyond.render_modern(results)
    lines = table.splitlines()
    assert "test error after 600 iterations" in lines[0] and "after 1 epoch" in lines[0]
    assert len(lines) == 2 + len(beyond.MODERN)
    paper = next(line for line in lines if line.startswith("| paper"))
    assert "| 10.00% | 5.00% | 0.2000 | 1 |" in paper
    assert "diverged: 1" in next(line for line in lines if "+ Adam" in line)


def test_diagnostic_run_writes_its_files(tmp_path):
    ds = load_sample()
    ds = dataclasses.replace(ds, train_x=ds.train_x[:200], train_y=ds.train_y[:200])
    cfg = TrainConfig(spec="4c5-2s", activation="relu", iterations=6, diagnostics=3)
    s = beyond.diagnostic_run(cfg, tmp_path / "r", ds, conv_bias=-0.25, input_scale=2.0)
    assert s["conv_bias"] == -0.25 and (tmp_path / "r" / "diagnostics.csv").exists()
    assert beyond.load_summaries([tmp_path / "r"])[0]["config"]["activation"] == "relu"
    with pytest.raises(Exception, match="diagnostics > 0"):
        beyond.diagnostic_run(TrainConfig(), tmp_path / "x", ds)


def test_render_learned_from_real_run_folders(tmp_path):
    ds = load_sample()
    ds = dataclasses.replace(ds, train_x=ds.train_x[:300], train_y=ds.train_y[:300],
                             test_x=ds.test_x[:100], test_y=ds.test_y[:100])
    dirs = []
    for c in beyond.learned_runs([0], iterations=4):
        if c.activation.startswith("prelu:layer"):
            c.spec = "4c5-2s"
            run_training(c, tmp_path / beyond.run_name(c), dataset=ds)
            dirs.append(tmp_path / beyond.run_name(c))
    table = beyond.render_learned(dirs)
    assert "conv1.alpha" in table and "`prelu:layer:0.25`" in table
