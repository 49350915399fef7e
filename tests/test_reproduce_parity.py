"""Behaviour unchanged: rows of docs/reproduce/summary.csv (full MNIST, 5 seeds) trained
again give the same test errors and final rL (to 1e-6: float32 sums may differ in the
last bits from one machine to another)."""

import csv
from pathlib import Path

import pytest

from conftest import full_mnist_dir
from convprop.experiments.executors import execute_run
from convprop.experiments.reproduce import load_reproduce
from convprop.experiments.sections import plan

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproduce"
ROWS = (
    "tanh-linear=0.13_lr2_bs50_6c5-2s-12c5-2s_it600_float32_dir-3bde42f0_seed1",  # stalled
    "sigmoid_lr1_bs50_6c5-2s-12c5-2s_ep1_float32_dir-3bde42f0_seed0",  # the paper's, 1 epoch
)


def stored_rows():
    with open(DOCS / "summary.csv", newline="") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def test_the_reproduce_plan_names_every_stored_row_in_order():
    _, sections, _ = load_reproduce(DOCS)
    assert [r.name for r in plan(sections)] == list(stored_rows())


@pytest.mark.parametrize("name", ROWS)
def test_stored_rows_train_again_to_the_same_numbers(name, tmp_path):
    mnist = full_mnist_dir()  # skips without full MNIST (fails under CONVPROP_REQUIRE_FULL_MNIST=1)
    _, sections, _ = load_reproduce(DOCS)
    run = next(r for r in plan(sections) if r.name == name)
    run = run.replace(data=str(mnist.resolve()))  # the same files wherever they are
    summary = execute_run(run, str(tmp_path), threads=1)
    row = stored_rows()[name]
    assert summary["test_error"] == float(row["test_error"])
    assert summary["final_rL"] == pytest.approx(float(row["final_rL"]), abs=1e-6)
    assert summary["iterations"] == int(row["iterations"])
