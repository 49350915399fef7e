"""Property-based tests: whatever text or bytes a user feeds the parsers and readers,
only convprop's own one-line errors come out (never a ValueError, IndexError,
OverflowError, zlib.error, ... and never a warning)."""

import gzip
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convprop import ConvpropError, get_activation, parse_spec
from convprop.data.mnist import encode_idx, read_idx
from convprop.errors import CheckpointError, DataError, ModelFileError, SpecError
from convprop.interop.model import load_model
from convprop.training.checkpoint import load_checkpoint
from convprop.training.config import TrainConfig

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SPEC_PIECES = st.sampled_from(list("0123456789cCsSmM- x:.+\t٣") + ["c5", "2s", "6c", "-2m"])


def spec_like(min_size=0, max_size=12):
    return st.lists(SPEC_PIECES, min_size=min_size, max_size=max_size).map("".join)


def only(error_type, fn, *args, **kwargs):
    """Call fn; it may return or raise ``error_type`` with a one-line message, nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return fn(*args, **kwargs)
        except error_type as exc:
            assert str(exc) and "\n" not in str(exc)
            return None


# ------------------------------------------------------------------ spec strings
@FAST
@given(spec_like() | st.text(max_size=30))
def test_spec_parser_raises_only_spec_errors(text):
    layers = only(SpecError, parse_spec, text)
    if layers is not None:
        assert layers and all(kind in ("conv", "mean", "max") and a >= 1 for kind, a, _ in layers)


@FAST
@given(st.lists(st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 10**9 - 1), st.integers(1, 10**9 - 1)),
    st.tuples(st.sampled_from(["mean", "max"]), st.integers(1, 10**9 - 1), st.just(0))),
    min_size=1, max_size=6))
def test_spec_parser_reads_back_what_was_written(layers):
    text = "-".join(f"{a}c{b}" if kind == "conv" else f"{a}{'s' if kind == 'mean' else 'm'}"
                    for kind, a, b in layers)
    assert parse_spec(text) == layers


@FAST
@given(spec_like(min_size=1, max_size=8))
def test_network_from_any_spec_builds_or_raises_spec_error(text):
    from convprop import Network

    try:
        layers = parse_spec(text)
    except SpecError:
        return
    assume(all(a <= 64 and b <= 28 for _, a, b in layers))  # keep the networks small
    net = only(SpecError, Network, text, input_shape=(12, 12))
    if net is not None:
        assert net.forward(np.zeros((1, 12, 12))).shape == (1, 10)


# ------------------------------------------------------------------ activation names
NAMES = ["sigmoid", "tanh", "tanh-linear", "relu", "leaky-relu", "identity", "swish"]


@FAST
@given(st.one_of(
    st.text(max_size=25),
    st.builds(lambda n, sep, arg: n + sep + arg, st.sampled_from(NAMES),
              st.sampled_from(["", ":", "::", " : "]),
              st.text(st.sampled_from(list("0123456789.-+eE naif")), max_size=12))))
def test_activation_parser_raises_only_spec_errors(text):
    act = only(SpecError, get_activation, text)
    if act is not None:
        again = get_activation(act.name)  # the canonical name parses to the same thing
        assert again == act
        z = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
        with np.errstate(all="raise"):
            assert np.all(np.isfinite(act(z)))


@FAST
@given(st.sampled_from(["tanh-linear", "leaky-relu"]),
       st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_activation_parameter_round_trips(base, value):
    act = get_activation(f"{base}:{value!r}")
    assert get_activation(act.name) == act
    assert float(act.name.partition(":")[2]) == value


@FAST
@given(st.one_of(st.none(), st.integers(), st.floats(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_activation_parser_refuses_non_strings(value):
    with pytest.raises(SpecError):
        get_activation(value)


# ------------------------------------------------------------------ IDX reader
def valid_idx(draw_shape):
    return encode_idx(np.zeros(draw_shape, dtype=np.uint8))


idx_bytes = st.one_of(
    st.binary(max_size=300),
    # a plausible header, then anything
    st.builds(lambda nd, dims, rest: bytes([0, 0, 8, nd]) + b"".join(
        d.to_bytes(4, "big") for d in dims) + rest,
        st.integers(0, 4), st.lists(st.integers(0, 2**32 - 1), max_size=4),
        st.binary(max_size=200)),
    # a valid file with a few bytes flipped or cut
    st.builds(lambda shape, cut, flips: _damage(valid_idx(shape), cut, flips),
              st.lists(st.integers(0, 5), min_size=1, max_size=3),
              st.integers(0, 50), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                           max_size=3)),
)


def _damage(content, cut, flips):
    b = bytearray(content[: max(0, len(content) - cut)])
    for i, v in flips:
        if b:
            b[i % len(b)] = v
    return bytes(b)


@FAST
@given(content=idx_bytes, compress=st.sampled_from(["raw", "gz", "gz-cut"]),
       ndim=st.sampled_from([None, 1, 3]))
def test_idx_reader_raises_only_data_errors(tmp_path, content, compress, ndim):
    if compress == "gz":
        content = gzip.compress(content)
    elif compress == "gz-cut":
        z = gzip.compress(content)
        content = z[: len(z) // 2]
    path = tmp_path / "file-idx"
    path.write_bytes(content)
    arr = only(DataError, read_idx, path, ndim=ndim)
    if arr is not None:
        assert arr.dtype == np.uint8 and (ndim is None or arr.ndim == ndim)
        assert arr.flags.c_contiguous


@FAST
@given(st.lists(st.integers(0, 6), min_size=1, max_size=3), st.booleans())
def test_idx_reader_reads_back_what_was_written(tmp_path, shape, gz):
    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_idx(a)
    (tmp_path / "x").write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), a)


# ------------------------------------------------------------------ files and configs
@FAST
@given(st.binary(max_size=400))
def test_model_and_checkpoint_readers_raise_only_their_errors(tmp_path, content):
    p = tmp_path / "file.npz"
    p.write_bytes(content)
    assert only(ModelFileError, load_model, p) is None
    assert only(CheckpointError, load_checkpoint, p) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["spec", "activation", "lr", "batch_size", "epochs",
                                        "iterations", "seed", "dtype", "data", "loss",
                                        "optimizer", "init", "bogus"]),
                       json_values, max_size=3))
def test_training_config_from_any_json_validates_or_raises_convprop_error(d):
    """What a damaged checkpoint or summary could hold as its config."""
    json.dumps(d)  # only JSON-representable values
    only(ConvpropError, lambda: TrainConfig.from_dict(d).validate())
