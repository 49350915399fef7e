"""Every training option, declared once: :class:`TrainConfig`.

Each field of :class:`TrainConfig` carries, in its ``metadata`` (see :func:`option`):

- ``help``: the help text (``convprop train --help``, ``convprop sweep --help``);
- ``parse``: text -> value, raising ConvpropError (a CLI word, a comma-list item);
- ``check``: value -> None, raising ConvpropError (:meth:`TrainConfig.validate`);
- ``axis``: whether ``convprop sweep`` takes a comma list of it (a grid axis);
- ``identity``: whether it tells runs apart (run names; a sweep reuses a finished run
  only when every identity option matches);
- ``column``: whether it is a column of a sweep's ``summary.csv``;
- ``estimator``: whether it is a parameter of the scikit-learn ``CNNClassifier``;
- ``setting``: whether runs that differ in it are different settings of a sweep's table
  (not the seed, nor diagnostics);
- ``name``: how it is spelled in a run's folder name (see
  :func:`convprop.experiments.runs.run_name`); ``None``: ``name=value`` when not the
  default.

Everything else is derived from these fields: the flags of ``convprop train`` and
``convprop sweep`` (:mod:`convprop.cli.options`), the sweep grid and run names
(:mod:`convprop.experiments.runs`), the columns of ``summary.csv``
(:mod:`convprop.experiments.sweep`) and the estimator's parameters
(:mod:`convprop.interop.sklearn`).  A new option is one new field here.

``dtype`` defaults to float32 for training (the toolbox case and ``Network.from_spec``
use float64; this config is the authority for training runs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from convprop.errors import ConvpropError
from convprop.maths.activations import format_number, get_activation
from convprop.maths.losses import LOSSES, get_loss
from convprop.maths.network import DEFAULT_SPEC, DTYPES, INITS, parse_spec
from convprop.maths.optim import (
    DEFAULT_BETAS,
    DEFAULT_MOMENTUM,
    OPTIMIZERS,
    check_learning_rate,
    get_optimizer,
)

SAMPLE_EPOCHS = 6  # 6 x 10,000 sample images = as many images as one epoch of full MNIST


# --------------------------------------------------------------------------- parsers


def parse_positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ConvpropError(f"expected a positive integer, got {text!r}")
    return value


def parse_non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ConvpropError(f"expected an integer >= 0, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConvpropError(f"expected an integer, got {text!r}") from None


def parse_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConvpropError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConvpropError(f"expected a positive finite number, got {text!r}")
    return value


def parse_unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConvpropError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise ConvpropError(f"expected a number in [0, 1), got {text!r}")
    return value


def parse_betas(text: str) -> tuple[float, float]:
    parts = str(text).split(",")
    if len(parts) != 2:
        raise ConvpropError(f"expected two numbers B1,B2 in [0, 1), got {text!r}")
    b1, b2 = (parse_unit_interval(s.strip()) for s in parts)
    return b1, b2


def parse_text(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise ConvpropError("expected a value, got an empty text")
    return text


def parse_as_given(text: str) -> str:
    """The text itself (the data source: ``load_data`` checks it and names the fault)."""
    return str(text)


def parse_activation(text: str) -> str:
    return get_activation(str(text)).name


def parse_spec_text(text: str) -> str:
    parse_spec(str(text))
    return str(text)


def _choice(name: str, known) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = parse_text(text)
        if text not in known:
            raise ConvpropError(f"unknown {name} {text!r} (known: {', '.join(known)})")
        return text
    return parse


# --------------------------------------------------------------------------- checks


def _check_positive_int(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConvpropError(f"{what} must be a positive integer, got {value!r}")
    return check


def _check_optional_positive_int(what: str) -> Callable[[Any], None]:
    inner = _check_positive_int(what)

    def check(value: Any) -> None:
        if value is not None:
            inner(value)
    return check


def _check_seed(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConvpropError(f"seed must be a non-negative integer, got {value!r}")


def _check_lr(value: Any) -> None:
    if isinstance(value, bool):
        raise ConvpropError(f"learning rate must be a positive finite number, got {value!r}")
    check_learning_rate(value)


def _check_string(what: str, known=None) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, str):
            raise ConvpropError(f"{what} must be a string, got {value!r}")
        if known is not None and value not in known:
            raise ConvpropError(f"unknown {what} {value!r} (known: {', '.join(known)})")
    return check


def _check_spec(value: Any) -> None:
    _check_string("spec")(value)
    parse_spec(value)


def _check_activation(value: Any) -> None:
    from convprop.maths.activations import Activation

    if not isinstance(value, (str, Activation)):
        raise ConvpropError(f"activation must be a string, got {value!r}")
    get_activation(value)


def _check_dtype(value: Any) -> None:
    if any(value is t for t in (np.float32, np.float64)):
        return
    _check_string("dtype", DTYPES)(value)


def _check_data(value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConvpropError(f"data must be 'sample', 'mnist', a directory or a .npz file, "
                            f"got {value!r}")


def _check_loss(value: Any) -> None:
    _check_string("loss")(value)
    get_loss(value)


def _check_unit(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                or not 0 <= value < 1:
            raise ConvpropError(f"{what} must be a number in [0, 1), got {value!r}")
    return check


def _check_betas(value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConvpropError(f"betas must be two numbers in [0, 1), got {value!r}")
    for b in value:
        _check_unit("each of betas")(b)


def _check_diagnostics(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConvpropError(f"diagnostics interval must be an integer >= 0, got {value!r}")


# --------------------------------------------------------------------------- options


def option(default: Any, help: str, *, parse: Callable[[str], Any],
           check: Callable[[Any], None] | None = None, metavar: str | None = None,
           choices: tuple[str, ...] | None = None, axis: bool = True, identity: bool = True,
           column: bool = True, estimator: bool = True, name: Any = None,
           group: str | None = None, sweep_flag: str | None = None,
           sweep_help: str | None = None, setting: bool = True,
           default_text: str | None = None) -> Any:
    """A :class:`TrainConfig` field with everything derived from it (see the module
    docstring).  ``group``: options of one group are mutually exclusive on the command
    line; ``sweep_flag``: the sweep's flag when not ``--<name>``; ``default_text``: the
    default in words where the value alone does not say it; ``setting=False``: runs
    that differ only in it share a setting of a sweep's table (the seed, diagnostics)."""
    meta = dict(help=help, parse=parse, check=check, metavar=metavar, choices=choices,
                axis=axis, identity=identity, column=column, estimator=estimator, name=name,
                group=group, sweep_flag=sweep_flag, sweep_help=sweep_help, setting=setting,
                default_text=default_text)
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable")
    return field(default=default, metadata=meta)


def _name_length(value: Any, config: dict[str, Any]) -> str:
    if config.get("iterations") is not None:
        return f"it{config['iterations']}"
    return f"ep{config['epochs'] if config.get('epochs') is not None else 1}"


@dataclass
class TrainConfig:
    """Every option of a training run (the flags of ``convprop train``).  Field order is
    the order of ``summary.csv``'s columns and of the sweep grid (seed innermost)."""

    activation: str = option(
        "sigmoid", "conv-layer activation: sigmoid, tanh, tanh-linear:K, relu, leaky-relu:A; "
        "learned: prelu:map|layer[:A0], tanh-linear-learned:map|layer[:K0]",
        parse=parse_activation, check=_check_activation, metavar="NAME",
        name=lambda v, c: v.replace(":", "="),
        sweep_help="activations, e.g. tanh-linear:0,0.13 or sigmoid,relu (repeatable)")
    lr: float = option(1.0, "learning rate", parse=parse_positive_float, check=_check_lr,
                       name=lambda v, c: f"lr{format_number(v)}",
                       sweep_help="learning rates, e.g. 0.1,1.5,2")
    batch_size: int = option(50, "images per iteration", parse=parse_positive_int,
                             check=_check_positive_int("batch size"),
                             name=lambda v, c: f"bs{v}")
    spec: str = option(
        DEFAULT_SPEC, f"architecture, toolbox notation ({DEFAULT_SPEC}: conv 6 maps 5x5, "
        f"mean-pool 2, conv 12 maps 5x5, mean-pool 2; 'm' = max-pool)",
        parse=parse_spec_text, check=_check_spec, name=lambda v, c: v)
    seed: int = option(0, "random seed", parse=parse_non_negative_int, check=_check_seed,
                       name="last", sweep_flag="--seeds", setting=False,
                       sweep_help="seeds: 0-4, 0,2,5 or 0-2,7")
    iterations: int | None = option(
        None, "number of mini-batches instead of epochs", parse=parse_positive_int,
        check=_check_optional_positive_int("iterations"), group="length", name=_name_length)
    epochs: int | None = option(
        None, "passes over the training set",
        default_text=f"{SAMPLE_EPOCHS} on the bundled 10,000-image sample (as many images as "
                     f"one epoch of full MNIST), else 1",
        parse=parse_positive_int, check=_check_optional_positive_int("epochs"),
        group="length", column=False, name=lambda v, c: None)
    dtype: str = option("float32", "floating-point precision", parse=_choice("dtype", DTYPES),
                        check=_check_dtype, choices=DTYPES, name=lambda v, c: v)
    data: str | None = option(
        None, "data set: 'sample' (bundled, 10k train / 2k test), 'mnist' (full MNIST from "
        "the cache, see `convprop data fetch`), or a directory holding the four MNIST files",
        default_text="full MNIST if cached, else the sample",
        parse=parse_as_given, check=_check_data, metavar="sample|mnist|DIR", estimator=False,
        name="data")
    loss: str = option(
        "mse", "mse: the paper's squared error on sigmoid outputs; cross-entropy: softmax + "
        "cross-entropy on linear outputs", parse=_choice("loss", tuple(LOSSES)),
        check=_check_loss, choices=tuple(LOSSES), column=False, name="bare")
    optimizer: str = option(
        "sgd", "sgd (the paper's), momentum (see --momentum) or adam (see --betas; try "
        "--lr 0.001)", parse=_choice("optimizer", tuple(OPTIMIZERS)),
        check=_check_string("optimizer", tuple(OPTIMIZERS)), choices=tuple(OPTIMIZERS),
        column=False, name="bare")
    init: str = option(
        "dlt", "dlt: the toolbox's uniform ±sqrt(6/(fan_in+fan_out)); he: uniform "
        "±sqrt(6/fan_in) (He et al. 2015)", parse=_choice("init", INITS),
        check=_check_string("init", INITS), choices=INITS, column=False, name="bare")
    # beyond the paper: optimiser settings and gradient-flow diagnostics (0 = off)
    momentum: float = option(DEFAULT_MOMENTUM, "momentum coefficient of --optimizer momentum",
                             parse=parse_unit_interval, check=_check_unit("momentum"),
                             column=False)
    betas: tuple[float, float] = option(
        DEFAULT_BETAS, "Adam's decay rates, as PyTorch", parse=parse_betas,
        check=_check_betas, metavar="B1,B2", axis=False, column=False)
    diagnostics: int = option(
        0, "every N iterations record per-layer gradient flow (mean |delta|, mean |weight "
        "gradient|, saturated and dead units) into diagnostics.csv (0: off)",
        parse=parse_non_negative_int, check=_check_diagnostics, metavar="N", axis=False,
        column=False, estimator=False, setting=False)

    def validate(self) -> TrainConfig:
        """Check each value (each field's ``check``); raise ConvpropError naming the first
        bad one.  Normalises the activation's name and ``betas`` (a list after JSON)."""
        for f in fields(self):
            check = f.metadata.get("check")
            if check is not None:
                check(getattr(self, f.name))
        if self.epochs is not None and self.iterations is not None:
            raise ConvpropError("give --epochs or --iterations, not both")
        self.activation = get_activation(self.activation).name
        self.betas = tuple(self.betas)
        get_optimizer(self.optimizer, self.lr, self.momentum, self.betas)
        return self

    def total_iterations(self, n_train: int) -> int:
        if self.iterations is not None:
            return self.iterations
        return (self.epochs if self.epochs is not None else 1) * (n_train // self.batch_size)

    def with_default_length(self, data_name: str | None) -> TrainConfig:
        """Neither epochs nor iterations given: :data:`SAMPLE_EPOCHS` epochs on the bundled
        sample (as many images as one epoch of full MNIST), else one epoch."""
        if self.epochs is None and self.iterations is None and data_name == "sample":
            return replace(self, epochs=SAMPLE_EPOCHS)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConvpropError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def options(config_class: type = TrainConfig) -> list[Field]:
    """The declared options of ``config_class``, in order."""
    return [f for f in fields(config_class) if "parse" in f.metadata]


def default_of(f: Field) -> Any:
    return f.default if f.default is not MISSING else None


def value_text(value: Any) -> str:
    """An option's value as text: floats shortest (0.13, 1), tuples as comma lists."""
    if isinstance(value, (tuple, list)):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, float):
        return format_number(value)
    return str(value)
