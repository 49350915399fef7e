"""`convprop plot features`: the numbers drawn are Network.trace's, and a PNG is written."""

import numpy as np
import pytest
from PIL import Image

from convprop import Network, save_model
from convprop.cli import main
from convprop.data.mnist import load_sample
from convprop.plots.features import feature_data, plot_features


@pytest.fixture
def net():
    return Network.from_spec("3c5-2s-4c3-2s", activation="tanh", seed=2, dtype="float64")


def test_feature_data_equals_trace(net):
    img = load_sample().test_x[0]  # a 7
    data = feature_data(net, img, label=7)
    x = img.astype(np.float64)[None]
    x *= 1.0 / 255  # the loader's scaling
    tr = net.trace(x, np.array([7]))
    assert data.label == 7 and data.predicted == int(tr.outputs[0].argmax())
    assert [lm.name for lm in data.layers] == ["conv1", "pool1", "conv2", "pool2", "out"]
    for lm, rec in zip(data.layers, tr.layers):
        assert np.array_equal(lm.a, rec.a[0]), lm.name
        want = rec.d_out[0] if rec.kind == "pool" else rec.delta[0]
        assert np.array_equal(lm.error, want), lm.name
        assert np.abs(lm.error).max() > 0, lm.name  # errors reach every layer
    assert np.array_equal(data.layers[0].kernels, net.params["conv1.weight"])
    assert data.layers[0].a.shape == (3, 24, 24) and data.layers[3].error.shape == (4, 5, 5)
    # equation (4): the output delta is (o - y) f'(z) for this one image
    o = tr.outputs[0]
    y = np.eye(10)[7]
    assert np.allclose(data.layers[-1].error, (o - y) * o * (1 - o))
    assert feature_data(net, img).label == data.predicted  # default label: the prediction


def test_plot_features_writes_a_png(net, tmp_path, capsys):
    data = load_sample()
    Image.fromarray(data.test_x[1]).save(tmp_path / "two.png")
    save_model(net, tmp_path / "m.npz")
    out = tmp_path / "f.png"
    assert main(["plot", "features", str(tmp_path / "m.npz"), str(tmp_path / "two.png"),
                 "--label", "2", "-o", str(out)]) == 0
    assert out.stat().st_size > 20_000
    with Image.open(out) as img:
        assert img.format == "PNG" and min(img.size) > 400
        assert len(np.unique(np.asarray(img.convert("L")))) > 50  # not a blank canvas
    assert "label 2" in capsys.readouterr().err


def test_plot_features_refuses_bad_label(net, tmp_path, capsys):
    save_model(net, tmp_path / "m.npz")
    Image.fromarray(load_sample().test_x[0]).save(tmp_path / "d.png")
    assert main(["plot", "features", str(tmp_path / "m.npz"), str(tmp_path / "d.png"),
                 "--label", "12", "-o", str(tmp_path / "f.png")]) == 2
    assert "label must be a digit" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_drawing_is_separate_from_the_numbers(net, tmp_path):
    data = feature_data(net, load_sample().test_x[2], label=1)
    plot_features(data, tmp_path / "p.png", title="t")
    assert (tmp_path / "p.png").stat().st_size > 20_000
