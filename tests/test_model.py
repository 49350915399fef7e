"""The model file: round trips, and a one-line ModelError for every malformed file."""

import json
import os
import zipfile

import numpy as np
import pytest

import convprop
from convprop import ModelError, Network, load_model, save_model
from convprop.cli import main
from convprop.data.mnist import load_sample
from convprop.interop.model import describe_model
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training
from convprop.training.trainer import error_rate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short real training run on the bundled sample, saved by `convprop train`'s code."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(spec="4c5-2s", activation="tanh", lr=0.5, iterations=40, dtype="float32",
                         seed=3, data="sample")
    summary = run_training(config, out)
    return out / "model.npz", summary


def test_train_save_load_evaluate_gives_the_identical_test_error(trained):
    path, summary = trained
    net = load_model(path)
    data = load_sample()
    assert error_rate(net, data.test_x, data.test_y) == summary["test_error"]
    trained_net = summary.network
    for name, value in trained_net.params.items():
        assert net.params[name].dtype == value.dtype == np.float32
        assert np.array_equal(net.params[name], value), name
    assert net.config["iterations"] == 40 and net.config["seed"] == 3
    assert net.summary["test_error"] == summary["test_error"]
    assert net.summary["status"] == "completed"


def test_save_load_round_trip_keeps_spec_activation_dtype_and_record(tmp_path):
    net = Network.from_spec("3c3-2m-4c2", activation="tanh-linear:0.13", seed=5,
                            dtype="float64", input_shape=(12, 12), n_outputs=4)
    save_model(net, tmp_path / "m.npz", config={"lr": 0.5}, summary={"note": np.float32(2)})
    back = load_model(tmp_path / "m.npz")
    assert (back.spec, back.activation.name, back.dtype.name, back.input_shape,
            back.n_outputs) == ("3c3-2m-4c2", "tanh-linear:0.13", "float64", (1, 12, 12), 4)
    assert back.config == {"lr": 0.5} and back.summary == {"note": 2.0}
    x = np.random.default_rng(0).random((3, 12, 12))
    assert np.array_equal(back.forward(x), net.forward(x))
    save_model(back, tmp_path / "again.npz")  # load -> save keeps the record
    assert load_model(tmp_path / "again.npz").config == {"lr": 0.5}


def test_every_parameter_is_stored_including_learnable_activation_ones(tmp_path, monkeypatch):
    """An activation with its own learnable parameters (e.g. PReLU's conv1.alpha) puts
    them into Network.params; the file stores and restores every entry."""
    from convprop.maths import layers

    original = layers.Conv.__init__

    def with_alpha(self, *args, **kwargs):
        original(self, *args, **kwargs)
        w = self.params["weight"]
        self.params["alpha"] = np.full(w.shape[0], 0.25, dtype=w.dtype)

    monkeypatch.setattr(layers.Conv, "__init__", with_alpha)
    net = Network.from_spec("2c3-2s", seed=1, input_shape=(8, 8))
    assert "conv1.alpha" in net.params
    net.params["conv1.alpha"] = [0.1, 0.7]
    save_model(net, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert sorted(z.files) == sorted(["__meta__"] + [f"param/{k}" for k in net.params])
    back = load_model(tmp_path / "m.npz")
    assert np.array_equal(back.params["conv1.alpha"], [0.1, 0.7])


def test_loading_is_exported_from_the_package():
    assert convprop.load_model is load_model and convprop.save_model is save_model


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    net = Network.from_spec("2c3", input_shape=(6, 6))
    save_model(net, tmp_path / "m.npz")
    save_model(net, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == ["m.npz"]


def test_info_reports_layers_weight_sharing_and_summary(trained, capsys):
    path, summary = trained
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4c5-2s" in out and "tanh" in out and "float32" in out
    # conv1: 1x28x28 -> 4x24x24 maps share 4*25 weights; fully connected: 784 * 2304
    assert f"{28 * 28 * 4 * 24 * 24:,}" in out and "100 shared kernel weights" in out
    assert f"{100 * summary['test_error']:.2f}%" in out and "iterations=40" in out
    report = describe_model(load_model(path))
    assert [r["params"] for r in report["layers"]] == [104, 0, 10 * 4 * 12 * 12 + 10]
    assert report["total_params"] == 104 + 5770
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["fully_connected_weights"] \
        == 28 * 28 * 4 * 24 * 24


# --------------------------------------------------------------------- malformed files

def _good(tmp_path) -> tuple:
    net = Network.from_spec("2c3-2s", seed=0, input_shape=(8, 8), dtype="float64")
    path = tmp_path / "good.npz"
    save_model(net, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return net, path, arrays


def _rewrite(tmp_path, arrays, meta_change=None, name="bad.npz"):
    arrays = dict(arrays)
    if meta_change is not None:
        meta = json.loads(str(arrays["__meta__"][()]))
        meta_change(meta)
        arrays["__meta__"] = np.array(json.dumps(meta))
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


class Evil:
    """Unpickling this would create a directory: proves loading never runs code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def malformed_cases(tmp_path):
    net, good, arrays = _good(tmp_path)
    raw = good.read_bytes()
    cases = {}

    def put(name, data):
        p = tmp_path / name
        p.write_bytes(data)
        return p

    cases["missing"] = (tmp_path / "nope.npz", "does not exist")
    cases["directory"] = (tmp_path, "is a directory")
    cases["empty"] = (put("empty.npz", b""), "not a convprop model file")
    cases["junk"] = (put("junk.npz", b"hello, I am not a model\n" * 20),
                     "not a convprop model file")
    cases["truncated"] = (put("trunc.npz", raw[: len(raw) // 2]), "trunc.npz")
    # a bit flipped inside a stored parameter: the zip's CRC check catches it
    idx = raw.index(b"param/out.weight") + 200
    cases["corrupt"] = (put("corrupt.npz", raw[:idx] + bytes([raw[idx] ^ 0xFF]) + raw[idx + 1:]),
                        "unreadable")
    np.save(tmp_path / "bare.npy", np.zeros(3))
    cases["bare npy"] = (tmp_path / "bare.npy", "bare .npy")
    cases["version 2"] = (_rewrite(tmp_path, arrays, lambda m: m.update(version=3), "v3.npz"),
                          "version 3 is not supported")
    cases["other format"] = (_rewrite(tmp_path, arrays, lambda m: m.update(format="x"),
                                      "fmt.npz"), "not a convprop model file")
    cases["no meta"] = (_rewrite(tmp_path, {k: v for k, v in arrays.items() if k != "__meta__"},
                                 name="nometa.npz"), "no '__meta__'")
    bad_json = dict(arrays, __meta__=np.array("{not json"))
    cases["bad json"] = (_rewrite(tmp_path, bad_json, name="json.npz"), "not valid JSON")
    cases["field missing"] = (_rewrite(tmp_path, arrays, lambda m: m.pop("spec"), "f.npz"),
                              "lacks field 'spec'")
    cases["field type"] = (_rewrite(tmp_path, arrays, lambda m: m.update(n_outputs="ten"),
                                    "ft.npz"), "'n_outputs'")
    cases["bad spec"] = (_rewrite(tmp_path, arrays, lambda m: m.update(spec="6x5"), "s.npz"),
                         "6x5")
    cases["bad activation"] = (_rewrite(tmp_path, arrays, lambda m: m.update(activation="swish"),
                                        "a.npz"), "swish")
    cases["param list"] = (_rewrite(tmp_path, arrays, lambda m: m["params"].pop(), "pl.npz"),
                           "parameter list")
    cases["missing array"] = (_rewrite(tmp_path, {k: v for k, v in arrays.items()
                                                  if k != "param/conv1.bias"}, name="ma.npz"),
                              "missing array 'param/conv1.bias'")
    cases["extra array"] = (_rewrite(tmp_path, dict(arrays, **{"param/conv9.weight": np.ones(2)}),
                                     name="ea.npz"), "unexpected array 'param/conv9.weight'")
    shape = dict(arrays, **{"param/conv1.weight": np.zeros((2, 1, 4, 4))})
    cases["wrong shape"] = (_rewrite(tmp_path, shape, name="ws.npz"), "has shape (2, 1, 4, 4)")
    dtype = dict(arrays, **{"param/out.bias": arrays["param/out.bias"].astype(np.float32)})
    cases["wrong dtype"] = (_rewrite(tmp_path, dtype, name="wd.npz"), "dtype float32")
    ints = dict(arrays, **{"param/out.bias": np.zeros(10, dtype=np.int64)})
    cases["integer array"] = (_rewrite(tmp_path, ints, name="wi.npz"), "dtype int64")
    nan = dict(arrays, **{"param/out.bias": np.full(10, np.nan)})
    cases["non-finite"] = (_rewrite(tmp_path, nan, name="nan.npz"), "non-finite")
    evil = np.empty(1, dtype=object)
    evil[0] = Evil(str(tmp_path / "pwned"))
    cases["pickled object"] = (_rewrite(tmp_path, dict(arrays, **{"param/out.bias": evil}),
                                        name="evil.npz"), "unreadable")
    return cases


CASES = ["missing", "directory", "empty", "junk", "truncated", "corrupt", "bare npy",
         "version 2", "other format", "no meta", "bad json", "field missing", "field type",
         "bad spec", "bad activation", "param list", "missing array", "extra array",
         "wrong shape", "wrong dtype", "integer array", "non-finite", "pickled object"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_model_file_gives_one_line_error_naming_file_and_fault(case, tmp_path,
                                                                         capsys):
    path, needle = malformed_cases(tmp_path)[case]
    with pytest.raises(ModelError) as exc:
        load_model(path)
    message = str(exc.value)
    assert "\n" not in message and needle in message and str(path) in message, message
    assert not (tmp_path / "pwned").exists()  # nothing from the file was executed
    for command in (["info", str(path)], ["evaluate", str(path), "--data", "sample"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err


def test_good_file_of_the_malformed_set_loads(tmp_path):
    net, good, _ = _good(tmp_path)
    assert np.array_equal(load_model(good).params["out.weight"], net.params["out.weight"])
    with zipfile.ZipFile(good) as z:  # plain, uncompressed npz: readable by any numpy
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
