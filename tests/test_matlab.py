"""MATLAB DeepLearnToolbox interop: import, export, round trip, and the export run in Octave.

The Octave tests need GNU Octave (`octave-cli`): without it they skip with the reason, and
fail instead under CONVPROP_REQUIRE_OCTAVE=1, which `.ci/run` sets (it installs Octave)."""

import subprocess

import numpy as np
import pytest
import scipy.io as sio

from conftest import PARITY_FILE, octave_cli
from convprop import ModelError, Network, load_model, save_model
from convprop.cli import main
from convprop.interop.matlab import export_matlab, images_from_toolbox, import_matlab


@pytest.fixture(scope="module")
def case():
    assert PARITY_FILE.exists(), f"parity case missing: {PARITY_FILE}"
    return sio.loadmat(PARITY_FILE)


def _cell(items, column=False):
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out.flat[i] = item
    return out


def toolbox_struct(case, newer=False, with_batch=False, rl=None):
    """The `cnn` struct cnnsetup builds, holding the parity case's (toolbox) weights."""
    k1, k2 = case["K1"], case["K2"]
    pool = ({"type": "s", "xscale": 2.0, "yscale": 2.0} if newer
            else {"type": "s", "scale": 2.0})
    first = {"type": "i"}
    if with_batch:  # what cnntrain leaves behind: the last batch in layers{1}.a{1}
        first["a"] = _cell([case["x"][:, :, :5]])
    layers = [
        first,
        {"type": "c", "outputmaps": 6.0, "kernelsize": 5.0,
         "k": _cell([_cell([k1[:, :, 0, j] for j in range(6)])]), "b": _cell([0.0] * 6)},
        dict(pool),
        {"type": "c", "outputmaps": 12.0, "kernelsize": 5.0,
         "k": _cell([_cell([k2[:, :, i, j] for j in range(12)]) for i in range(6)]),
         "b": _cell([0.0] * 12)},
        dict(pool),
    ]
    cnn = {"layers": _cell(layers, column=True), "ffW": case["ffW"].copy(),
           "ffb": case["ffb"].copy()}
    if rl is not None:
        cnn["rL"] = np.asarray(rl, dtype=float)[None, :]
    return cnn


@pytest.mark.parametrize("newer", [False, True])
@pytest.mark.parametrize("fmt", ["7", "6"])
def test_import_toolbox_struct_reproduces_the_toolbox_outputs(case, tmp_path, newer, fmt):
    path = tmp_path / "net.mat"
    sio.savemat(path, {"cnn": toolbox_struct(case, newer)}, do_compression=fmt == "7")
    net = import_matlab(path)
    assert (net.spec, net.activation.name, net.input_shape, net.n_outputs) == \
        ("6c5-2s-12c5-2s", "sigmoid", (1, 28, 28), 10)
    out = net.forward(images_from_toolbox(case["x"]))
    np.testing.assert_allclose(out, case["out"].T, rtol=0, atol=1e-12)


def test_import_reads_input_size_and_training_record_left_by_cnntrain(case, tmp_path):
    sio.savemat(tmp_path / "n.mat", {"trained": toolbox_struct(case, with_batch=True,
                                                                rl=[0.9, 0.5, 0.25])})
    net = import_matlab(tmp_path / "n.mat")  # the only network in the file, whatever its name
    assert net.input_shape == (1, 28, 28)
    assert net.summary == {"iterations": 3, "final_rL": 0.25}


def test_the_parity_file_holds_arrays_not_a_struct_and_says_so(case):
    """The parity .mat (tests/fixtures/parity) is a real Octave save of the toolbox's
    arrays (K1, K2, ffW, ...), not of the `cnn` struct: importing it names what it found."""
    with pytest.raises(ModelError) as exc:
        import_matlab(PARITY_FILE)
    message = str(exc.value)
    assert "\n" not in message and str(PARITY_FILE) in message
    assert "no DeepLearnToolbox network" in message and "K1, K2, ffW" in message


@pytest.mark.parametrize("spec,shape", [("6c5-2s-12c5-2s", (28, 28)), ("3c3-2s-4c2", (12, 12)),
                                        ("2c1", (5, 5)), ("4c5-2s", (22, 22))])
def test_export_then_import_gives_identical_parameters(tmp_path, spec, shape):
    net = Network.from_spec(spec, seed=7, input_shape=shape, dtype="float64", n_outputs=3)
    for k, v in net.params.items():  # non-zero biases too
        v += np.random.default_rng(len(k)).normal(0, 0.1, v.shape)
    for fmt in ("7", "6"):
        export_matlab(net, tmp_path / f"n{fmt}.mat", version=fmt)
        back = import_matlab(tmp_path / f"n{fmt}.mat")
        assert (back.spec, back.input_shape, back.n_outputs) == (spec, net.input_shape, 3)
        assert list(back.params) == list(net.params)
        for name in net.params:
            assert np.array_equal(back.params[name], net.params[name]), name


def test_cli_import_and_export(case, tmp_path, capsys):
    sio.savemat(tmp_path / "net.mat", {"cnn": toolbox_struct(case)})
    assert main(["import-matlab", str(tmp_path / "net.mat"), "-o", str(tmp_path / "m.npz")]) == 0
    net = load_model(tmp_path / "m.npz")
    assert net.config["format"] == "DeepLearnToolbox"
    assert main(["export-matlab", str(tmp_path / "m.npz"), "-o", str(tmp_path / "b.mat"),
                 "--mat-version", "6"]) == 0
    back = import_matlab(tmp_path / "b.mat")
    for name in net.params:
        assert np.array_equal(back.params[name], net.params[name])
    assert sio.loadmat(tmp_path / "b.mat")["__header__"].startswith(b"MATLAB 5.0")


def test_export_refuses_what_the_toolbox_cannot_run(tmp_path, capsys):
    for spec, act, needle in [("2c3-2m", "sigmoid", "max-pooling"),
                              ("2c3-2s", "relu", "activation 'relu'")]:
        net = Network.from_spec(spec, activation=act, input_shape=(8, 8))
        with pytest.raises(ModelError, match=needle):
            export_matlab(net, tmp_path / "x.mat")
        save_model(net, tmp_path / "m.npz")
        assert main(["export-matlab", str(tmp_path / "m.npz"), "-o", str(tmp_path / "x.mat")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "x.mat").exists()


def _malformed(case, tmp_path):
    def mat(name, change):
        cnn = toolbox_struct(case)
        change(cnn)
        sio.savemat(tmp_path / name, {"cnn": cnn})
        return tmp_path / name

    raw = (lambda p: (sio.savemat(p, {"cnn": toolbox_struct(case)}), p.read_bytes())[1])(
        tmp_path / "good.mat")
    (tmp_path / "junk.mat").write_text("not a mat file at all\n" * 10)
    (tmp_path / "half.mat").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.mat").write_bytes(b"")

    def layer(i, **kw):
        return lambda c: c["layers"].flat[i].update(kw)

    return [
        (tmp_path / "none.mat", "does not exist"),
        (tmp_path / "junk.mat", "not a readable MATLAB .mat file"),
        (tmp_path / "half.mat", "half.mat"),
        (tmp_path / "empty.mat", "not a readable MATLAB .mat file"),
        (mat("nolayers.mat", lambda c: c.pop("layers")), "has no field 'layers'"),
        (mat("kind.mat", layer(2, type="x")), "cnn.layers{3}.type: is 'x'"),
        (mat("first.mat", layer(0, type="c")), "input layer"),
        (mat("ksize.mat", layer(1, kernelsize=4.0)), "cnn.layers{2}.k{1}{1}: has size 5x5"),
        (mat("nmaps.mat", layer(3, outputmaps=11.0)), "cnn.layers{4}.k{1}: has 12 kernels"),
        (mat("scale.mat", layer(2, scale=2.5)), "cnn.layers{3}.scale: must be a positive"),
        (mat("bias.mat", layer(1, b=_cell([0.0] * 5))), "cnn.layers{2}.b: has 5 entries"),
        (mat("nan.mat", lambda c: c["ffW"].__setitem__((0, 0), np.nan)), "cnn.ffW: holds"),
        (mat("ffw.mat", lambda c: c.update(ffW=np.zeros((10, 191)))), "cnn.ffW: 191 columns"),
        (mat("ffb.mat", lambda c: c.update(ffb=np.zeros((9, 1)))), "cnn.ffb: has size 9x1"),
        (mat("str.mat", lambda c: c.update(ffb="ten")), "cnn.ffb: is not a real numeric"),
    ]


def test_malformed_mat_files_give_one_line_errors(case, tmp_path, capsys):
    for path, needle in _malformed(case, tmp_path):
        with pytest.raises(ModelError) as exc:
            import_matlab(path)
        assert needle in str(exc.value) and str(path) in str(exc.value), str(exc.value)
        assert main(["import-matlab", str(path), "-o", str(tmp_path / "out.npz")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err
        assert not (tmp_path / "out.npz").exists()


# ------------------------------------------------------------------------------ Octave

def run_octave(script: str, cwd) -> None:
    proc = subprocess.run([octave_cli(), "--no-gui", "--norc", "--quiet", "--eval", script],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout


# The toolbox's cnnff, written out here with Octave's convn: true convolution with the
# stored kernel, 'valid'; sigm; mean-pooling as convn with ones(scale)/scale^2 and
# subsampling by stride; the feature vector column-major, map after map; sigm(ffW*fv+ffb).
CNNFF = r"""
load('net.mat'); load('x.mat');
a = {x}; inputmaps = 1;
for l = 2 : numel(cnn.layers)
  L = cnn.layers{l};
  if strcmp(L.type, 'c')
    next = {};
    for j = 1 : L.outputmaps
      z = zeros(size(a{1}) - [L.kernelsize - 1, L.kernelsize - 1, 0]);
      for i = 1 : inputmaps
        z = z + convn(a{i}, L.k{i}{j}, 'valid');
      end
      next{j} = 1 ./ (1 + exp(-(z + L.b{j})));
    end
    a = next; inputmaps = L.outputmaps;
  elseif strcmp(L.type, 's')
    for j = 1 : inputmaps
      z = convn(a{j}, ones(L.scale) / (L.scale ^ 2), 'valid');
      a{j} = z(1 : L.scale : end, 1 : L.scale : end, :);
    end
  end
end
fv = [];
for j = 1 : numel(a)
  sa = size(a{j});
  fv = [fv; reshape(a{j}, sa(1) * sa(2), sa(3))];
end
o = 1 ./ (1 + exp(-(cnn.ffW * fv + repmat(cnn.ffb, 1, size(fv, 2)))));
save('-v7', 'out.mat', 'o');
"""


@pytest.mark.parametrize("spec,fmt", [("6c5-2s-12c5-2s", "7"), ("3c3-2s-5c4-2s", "6")])
def test_exported_network_runs_in_octave_with_equal_outputs(tmp_path, spec, fmt):
    net = Network.from_spec(spec, seed=11, dtype="float64")
    for k, v in net.params.items():
        v += np.random.default_rng(len(k)).normal(0, 0.2, v.shape)
    x = np.random.default_rng(0).random((7, 28, 28))
    export_matlab(net, tmp_path / "net.mat", version=fmt)
    sio.savemat(tmp_path / "x.mat", {"x": x.transpose(1, 2, 0)})  # x(r, c, n)
    run_octave(CNNFF, tmp_path)
    o = sio.loadmat(tmp_path / "out.mat")["o"]
    ours = net.forward(x)
    assert o.shape == (10, 7)
    np.testing.assert_allclose(o.T, ours, rtol=0, atol=1e-12)
    assert np.ptp(ours) > 0.1  # outputs that differ between images and classes


def test_struct_written_by_octave_imports_to_the_toolbox_outputs(case, tmp_path):
    """Octave builds the `cnn` struct from the parity case's arrays and saves it -v7 and
    -v6; importing either reproduces the toolbox's outputs."""
    script = f"""
    load('{PARITY_FILE}');
    cnn.layers = {{struct('type', 'i'),
      struct('type', 'c', 'outputmaps', 6, 'kernelsize', 5),
      struct('type', 's', 'scale', 2),
      struct('type', 'c', 'outputmaps', 12, 'kernelsize', 5),
      struct('type', 's', 'scale', 2)}};
    for j = 1:6, cnn.layers{{2}}.k{{1}}{{j}} = K1(:, :, 1, j); cnn.layers{{2}}.b{{j}} = 0; end
    for i = 1:6, for j = 1:12, cnn.layers{{4}}.k{{i}}{{j}} = K2(:, :, i, j); end, end
    for j = 1:12, cnn.layers{{4}}.b{{j}} = 0; end
    cnn.ffW = ffW; cnn.ffb = ffb;
    save('-v7', 'net7.mat', 'cnn'); save('-v6', 'net6.mat', 'cnn');
    """
    run_octave(script, tmp_path)
    for name in ("net7.mat", "net6.mat"):
        net = import_matlab(tmp_path / name)
        out = net.forward(images_from_toolbox(case["x"]))
        np.testing.assert_allclose(out, case["out"].T, rtol=0, atol=1e-12, err_msg=name)
