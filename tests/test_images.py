"""Images of digits -> MNIST form, and `convprop predict`."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from convprop import load_model
from convprop.cli import main
from convprop.data.mnist import load_sample
from convprop.interop.images import ImageError, load_digit, prepare
from convprop.training.config import TrainConfig
from convprop.training.jobs import run_training
from convprop.training.trainer import predict


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_training(TrainConfig(spec="6c5-2s", activation="tanh", iterations=150, lr=1.0,
                             dtype="float32", data="sample"), out)
    return out / "model.npz"


def draw_seven(size=(240, 300), ink=0, paper=255, mode="L", width=22):
    """A thick '7', dark ink on light paper by default, on a canvas of any size."""
    img = Image.new(mode, size, paper)
    d = ImageDraw.Draw(img)
    w, h = size
    d.line([(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.4 * w, 0.8 * h)], fill=ink,
           width=width)
    return img


def draw_digit(digit, size=(240, 300), ink=0, paper=255, mode="L"):
    """Simple drawings of 0, 1, 4 and 7 with a thick pen."""
    img = Image.new(mode, size, paper)
    d = ImageDraw.Draw(img)
    w, h = size
    pen = {"fill": ink, "width": 36}
    if digit == 0:
        d.ellipse([0.2 * w, 0.15 * h, 0.8 * w, 0.85 * h], outline=ink, width=36)
    elif digit == 1:
        d.line([(0.5 * w, 0.15 * h), (0.5 * w, 0.85 * h)], **pen)
    elif digit == 4:
        d.line([(0.55 * w, 0.15 * h), (0.25 * w, 0.6 * h), (0.75 * w, 0.6 * h)], **pen)
        d.line([(0.6 * w, 0.35 * h), (0.6 * w, 0.85 * h)], **pen)
    elif digit == 7:
        d.line([(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.4 * w, 0.8 * h)], **pen)
    return img


def centre_of_mass(a):
    a = a.astype(float)
    r = (a.sum(1) @ np.arange(a.shape[0])) / a.sum()
    c = (a.sum(0) @ np.arange(a.shape[1])) / a.sum()
    return r, c


def test_drawn_digit_is_fitted_into_20x20_and_centred_by_mass(tmp_path):
    draw_seven().save(tmp_path / "seven.png")
    d = load_digit(tmp_path / "seven.png")
    assert d.shape == (28, 28) and d.dtype == np.uint8
    rows, cols = np.nonzero(d > 0.25 * 255)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 >= 18  # fills the box
    r, c = centre_of_mass(d)
    assert abs(r - 13.5) <= 0.5 and abs(c - 13.5) <= 0.5
    assert d.max() == 255 and d[0].max() == 0 and d[:, 0].max() == 0  # light on dark


def test_dark_on_light_light_on_dark_colour_and_jpeg_agree(tmp_path):
    base = draw_seven()
    base.save(tmp_path / "dark.png")
    draw_seven(ink=255, paper=0).save(tmp_path / "light.bmp")
    draw_seven(mode="RGB", ink=(20, 20, 140), paper=(250, 240, 200)).save(tmp_path / "c.png")
    base.save(tmp_path / "dark.jpg", quality=90)
    ref = load_digit(tmp_path / "dark.png").astype(int)
    assert np.array_equal(load_digit(tmp_path / "light.bmp"), ref)
    for name in ("c.png", "dark.jpg"):
        other = load_digit(tmp_path / name).astype(int)
        assert np.abs(other - ref).mean() < 6, name


def test_aspect_ratio_is_kept(tmp_path):
    img = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(img).rectangle([140, 50, 160, 250], fill=0)  # a '1': 21 x 201
    img.save(tmp_path / "one.png")
    d = load_digit(tmp_path / "one.png")
    rows, cols = np.nonzero(d > 128)
    assert rows.max() - rows.min() + 1 == 20
    assert cols.max() - cols.min() + 1 <= 3


def test_transparent_png_and_small_image(tmp_path):
    img = Image.new("RGBA", (40, 50), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(10, 10), (30, 10), (16, 40)], fill=(0, 0, 0, 255), width=4)
    img.save(tmp_path / "t.png")
    d = load_digit(tmp_path / "t.png")
    assert d.max() == 255 and d[0].max() == 0


def test_mnist_images_as_png_pass_through_unchanged(tmp_path):
    data = load_sample()
    for i in range(20):
        Image.fromarray(data.test_x[i]).save(tmp_path / f"{i}.png")
        assert np.array_equal(load_digit(tmp_path / f"{i}.png"), data.test_x[i])
    forced = load_digit(tmp_path / "0.png", always_preprocess=True)
    assert forced.shape == (28, 28) and not np.array_equal(forced, data.test_x[0])


def test_predict_on_mnist_pngs_agrees_with_evaluate(model, tmp_path, capsys):
    data = load_sample()
    n = 60
    paths = []
    for i in range(n):
        paths.append(str(tmp_path / f"test{i:03d}.png"))
        Image.fromarray(data.test_x[i]).save(paths[-1])
    assert main(["predict", str(model), *paths, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    expected = predict(load_model(model), data.test_x[:n])
    assert [r["digit"] for r in results] == expected.tolist()
    assert [r["image"] for r in results] == paths
    assert all(len(r["scores"]) == 10 and np.argmax(r["scores"]) == r["digit"] for r in results)
    assert len(set(expected.tolist())) > 3  # a model that actually tells digits apart
    assert main(["predict", str(model), paths[0]]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{paths[0]}: {expected[0]}") and "9:" in line


def test_predict_preprocessed_mnist_mostly_agrees(model, tmp_path):
    """Re-doing MNIST's conversion on MNIST digits changes them little."""
    data = load_sample()
    net = load_model(model)
    x = data.test_x[:100]
    again = np.stack([prepare(img.astype(float), always_preprocess=True) for img in x])
    agree = np.mean(predict(net, again) == predict(net, x))
    assert agree >= 0.8, agree


def test_predict_reads_drawn_digits(model, tmp_path, capsys):
    """Digits drawn with Pillow, as dark-on-light PNG, colour JPEG on a large canvas and
    light-on-dark BMP, are read correctly by a model trained for 150 iterations."""
    paths, want = [], []
    for digit in (0, 1, 4, 7):
        draw_digit(digit).save(tmp_path / f"{digit}.png")
        draw_digit(digit, size=(480, 600), mode="RGB", ink=(30, 30, 160),
                   paper=(255, 250, 220)).save(tmp_path / f"{digit}.jpg", quality=85)
        draw_digit(digit, ink=255, paper=0).save(tmp_path / f"{digit}.bmp")
        paths += [str(tmp_path / f"{digit}.{ext}") for ext in ("png", "jpg", "bmp")]
        want += [digit] * 3
    assert main(["predict", str(model), *paths, "--json"]) == 0
    got = [r["digit"] for r in json.loads(capsys.readouterr().out)]
    assert got == want


def _bad_images(tmp_path):
    trunc = tmp_path / "half.png"
    draw_seven().save(tmp_path / "full.png")
    raw = (tmp_path / "full.png").read_bytes()
    trunc.write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    Image.new("RGB", (50, 50), (0, 0, 0)).save(tmp_path / "black.jpg")
    return [(tmp_path / "missing.png", "does not exist"), (tmp_path, "is a directory"),
            (trunc, "cannot decode"), (tmp_path / "empty.png", "empty file"),
            (tmp_path / "text.png", "not a readable image"),
            (tmp_path / "white.png", "no digit found"), (tmp_path / "black.jpg", "no digit")]


def test_bad_images_give_one_line_errors_naming_the_file(model, tmp_path, capsys):
    for path, needle in _bad_images(tmp_path):
        with pytest.raises(ImageError, match=needle):
            load_digit(path)
        good = str(tmp_path / "full.png")
        assert main(["predict", str(model), good, str(path)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
        assert str(path) in err and needle in err
        assert captured.out == ""  # nothing printed for the good image either


def test_predict_resizes_to_the_model_and_refuses_other_channel_counts(tmp_path, capsys):
    """Issue 14: a grey model of another size gets the MNIST conversion resized to its
    input; image files cannot feed a 2-channel model."""
    from convprop import Network, save_model
    from convprop.interop.images import load_image_for

    net = Network.from_spec("2c3", input_shape=(8, 8))
    save_model(net, tmp_path / "m.npz")
    draw_seven().save(tmp_path / "s.png")
    small = load_image_for(net, tmp_path / "s.png")
    assert small.shape == (8, 8) and small.dtype == np.uint8 and small.max() > 100
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "s.png")]) == 0
    save_model(Network.from_spec("2c3", input_shape=(2, 8, 8)), tmp_path / "m2.npz")
    assert main(["predict", str(tmp_path / "m2.npz"), str(tmp_path / "s.png")]) == 2
    assert "1 (grey) or 3 (RGB) channels" in capsys.readouterr().err


def test_cli_lists_the_model_commands_and_never_shows_a_traceback(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("predict", "info", "import-matlab", "export-matlab", "plot"):
        assert command in out
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run([sys.executable, "-m", "convprop", "predict", str(tmp_path / "m.npz"),
                           str(tmp_path / "junk.png")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
