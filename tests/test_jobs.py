"""The library's training jobs: the result object, the trainer's state, resume with
overrides, the rule for runs that learned nothing, threads, and the CLI's voice."""

import json
import os

import numpy as np
import pytest

from conftest import blobs
from convprop.cli import main
from convprop.errors import ConvpropError
from convprop.maths.network import Network
from convprop.training.config import TrainConfig
from convprop.training.jobs import RunResult, resume_training, run_training
from convprop.training.trainer import Trainer

SMALL = ["--data", "sample", "--spec", "4c5-2s", "--batch-size", "20", "--no-progress"]


class Data:
    def __init__(self, x, y, name="blobs"):
        self.train_x, self.train_y, self.test_x, self.test_y = x, y, x, y
        self.name, self.description = name, f"{name} ({len(x)} images)"


def small(seed=0, **kw):
    x, y = blobs(120, seed=seed)
    cfg = TrainConfig(spec="2c5-2s", activation="tanh", lr=0.5, batch_size=10,
                      iterations=25, dtype="float64", **kw)
    return cfg, Data(x, y)


def test_run_training_returns_the_network_and_the_summary(tmp_path):
    cfg, data = small()
    result = run_training(cfg, tmp_path, dataset=data)
    assert isinstance(result, RunResult) and isinstance(result.network, Network)
    assert json.loads(json.dumps(result.summary)) == json.loads(
        (tmp_path / "summary.json").read_text())
    assert result["status"] == result.summary["status"] and "_network" not in result.summary
    assert result.out_dir == tmp_path


def test_state_dict_round_trip_continues_bit_for_bit():
    cfg, data = small()
    whole = Trainer(Network.from_spec("2c5-2s", "tanh", (12, 12), seed=0), data.train_x,
                    data.train_y, cfg)
    whole.run()
    first = Trainer(Network.from_spec("2c5-2s", "tanh", (12, 12), seed=0), data.train_x,
                    data.train_y, cfg)
    for _ in range(11):
        first.step()
    state = first.state_dict()
    other = Trainer(Network.from_spec("2c5-2s", "tanh", (12, 12), seed=5), data.train_x,
                    data.train_y, cfg)
    other.load_state_dict(state)
    other.run()
    assert other.losses == whole.losses
    for k in whole.net.params:
        assert np.array_equal(other.net.params[k], whole.net.params[k])
    bad = dict(state, config={**state["config"], "lr": 0.25})
    with pytest.raises(ConvpropError, match="other training options"):
        other.load_state_dict(bad)


def test_resume_training_refuses_overrides_that_conflict(tmp_path):
    cfg, data = small()
    calls = iter(range(10**6))
    run_training(cfg, tmp_path, dataset=data, should_stop=lambda: next(calls) >= 8)
    with pytest.raises(ConvpropError, match="--lr 0.1 conflicts with the stored 0.5"):
        resume_training(tmp_path, {"lr": 0.1}, dataset=data)
    with pytest.raises(ConvpropError, match="--data mnist conflicts with the stored blobs"):
        resume_training(tmp_path, {"data": "mnist"}, dataset=data)
    result = resume_training(tmp_path, {"lr": 0.5, "seed": 0, "data": "blobs"}, dataset=data)
    assert result["status"] == "completed" and result["iterations"] == 25


def saturated_trainer(losses, test_labels_at_chance=True):
    cfg, data = small()
    t = Trainer(Network.from_spec("2c5-2s", "tanh", (12, 12), seed=0), data.train_x,
                data.train_y, cfg)
    t.losses = list(losses)
    t.rl = list(np.asarray(losses))
    t.iteration = len(losses)
    t.status = "completed"
    return t


def test_a_run_at_chance_with_constant_level_losses_is_stalled_whatever_its_curve():
    t = saturated_trainer(np.r_[np.linspace(0.9, 0.5, 200), np.full(100, 0.5)])
    t.judge(test_error=0.90, chance_error=0.886)
    assert t.status == "stalled"
    assert "at chance level" in t.message and "stayed flat" not in t.message


def test_a_slow_starter_below_chance_is_not_stalled():
    t = saturated_trainer(np.linspace(1.2, 0.49, 300))  # still above the baseline
    t.judge(test_error=0.70, chance_error=0.886)
    assert t.status == "completed"
    t.judge(test_error=0.10, chance_error=0.886)
    assert t.status == "completed"


def test_stall_messages_say_what_happened():
    t = saturated_trainer(np.r_[np.linspace(1.25, 4.5, 100), np.full(300, 4.5)])
    t.rl = list(np.r_[np.linspace(1.25, 4.4, 400)])
    message = t.what_happened()
    assert "rose from 1.25 to 4.4" in message and "saturated" in message
    # a learned parameter that ran away
    net = Network.from_spec("2c5-2s", "tanh-linear-learned:layer:0", (12, 12), seed=0)
    t.net = net
    name = next(k for k in net.params if k.endswith(".k"))
    net.params[name][...] = 8.1
    assert f"{name} ran away to 8.1" in t.what_happened()


def test_metrics_are_identical_for_one_and_two_threads(tmp_path):
    args = ["--data", "sample", "--spec", "4c5-2s", "--batch-size", "50", "--no-progress",
            "--iterations", "30", "--activation", "tanh", "--lr", "0.5"]  # 2 parts: 26 + 24
    assert main(["train", *args, "--threads", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *args, "--threads", "2", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == \
        (tmp_path / "b" / "metrics.csv").read_bytes()
    from convprop.interop.model import load_model

    a, b = load_model(tmp_path / "a" / "model.npz"), load_model(tmp_path / "b" / "model.npz")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_threads_default_and_environment(monkeypatch):
    import argparse

    from convprop.cli.options import available_cores, threads_for

    monkeypatch.delenv("CONVPROP_NUM_THREADS", raising=False)
    ns = argparse.Namespace(threads=None)
    assert threads_for(ns) == available_cores() == len(os.sched_getaffinity(0))
    assert threads_for(ns, per_worker=True) == 1
    monkeypatch.setenv("CONVPROP_NUM_THREADS", "3")
    assert threads_for(ns) == 3 and threads_for(argparse.Namespace(threads=2)) == 2
    monkeypatch.setenv("CONVPROP_NUM_THREADS", "many")
    with pytest.raises(ConvpropError, match="CONVPROP_NUM_THREADS"):
        threads_for(ns)


def test_train_refuses_a_folder_with_results_unless_force(tmp_path, capsys):
    args = ["train", *SMALL, "--iterations", "5", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds the results" in err and "--force" in err
    assert (tmp_path / "summary.json").read_bytes() == before
    assert main([*args, "--force", "--seed", "1"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["seed"] == 1


def test_evaluate_defaults_to_the_data_the_model_was_trained_on(tmp_path, capsys,
                                                               monkeypatch):
    assert main(["train", *SMALL, "--iterations", "5", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    seen = []
    import convprop.data.mnist as mnist

    real = mnist.load_data
    monkeypatch.setattr(mnist, "load_data", lambda source=None: seen.append(source)
                        or real(source))
    assert main(["evaluate", str(tmp_path / "model.npz")]) == 0
    assert seen == ["sample"] and "trained on" in capsys.readouterr().err


def test_sweep_in_a_folder_in_use_says_so_in_one_line(tmp_path, capsys):
    from convprop.experiments.sweep import LOCK, sweep_lock

    out = tmp_path / "s"
    out.mkdir()
    (out / LOCK).write_text(f"{os.getppid()}\n")  # a live process holds it
    args = ["sweep", "--data", "sample", "--spec", "4c5-2s", "--iterations", "5",
            "--executor", "serial", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another sweep" in err
    assert not (out / "runs").exists()
    (out / LOCK).write_text("999999999\n")  # stale: no such process
    with sweep_lock(out):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
    assert not (out / LOCK).exists()


def test_reproduce_preamble_names_one_seed_as_seed_0():
    from convprop.experiments.paper import ReproduceOptions
    from convprop.experiments.reproduce import reproduce_preamble

    assert "seed 0;" in reproduce_preamble(ReproduceOptions(seeds=1), 10, None)
    assert "seeds 0-4;" in reproduce_preamble(ReproduceOptions(seeds=5), 10, None)
