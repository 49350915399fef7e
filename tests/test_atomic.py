"""Atomic results: every file convprop writes appears whole or not at all, with the
permissions a plain open() would give."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import convprop.fileio as fileio
from convprop import ConvpropError
from convprop.fileio import write_csv, write_json, write_npz

SRC = Path(__file__).resolve().parents[1] / "src"


def leftovers(folder):
    return sorted(p.name for p in Path(folder).glob(".*.tmp"))


def test_crash_while_writing_json_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"status": "completed", "iterations": 10})
    before = target.read_bytes()

    class Boom:  # fails half-way through json.dump
        pass

    with pytest.raises(TypeError):
        write_json(target, {"status": "completed", "big": list(range(10000)), "x": Boom()})
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_crash_while_writing_csv_and_npz_keeps_the_old_files(tmp_path, monkeypatch):
    csv_path, npz_path = tmp_path / "metrics.csv", tmp_path / "model.npz"
    write_csv(csv_path, ["iteration", "loss"], [(1, 0.5)])
    write_npz(npz_path, {"a": np.arange(5)})
    old_csv, old_npz = csv_path.read_bytes(), npz_path.read_bytes()

    def rows():
        yield (1, 0.25)
        raise KeyboardInterrupt  # Ctrl-C in the middle of the rows

    with pytest.raises(KeyboardInterrupt):
        write_csv(csv_path, ["iteration", "loss"], rows())

    def half_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_savez)
    with pytest.raises(ConvpropError, match="No space left on device"):
        write_npz(npz_path, {"a": np.arange(10)})
    assert csv_path.read_bytes() == old_csv and npz_path.read_bytes() == old_npz
    assert leftovers(tmp_path) == []


def test_crash_before_the_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with fileio.atomic_open(tmp_path / "new.json") as fh:
            fh.write("{")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_failing_results_write_keeps_the_previous_run(tmp_path, monkeypatch):
    """A run that crashes while writing its results leaves the earlier run's files whole;
    summary.json, written last, still describes the earlier run."""
    from convprop.training.config import TrainConfig
    from convprop.training.jobs import run_training
    from convprop.training.trainer import read_metrics

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (60, 12, 12)), rng.integers(0, 10, 60)

    class Data:
        train_x, train_y, test_x, test_y = x[:40], y[:40], x[40:], y[40:]
        name, description = "noise", "noise"

    cfg = dict(spec="2c3-2s", batch_size=10, dtype="float64")
    run_training(TrainConfig(iterations=8, **cfg), tmp_path, dataset=Data())
    old = {n: (tmp_path / n).read_bytes() for n in ("model.npz", "summary.json")}

    def crash(fh, **arrays):
        fh.write(b"PK\x03\x04")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(ConvpropError, match="model.npz.*Input/output error"):
        run_training(TrainConfig(iterations=12, **cfg), tmp_path, dataset=Data())
    assert len(read_metrics(tmp_path / "metrics.csv")["iteration"]) == 12  # written whole
    for name, content in old.items():
        assert (tmp_path / name).read_bytes() == content, name
    assert json.loads(old["summary.json"])["iterations"] == 8
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_0666_minus_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {})
        write_csv(tmp_path / "b.csv", ["x"], [])
        write_npz(tmp_path / "c.npz", {"a": np.zeros(1)})
    finally:
        os.umask(old)
    for name in ("a.json", "b.csv", "c.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_process_killed_while_writing_leaves_old_or_new_file_whole(tmp_path):
    """A child rewrites a 16 MB archive in a loop; SIGKILL lands at a random moment."""
    target = tmp_path / "model.npz"
    child = textwrap.dedent(f"""
        import numpy as np
        from convprop.fileio import write_npz
        i = 0
        while True:
            write_npz({str(target)!r}, {{"a": np.full(2_000_000, i, dtype=np.float64)}})
            print(i, flush=True)
            i += 1
    """)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "0"  # one complete write
    time.sleep(random.uniform(0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with np.load(target, allow_pickle=False) as z:
        a = z["a"]
    assert a.shape == (2_000_000,) and np.all(a == a[0])
    # the only other thing the kill may leave is a hidden temporary sibling
    assert all(re.fullmatch(r"\.model\.npz\..+\.tmp", p.name)
               for p in tmp_path.iterdir() if p != target)


WRITE_CALLS = [
    (r"(?<![\w.])open\([^)]*,\s*f?[\"'][wax]", "open(..., 'w')"),
    (r"\.write_text\(|\.write_bytes\(", "Path.write_text/write_bytes"),
    (r"\bnp\.save(z|z_compressed)?\(\s*(?!fh\b)", "np.save/np.savez to a path"),
    (r"\b(savefig|savemat)\(\s*(?!fh\b)", "savefig/savemat to a path (pass atomic_open's fh)"),
]


def test_package_writes_files_only_through_fileio():
    """Every result file goes through convprop.fileio (temporary sibling, fsync, rename):
    no module writes a file directly."""
    offenders = []
    for path in sorted((SRC / "convprop").rglob("*.py")):
        if path.name == "fileio.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for pattern, what in WRITE_CALLS:
                if re.search(pattern, line):
                    offenders.append(f"{path.relative_to(SRC)}:{n}: {what}: {line.strip()}")
    assert not offenders, "write through convprop.fileio instead:\n" + "\n".join(offenders)


def test_next_run_removes_temporaries_of_a_killed_writer(tmp_path):
    from convprop.fileio import ensure_dir

    stale = tmp_path / ".checkpoint.npz.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.txt.abc123.tmp"  # not one of ours: left alone
    other.write_text("x")
    ensure_dir(tmp_path, ("metrics.csv", "checkpoint.npz"))
    assert not stale.exists() and other.exists()


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\x00" * 40, b"PK\x05\x06" + b"x" * 30,
                                     b"not an archive at all"])
def test_open_npz_closes_its_file_when_numpy_fails(tmp_path, content):
    """A corrupt zip directory makes np.load fail after opening the file (and, given a
    path, leak its handle); open_npz owns the handle: NotAnArchive, and no unclosed file
    left for the garbage collector to warn about."""
    import gc
    import warnings

    p = tmp_path / "broken.npz"
    p.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(fileio.NotAnArchive) as info:
            with fileio.open_npz(p):
                pass
        del info
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_open_npz_tells_a_bare_npy_array_from_a_broken_archive(tmp_path):
    np.save(tmp_path / "bare.npy", np.arange(3))
    with pytest.raises(fileio.NotAnArchive) as info:
        with fileio.open_npz(tmp_path / "bare.npy"):
            pass
    assert info.value.exc is None and info.value.reason == "a bare .npy array"
    np.savez(tmp_path / "ok.npz", a=np.arange(3))
    with fileio.open_npz(tmp_path / "ok.npz") as archive:
        assert archive["a"].tolist() == [0, 1, 2]
