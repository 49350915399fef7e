"""Colour input that grey conversion cannot pass: three classes of the *same*
luminance (ITU-R 601 luma 0.4) that differ only in hue, each image scaled by a random
brightness.  Converted to grey, the classes have one distribution (chance level, 2/3
wrong); in colour the network learns them.  The data travel as a real ``.npz`` file
through ``load_data`` and ``run_training``."""

from __future__ import annotations

import numpy as np

from convprop import TrainConfig, run_training
from convprop.data import load_data
from convprop.data.base import Dataset

LUMA = np.array([0.299, 0.587, 0.114])
Y = 0.4


def hues() -> np.ndarray:
    """(3, 3) RGB colours of luma exactly Y: red-ish, blue-ish, green-ish."""
    cols = [(r, (Y - LUMA[0] * r - LUMA[2] * b) / LUMA[1], b)
            for r, b in [(0.9, 0.1), (0.1, 0.9), (0.2, 0.2)]]
    return np.array(cols)


def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8, 3) channels-last floats in [0, 1], labels 0..2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    s = rng.uniform(0.5, 1.0, (n, 1, 1, 1)) * rng.uniform(0.8, 1.0, (n, 8, 8, 1))
    return (hues()[y][:, None, None, :] * s).astype(np.float32), y


CONFIG = dict(spec="4c3-2s-6f", activation="tanh", lr=0.5, batch_size=20, epochs=5,
              loss="cross-entropy", seed=0)


def test_hues_have_equal_luminance():
    np.testing.assert_allclose(hues() @ LUMA, Y, atol=1e-12)
    assert np.all((hues() >= 0) & (hues() <= 1))


def test_colour_classes_of_equal_luminance_are_learned_and_grey_cannot(tmp_path):
    tx, ty = make(600, 0)
    vx, vy = make(300, 1)
    path = tmp_path / "hue.npz"
    np.savez(path, x_train=tx, y_train=ty, x_test=vx, y_test=vy,
             class_names=np.array(["red", "blue", "green"]))
    data = load_data(str(path))
    assert data.input_shape == (3, 8, 8) and data.class_names == ("red", "blue", "green")
    colour = run_training(TrainConfig(**CONFIG), dataset=data)
    assert colour.network.input_shape == (3, 8, 8)
    assert colour["test_error"] < 0.05, colour["test_error"]

    def grey(x):
        return np.einsum("nchw,c->nhw", x, LUMA).astype(np.float32)

    flat = Dataset(grey(data.train_x), data.train_y, grey(data.test_x), data.test_y,
                   name="grey", description="grey", n_classes=3)
    grey_run = run_training(TrainConfig(**CONFIG), dataset=flat)
    assert grey_run["test_error"] > 0.45, grey_run["test_error"]  # chance is 2/3


def test_plot_features_of_a_colour_model(tmp_path):
    from PIL import Image

    from convprop.cli import main
    from convprop.interop.model import save_model
    from convprop.maths.network import Network
    from convprop.plots.features import feature_data

    net = Network.from_spec("4c3-2s-6f", input_shape=(3, 8, 8), n_outputs=3, seed=1)
    net.class_names = ["red", "blue", "green"]
    save_model(net, tmp_path / "m.npz")
    x, _ = make(1, 5)
    Image.fromarray((x[0] * 255).round().astype(np.uint8)).resize((16, 16)).save(
        tmp_path / "c.png")
    assert main(["plot", "features", str(tmp_path / "m.npz"), str(tmp_path / "c.png"),
                 "-o", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000
    img = (x[0].transpose(2, 0, 1) * 255).round().astype(np.uint8)
    data = feature_data(net, img, 2)
    assert data.image.shape == (3, 8, 8)
    assert [lm.kind for lm in data.layers] == ["conv", "pool", "fc", "dense"]
    assert data.layers[0].kernels.shape == (4, 3, 3, 3)
    assert data.layers[2].a.shape == (6,)


def test_export_matlab_refuses_colour_and_fc_in_one_line(tmp_path):
    import pytest

    from convprop.errors import ModelError
    from convprop.interop.matlab import export_matlab
    from convprop.maths.network import Network

    net = Network.from_spec("4c3-2s-6f", input_shape=(3, 8, 8), n_outputs=3)
    with pytest.raises(ModelError) as err:
        export_matlab(net, tmp_path / "n.mat")
    msg = str(err.value)
    assert "3 input channels" in msg and "hidden fully connected layers (fc1)" in msg
    assert "\n" not in msg and not (tmp_path / "n.mat").exists()
