"""Sweeps: grid parsing, run naming, executors agree, stall/divergence, verdicts."""

import math

import pytest

from convprop.errors import ConvpropError
from convprop.experiments.paper import ReproduceOptions
from convprop.experiments.reproduce import reproduce_sections
from convprop.experiments.runs import Run, parse_activations, parse_grid, parse_ints
from convprop.experiments.sections import SweepSection, plan
from convprop.experiments.stats import (
    Results,
    SettingStats,
    paired_t,
    read_summary,
    verdict,
)
from convprop.experiments.sweep import run_sweep

TINY = dict(spec="4c5-2s", iterations=20, batch_size=20, data="sample")


def tiny_runs(activations=("tanh-linear:0", "tanh-linear:0.13"), seeds=(0, 1), lr=0.5):
    return [Run(activation=a, lr=lr, batch_size=TINY["batch_size"], spec=TINY["spec"], seed=s,
                iterations=TINY["iterations"], dtype="float64", data="sample")
            for a in activations for s in seeds]


def table(path):
    """summary.csv without the timing column."""
    rows = read_summary(path)
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --------------------------------------------------------------------------- grids

def test_activation_lists_expand_the_parameter():
    assert parse_activations("tanh-linear:0,0.05,0.1,0.13") == [
        "tanh-linear:0", "tanh-linear:0.05", "tanh-linear:0.1", "tanh-linear:0.13"]
    assert parse_activations(["sigmoid,relu", "leaky-relu:0.01,0.010"]) == [
        "sigmoid", "relu", "leaky-relu:0.01"]  # canonical names, duplicates dropped
    assert parse_activations("relu,leaky-relu:0.01,0.05,tanh,tanh-linear:0.1") == [
        "relu", "leaky-relu:0.01", "leaky-relu:0.05", "tanh", "tanh-linear:0.1"]


@pytest.mark.parametrize("text,values", [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]),
                                         ("0-2,7", [0, 1, 2, 7]), ("3", [3]),
                                         ("1,1,2", [1, 2])])
def test_seed_lists_and_ranges(text, values):
    assert parse_ints(text) == values


@pytest.mark.parametrize("text", ["", "1,,2", "a", "4-2", "-1", "0-2000", "1.5"])
def test_bad_seed_lists_are_one_line_errors(text):
    with pytest.raises(ConvpropError) as exc:
        parse_ints(text, "seeds")
    assert "--seeds" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(lr="0.1,x"), "--lr: 'x' is not a number"), (dict(lr="0,1"), "positive"),
    (dict(lr="nan"), "positive and finite"), (dict(activation="tanh-linear:a"), "not a number"),
    (dict(activation="swish"), "unknown activation"), (dict(activation="relu,0.1"), "relu"),
    (dict(spec="6c5-2q"), "6c5-2q"),
    (dict(dtype="float16"), "float16"), (dict(batch_size="0"), "--batch-size"),
    (dict(iterations="10", epochs="1"), "not both"), (dict(loss="mse,hinge"), "hinge"),
    (dict(optimizer="sgd,rmsprop"), "rmsprop"), (dict(init="dlt,zeros"), "zeros"),
    (dict(data="/no/such/dir"), "/no/such"),
])
def test_bad_grids_are_one_line_errors(kwargs, needle):
    with pytest.raises(ConvpropError) as exc:
        parse_grid(**{"data": "sample", **kwargs}).runs()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_grid_product_order_and_limit():
    g = parse_grid(activation="tanh-linear:0,0.13", lr="0.1,2", seeds="0-2", data="sample",
                   iterations="600")
    runs = g.runs()
    assert len(runs) == g.size() == 12
    assert [r.seed for r in runs[:3]] == [0, 1, 2]  # seeds innermost
    assert runs[0].activation == "tanh-linear:0" and runs[3].lr == 2.0
    assert len({r.name for r in runs}) == 12  # one folder per run
    assert runs[0].name == "tanh-linear=0_lr0.1_bs50_6c5-2s-12c5-2s_it600_float32_sample_seed0"
    big = parse_grid(lr="0.1,0.2,0.3", seeds="0-499", data="sample")
    with pytest.raises(ConvpropError, match="1500 runs, more than the limit of 1000"):
        big.runs()
    assert len(big.runs(limit=None)) == 1500


def test_run_names_are_stable_and_distinguish_every_parameter():
    base = tiny_runs(seeds=(0,))[0]
    variants = [base.setting, Run(**{**base.to_dict(), "lr": 0.25}),
                Run(**{**base.to_dict(), "batch_size": 10}),
                Run(**{**base.to_dict(), "dtype": "float32"}),
                Run(**{**base.to_dict(), "iterations": None, "epochs": 1}),
                Run(**{**base.to_dict(), "data": "/tmp"}),
                Run(**{**base.to_dict(), "seed": 3}),
                Run(**{**base.to_dict(), "loss": "cross-entropy"}),
                Run(**{**base.to_dict(), "optimizer": "adam"})]
    assert len({v.name for v in variants}) == len(variants)
    assert "/" not in "".join(v.name for v in variants)


def test_runs_from_train_configs_round_trip():
    from convprop.training.config import TrainConfig

    config = TrainConfig(activation="leaky-relu:0.05", lr=1, iterations=30, seed=2,
                         data="sample", loss="mse")
    run = Run.from_config(config)
    assert run.config() == config and run.lr == 1.0
    assert Run(**run.to_dict()) == run
    old = {k: v for k, v in run.to_dict().items() if k not in ("momentum", "betas")}
    assert Run(**old, options=[["momentum", 0.9]]) == run  # a sweep.json of before
    with pytest.raises(ConvpropError, match="unknown training option"):
        Run(options=(("warp", 9),))


# --------------------------------------------------------------------------- statistics

def test_paired_t_gives_the_textbook_p_value():
    # differences 0.03, 0.01, 0.01, 0.04, 0.04: mean 0.026, sd 0.015166, t = 3.8335 with
    # 4 degrees of freedom; two-sided p = 1 - sin θ (1 + cos² θ / 2), θ = atan(t / 2)
    # (Abramowitz & Stegun 26.7.4) = 0.0185626
    a, b = [0.30, 0.31, 0.29, 0.33, 0.30], [0.27, 0.30, 0.28, 0.29, 0.26]
    diff, p = paired_t(a, b)
    assert math.isclose(diff, 0.026, rel_tol=1e-9)
    assert math.isclose(p, 0.0185626, rel_tol=1e-4)
    assert paired_t([0.1], [0.2])[1] == 1.0  # one seed: nothing to test
    assert paired_t([1.0, 2.0], [0.5, 1.5]) == (0.5, 0.0)  # no spread: separated


def stat(label, rl, statuses=None):
    statuses = statuses or ["completed"] * len(rl)
    setting = Run(activation=label)
    return SettingStats(setting, label, [setting] * len(rl), rl, [0.1] * len(rl), statuses)


def test_verdicts():
    good = stat("a", [0.10, 0.11, 0.12, 0.10, 0.11])
    worse = stat("b", [0.20, 0.22, 0.21, 0.20, 0.23])
    close = stat("c", [0.11, 0.10, 0.12, 0.11, 0.10])
    assert verdict([good, worse], good)[0] == "holds"
    word, reason = verdict([good, worse], worse)
    assert word == "does not hold" and "a is better than b" in reason and "p =" in reason
    word, reason = verdict([good, close], close)
    assert word == "inconclusive" and "overlaps" in reason
    stalled = stat("s", [0.9] * 5, ["stalled"] * 5)
    word, reason = verdict([good, stalled], stalled)
    assert word == "does not hold" and "stalled or diverged in every seed" in reason
    diverged = stat("d", [None, 0.05, 0.05, 0.05, 0.05], ["diverged"] + ["completed"] * 4)
    assert not diverged.usable and diverged.mean_rl() == math.inf
    assert verdict([good, diverged], diverged)[0] == "does not hold"
    one = stat("o", [0.1])
    assert verdict([one, stat("p", [0.2])], one)[0] == "inconclusive"


# --------------------------------------------------------------------------- sweeps

def test_serial_and_process_executors_give_the_same_summary(tmp_path):
    runs = tiny_runs()
    run_sweep(runs, tmp_path / "serial", executor="serial")
    run_sweep(runs, tmp_path / "process", executor="process", workers=2)
    serial = table(tmp_path / "serial" / "summary.csv")
    assert [r["run"] for r in serial] == [r.name for r in runs]
    assert serial == table(tmp_path / "process" / "summary.csv")
    assert all(r["status"] == "completed" and r["diverged"] == "no" for r in serial)
    for r in runs:  # every run writes what `convprop train` writes
        assert {"metrics.csv", "summary.json", "model.npz"} <= {
            p.name for p in (tmp_path / "serial" / "runs" / r.name).iterdir()}


def test_complete_runs_are_skipped_and_changed_ones_rerun(tmp_path):
    runs = tiny_runs(seeds=(0,))
    run_sweep(runs, tmp_path, executor="serial")
    first = {r.name: (tmp_path / "runs" / r.name / "summary.json").stat().st_mtime_ns
             for r in runs}
    (tmp_path / "runs" / runs[1].name / "summary.json").unlink()  # interrupted before the end
    log = []
    run_sweep(runs, tmp_path, executor="serial", log=log.append)
    assert "1 already complete, 1 to train" in log[0]
    assert (tmp_path / "runs" / runs[0].name / "summary.json").stat().st_mtime_ns \
        == first[runs[0].name]
    assert len(table(tmp_path / "summary.csv")) == 2


def test_stalled_and_diverged_runs_are_reported(tmp_path):
    common = dict(spec="4c5-2s", data="sample", dtype="float32")
    stall = Run(activation="tanh-linear:0.13", lr=5.0, batch_size=5, iterations=600, **common)
    blow = Run(activation="relu", lr=1e300, batch_size=20, iterations=50, **common)
    ok = Run(activation="tanh", lr=0.5, batch_size=20, iterations=50, **common)
    run_sweep([stall, blow, ok], tmp_path, executor="serial")
    rows = {r["run"]: r for r in read_summary(tmp_path / "summary.csv")}
    assert rows[stall.name]["status"] == "stalled" and rows[stall.name]["diverged"] == "no"
    assert rows[blow.name]["status"] == "diverged" and rows[blow.name]["diverged"] == "yes"
    assert rows[blow.name]["test_error"] == "" and rows[blow.name]["iterations"] == "1"
    assert rows[ok.name]["status"] == "completed"
    results = Results(tmp_path)
    section = SweepSection("s", "S", [stall, blow, ok])
    text = section.render(results, tmp_path)
    assert "| 1 | 0 |" in text and "| 0 | 1 |" in text  # stalled / diverged counts
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_ray_executor_gives_the_same_summary_as_serial(tmp_path):
    import ray
    runs = tiny_runs(activations=("tanh-linear:0.13",))
    run_sweep(runs, tmp_path / "serial", executor="serial")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_sweep(runs, tmp_path / "ray", executor="ray")
    finally:
        ray.shutdown()
    assert table(tmp_path / "serial" / "summary.csv") == table(tmp_path / "ray" / "summary.csv")
    for r in runs:
        assert (tmp_path / "ray" / "runs" / r.name / "model.npz").is_file()


def test_reproduce_plan_deduplicates_shared_runs():
    o = ReproduceOptions(seeds=2, data="sample")
    secs = reproduce_sections(o)
    assert [s.key for s in secs] == ["activations", "fig6", "fig7", "fig9", "learned",
                                     "diagnostics"]
    total = sum(len(s.plan()) for s in secs)
    runs = plan(secs)
    assert len(runs) == total - 2  # k = 0.13 at lr 0.1 is in Figures 6 and 7, once per seed
    assert len({r.name for r in runs}) == len(runs)
    assert all(r.iterations == 600 and r.batch_size == 50 for r in runs)


def test_any_section_renders_into_a_report(tmp_path):
    from convprop.experiments.sections import write_report

    class Note:
        key, title = "note", "A note"

        def plan(self):
            return tiny_runs(activations=("tanh-linear:0.13",), seeds=(0,))

        def render(self, results, out_dir):
            row = results.row(self.plan()[0])
            return f"## {self.title}\n\nstatus {row['status']}"

    note = Note()
    run_sweep(plan([note]), tmp_path, executor="serial")
    path = write_report(tmp_path, [note], title="T")
    assert "## A note\n\nstatus completed" in path.read_text()
