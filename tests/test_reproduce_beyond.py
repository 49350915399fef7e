"""`convprop reproduce`'s sections beyond the paper: learned k and α, gradient flow, --modern."""

import json

import pytest

from convprop.cli import main
from convprop.experiments import beyond
from convprop.experiments import reproduce_beyond as rb
from convprop.experiments.executors import execute_run
from convprop.experiments.paper import FIG6_LR, FIG9_LR, ReproduceOptions
from convprop.experiments.stats import read_summary

ARGS = ["reproduce", "--data", "sample", "--spec", "4c5-2s", "--iterations", "8", "--seeds",
        "1", "--executor", "serial", "--diagnostics", "4"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    assert main([*ARGS, "--modern", "--out", str(out)]) == 0
    return out


def section_text(report: str, title: str) -> str:
    return report.split(f"## {title}")[1].split("\n## ")[0]


def test_learned_section_sets_learned_values_beside_the_grid_searched_best(reproduced):
    report = (reproduced / "report.md").read_text()
    text = section_text(report, "Beyond the paper: learned k and α")
    for act in ("tanh-linear-learned:map:0", "tanh-linear-learned:layer:0", "prelu:map:0.25",
                "prelu:layer:0.25"):
        assert f"| `{act}` |" in text
    assert "conv1.k " in text and "conv1.alpha " in text  # learned values from summary.json
    rows = read_summary(reproduced / "summary.csv")
    for prefix, lr in (("tanh-linear:", FIG6_LR), ("leaky-relu:", FIG9_LR)):
        sweep = [r for r in rows if r["activation"].startswith(prefix)
                 and float(r["lr"]) == lr]
        best = min(sweep, key=lambda r: float(r["final_rL"]))["activation"]  # one seed
        assert f"| `{best}` | grid-searched best of Figure" in text
    learned = [r for r in rows if r["activation"].startswith(("prelu", "tanh-linear-learned"))]
    assert len(learned) == 4
    assert all(float(r["lr"]) == (FIG6_LR if r["activation"].startswith("tanh")
                                  else FIG9_LR) for r in learned)


def test_modern_adds_one_row_per_baseline_at_both_lengths(reproduced):
    text = section_text((reproduced / "report.md").read_text(), "Beyond the paper: modern")
    assert "test error after 8 iterations | test error after 1 epoch" in text
    for label, _ in beyond.MODERN:
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert row.count("%") == 2 and "n/a" not in row
    runs = [r for r in read_summary(reproduced / "summary.csv") if "_ep1_" in r["run"]]
    assert len(runs) == len(beyond.MODERN)
    assert not any(s.key == "modern" for s in rb.sections(ReproduceOptions(data="sample")))


def test_diagnostics_figures_per_sweep_from_seed_0(reproduced):
    report = (reproduced / "report.md").read_text()
    for key in rb.SWEEP_KEYS:
        assert (reproduced / f"{key}_diagnostics.png").stat().st_size > 1000
        assert f"]({key}_diagnostics.png)" in report
    assert "| dead conv1 |" in report and "| saturated conv1 |" in report
    traced = {p.parent.name for p in (reproduced / "runs").glob("*/diagnostics.csv")}
    assert len(traced) == 21 and all("diagnostics=4_seed0" in n for n in traced)


def test_report_rebuilds_the_same_text_from_stored_results(reproduced, capsys):
    before = (reproduced / "report.md").read_text()
    meta = json.loads((reproduced / "reproduce.json").read_text())
    assert (meta["options"]["modern"], meta["options"]["diagnostics"]) == (True, 4)
    assert meta["sections"][-3:] == ["learned", "diagnostics", "modern"]
    (reproduced / "fig9_diagnostics.png").unlink()
    assert main(["report", str(reproduced)]) == 0
    assert (reproduced / "report.md").read_text() == before
    assert (reproduced / "fig9_diagnostics.png").is_file()


def test_diagnostics_do_not_change_a_runs_numbers(tmp_path):
    o = ReproduceOptions(seeds=2, data="sample", iterations=6, spec="4c5-2s", diagnostics=2)
    traced, plain = o.run("leaky-relu:0.05", 1.0)
    assert traced.diagnostics == 2 and plain.diagnostics == 0
    assert traced.setting == plain.setting  # one setting over seeds
    bare = traced.replace(diagnostics=0)
    assert bare.name != traced.name
    a = execute_run(traced, str(tmp_path / "a"))
    b = execute_run(bare, str(tmp_path / "b"))
    assert (tmp_path / "a" / "diagnostics.csv").is_file()
    assert not (tmp_path / "b" / "diagnostics.csv").exists()
    assert (a["final_rL"], a["test_error"]) == (b["final_rL"], b["test_error"])
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (
        tmp_path / "b" / "metrics.csv").read_bytes()


def test_negative_diagnostics_interval_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's one line, status 2
        main([*ARGS[:-1], "-1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: argument --diagnostics") and "'-1'" in err
