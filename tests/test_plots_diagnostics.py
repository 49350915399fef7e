"""Figures a reader can trust (issue 12): the gradient-flow figure (one colour per layer in
every column, a legend naming every layer, exact zeros drawn on the log rows), Figure 8's
coinciding f' lines, sweep titles naming the fixed settings, colour scales on the maps."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from convprop.plots.diagnostics import (
    ZERO_LABEL,
    diagnostics_figure,
    layer_colours,
    plot_diagnostics,
    zero_floor,
)
from convprop.training.diagnostics import write_diagnostics


def _run(tmp_path, name, layers, metrics, zero_from=None, iterations=(10, 20, 30, 40)):
    """A run folder with a diagnostics.csv: value = (layer index + 1) * 10^-k, and exact
    zeros for delta/grad from iteration ``zero_from`` on (a stalled run)."""
    rows = []
    for it in iterations:
        for li, layer in enumerate(layers):
            for m in metrics:
                v = (li + 1) * 10.0 ** -(3 + li)
                if m in ("saturated", "dead"):
                    v = 0.1 * (li + 1)
                if zero_from is not None and it >= zero_from and m in ("delta", "grad"):
                    v = 0.0
                rows.append((it, layer, m, v))
    d = tmp_path / name
    d.mkdir()
    write_diagnostics(d / "diagnostics.csv", rows)
    return d


@pytest.fixture
def runs(tmp_path):
    """A sigmoid-like run (saturated) and a relu-like run (dead) whose layers appear in a
    different order and which has a layer the first lacks; the second stalls at 30."""
    a = _run(tmp_path, "sig", ["conv1", "conv2", "out"], ["delta", "grad", "saturated"])
    b = _run(tmp_path, "relu", ["conv2", "conv1", "pool1", "out"], ["delta", "grad", "dead"],
             zero_from=30)
    return [a, b]


def _lines(ax):
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_each_layer_has_one_colour_in_every_column_and_the_legend_lists_all(runs):
    fig = diagnostics_figure(runs)
    try:
        colours = {}
        seen = set()
        for ax in fig.axes:
            for ln in _lines(ax):
                name = ln.get_label()
                seen.add(name)
                colours.setdefault(name, ln.get_color())
                assert ln.get_color() == colours[name], (name, ax.get_title())
        assert seen == {"conv1", "conv2", "pool1", "out"}
        assert len(set(colours.values())) == len(colours)  # distinct layers, distinct colours
        (legend,) = fig.legends
        entries = {t.get_text(): h.get_color() for t, h in
                   zip(legend.get_texts(), legend.legend_handles)}
        assert entries == colours  # the legend covers every layer, in the lines' colours
        # the relu column's conv1 line (drawn second there) has the legend's conv1 colour
        relu_delta = fig.axes[1]
        assert [ln.get_label() for ln in _lines(relu_delta)][:2] == ["conv2", "conv1"]
        assert _lines(relu_delta)[1].get_color() == entries["conv1"]
    finally:
        plt.close(fig)


def test_exact_zeros_are_drawn_on_a_floor_labelled_zero(runs):
    fig = diagnostics_figure(runs, metrics=["delta", "grad"])
    try:
        relu_delta = fig.axes[1]
        assert relu_delta.get_yscale() == "log"
        floor = zero_floor([np.array([1e-3, 2e-4, 3e-5, 4e-6, 0.0])])
        assert floor == pytest.approx(4e-7)
        for ln in _lines(relu_delta):
            x, y = ln.get_xdata(), ln.get_ydata()
            assert list(x) == [10, 20, 30, 40]  # every point, zeros included
            assert np.all(np.isfinite(y)) and np.all(y > 0)
            assert y[2] == y[3] == pytest.approx(floor)
        markers = [ln for ln in relu_delta.get_lines() if ln.get_label().endswith("= 0")]
        assert len(markers) == 4 and all(len(m.get_xdata()) == 2 for m in markers)
        lo, hi = relu_delta.get_ylim()
        assert lo < floor < hi
        assert ZERO_LABEL in [t.get_text() for t in relu_delta.texts]
        # the sigmoid column shares the row's floor line
        assert any(ln.get_label() == "_zero floor" for ln in fig.axes[0].get_lines())
    finally:
        plt.close(fig)


def test_layer_colours_follow_first_seen_order():
    data = [{"delta": {"conv1": 0, "out": 0}}, {"dead": {"conv2": 0, "conv1": 0}}]
    colours = layer_colours(data)
    assert list(colours) == ["conv1", "out", "conv2"]
    assert len(set(colours.values())) == 3


def test_plot_diagnostics_writes_a_png(runs, tmp_path):
    out = plot_diagnostics(runs, tmp_path / "fig" / "d.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------- the other figures a reader must trust


def _capture(monkeypatch, module, name):
    """Replace ``module.name`` (a figure-saving function) by one that keeps the figure."""
    kept = []
    real = getattr(module, name)

    def keep(fig, *args, **kwargs):
        kept.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(module, name, keep)
    return kept


def test_figure_8_derivative_lines_are_not_hidden_under_each_other(tmp_path, monkeypatch):
    from convprop.plots import figures

    kept = _capture(monkeypatch, figures, "_save")
    title, names = figures.PAPER_ACTIVATION_FIGURES["fig8_relu"]
    figures.activation_figure(names, tmp_path / "fig8.png", title)
    right = kept[0].axes[1]
    lines = [ln for ln in right.get_lines() if not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in lines] == names
    # where the curves coincide (f' = 1 for x > 0) each is still seen: distinct dash
    # patterns, each later line thinner and on top of the earlier ones
    ys = [ln.get_ydata() for ln in lines]
    xs = lines[0].get_xdata()
    assert all(np.array_equal(y[xs > 0], ys[0][xs > 0]) for y in ys)  # they do coincide
    widths = [ln.get_linewidth() for ln in lines]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)
    assert len({repr(ln._dash_pattern) for ln in lines}) == len(lines)  # distinct dashes
    zorders = [ln.get_zorder() for ln in lines]
    assert zorders == sorted(zorders) and len(set(zorders)) == len(zorders)
    assert right.get_legend() is not None


def test_sweep_figure_title_names_the_fixed_settings(tmp_path, monkeypatch):
    from convprop.experiments import report as ex_report
    from convprop.experiments import runs as ex_runs
    from convprop.plots import figures

    titles = []
    monkeypatch.setattr(figures, "rl_curves", lambda curves, path, title="": titles.append(title))
    runs = [ex_runs.Run(activation="tanh-linear:0.13", lr=lr, data="mnist", iterations=600, seed=s)
            for lr in (0.1, 0.5) for s in (0, 1)]
    assert ex_runs.fixed_settings(runs) == ("tanh-linear:0.13, batch 50, 600 iterations, "
                                         "float32, data mnist")
    ex_report.sweep_section(runs).figure(None, tmp_path, [])
    assert titles == ["Sweep: lr\ntanh-linear:0.13, batch 50, 600 iterations, float32, "
                      "data mnist"]
    other = [ex_runs.Run(activation=a, lr=0.1, data="sample", epochs=2) for a in ("relu", "tanh")]
    assert ex_runs.fixed_settings(other) == "lr 0.1, batch 50, 2 epochs, float32, data sample"


def test_feature_and_delta_maps_have_a_colour_scale(tmp_path, monkeypatch):
    import matplotlib.pyplot as pyplot

    from convprop import Network
    from convprop.plots.features import feature_data, plot_features

    kept = []
    real_close = pyplot.close
    monkeypatch.setattr(pyplot, "close", lambda fig=None: (kept.append(fig), real_close(fig)))
    net = Network.from_spec("2c3-2s-3c2", input_shape=(12, 12), dtype="float64", seed=0)
    image = np.random.default_rng(0).random((12, 12))
    plot_features(feature_data(net, image, 3), tmp_path / "f.png")
    (fig,) = [f for f in kept if f is not None]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    # conv1: kernels, maps a, δ; pool1: a, error; conv2: kernels, a, δ; (no pool2)
    maps = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    rows = {ax.get_ylabel() for ax in maps if ax.get_ylabel()}
    assert len(bars) == len(rows) >= 5, (len(bars), rows)
    deltas = [ax for ax in bars if ax.get_ylim()[0] < 0 < ax.get_ylim()[1]]
    assert deltas  # δ and kernel scales are centred on zero
