"""Every training option is declared once, in TrainConfig: a new field shows up, with no
other edit, in the flags of train and sweep, the sweep grid, run names, summary.csv's
columns and the scikit-learn estimator's parameters."""

import dataclasses

import pytest

from convprop.cli import build_parser, main
from convprop.errors import ConvpropError
from convprop.training import config as cfg
from convprop.training.config import TrainConfig, option


def _check_warmth(value):
    if not 0 <= value <= 10:
        raise ConvpropError(f"warmth must be in [0, 10], got {value!r}")


@dataclasses.dataclass
class WarmConfig(TrainConfig):
    warmth: int = option(3, "a test-only option: how warm the room is",
                         parse=cfg.parse_non_negative_int, check=_check_warmth)


@pytest.fixture
def warm(monkeypatch):
    monkeypatch.setattr(cfg, "TrainConfig", WarmConfig)
    return WarmConfig


def help_of(*command):
    return build_parser()._subparsers._group_actions[0].choices[command[0]].format_help()


def test_a_new_field_reaches_every_derived_place(warm, tmp_path):
    from convprop.experiments.runs import Run, parse_grid
    from convprop.experiments.sweep import row_of, summary_columns

    assert "--warmth N" in help_of("train") and "how warm the room is" in help_of("train")
    assert "(default 3)" in help_of("train")
    assert "--warmth LIST" in help_of("sweep")
    grid = parse_grid(warmth="2,4", iterations="5", data="sample")
    runs = grid.runs()
    assert [r.warmth for r in runs] == [2, 4] and grid.warmth == [2, 4]
    assert runs[0].config().warmth == 2 and isinstance(runs[0].config(), WarmConfig)
    assert runs[0].name.endswith("_warmth=2_seed0") and "warmth" not in Run().name
    assert "warmth" in summary_columns()
    row = row_of(runs[1], {"iterations": 5, "final_rL": 0.5, "test_error": 0.25,
                           "status": "completed", "seconds": 1.0})
    assert row["warmth"] == "4"
    with pytest.raises(ConvpropError, match="warmth must be in"):
        parse_grid(warmth="11", data="sample").runs()


def test_a_new_field_is_a_train_flag_that_reaches_the_run(warm, tmp_path, capsys):
    assert main(["train", "--warmth", "12", "--out", str(tmp_path)]) == 2
    assert "warmth must be in [0, 10]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--warmth", "x", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--warmth" in capsys.readouterr().err


def test_the_derived_places_match_todays_options():
    from convprop.experiments.sweep import summary_columns
    from convprop.interop.sklearn import CNNClassifier

    assert summary_columns() == ("run", "activation", "lr", "batch_size", "spec", "seed",
                               "iterations", "dtype", "data", "final_rL", "test_error",
                               "status", "diverged", "seconds")  # docs/reproduce's columns
    params = CNNClassifier().get_params()
    assert set(params) == ({f.name for f in cfg.options(TrainConfig)} - {"data", "diagnostics"}
                           | {"input_shape"})  # input_shape: how X is read, not an option
    assert params["lr"] == TrainConfig().lr and params["dtype"] == "float32"
    sweep_help = help_of("sweep")
    for flag in ("--activation", "--lr", "--batch-size", "--spec", "--seeds", "--iterations",
                 "--epochs", "--dtype", "--data", "--loss", "--optimizer", "--init"):
        assert f"{flag} LIST" in sweep_help
    train_help = help_of("train")
    for flag in ("--momentum", "--betas", "--diagnostics", "--seed", "--epochs"):
        assert flag in train_help


@pytest.mark.parametrize("changes,needle", [
    (dict(lr=0), "learning rate"), (dict(lr=True), "learning rate"),
    (dict(batch_size=0), "batch size"), (dict(seed=-1), "seed"),
    (dict(epochs=1, iterations=1), "not both"), (dict(dtype="float16"), "dtype"),
    (dict(init="zeros"), "init"), (dict(loss="hinge"), "hinge"),
    (dict(momentum=1.5), "momentum"), (dict(betas=(0.9,)), "betas"),
    (dict(diagnostics=-1), "diagnostics"), (dict(activation="swish"), "swish"),
])
def test_each_field_is_validated_where_it_is_declared(changes, needle):
    with pytest.raises(ConvpropError, match=needle):
        TrainConfig(**changes).validate()


def test_default_length_is_six_sample_epochs_in_train_and_sweep():
    from convprop.experiments.runs import parse_grid

    assert TrainConfig().with_default_length("sample").epochs == cfg.SAMPLE_EPOCHS == 6
    assert TrainConfig().with_default_length("mnist").epochs is None
    assert TrainConfig(iterations=5).with_default_length("sample").epochs is None
    assert parse_grid(data="sample").runs()[0].epochs == 6
