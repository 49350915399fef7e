"""Runs and grids: the sweep side of :class:`~convprop.training.config.TrainConfig`.

A **run** (:class:`Run`) is one ``convprop train`` job: every training option fixed,
seed included, the data source resolved (``sample``, ``mnist`` or an absolute folder).
A **grid** (:func:`parse_grid`) expands comma lists such as
``--activation tanh-linear:0,0.05,0.13 --lr 0.1,2 --seeds 0-4`` into runs, in a fixed
order (the config's field order, seed innermost).  Each run's folder name
(:func:`run_name`) is spelled from its options, so the same run always lands in the same
folder and two sweeps that share it can share the result.

Nothing here names an option: the axes, the names and the labels come from the fields of
``TrainConfig`` and their metadata, so a new option needs no edit here.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import Field
from pathlib import Path
from typing import Any

from convprop.errors import ConvpropError
from convprop.training import config as cfg
from convprop.training.config import default_of, value_text

MAX_RUNS = 1000  # a larger grid needs --force


def option_fields() -> list[Field]:
    """The options of the current config class (looked up at call time)."""
    return cfg.options(cfg.TrainConfig)


def _plain(value: Any) -> Any:
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


class Run:
    """One training job: a value for every option of the config (missing ones take their
    defaults).  Immutable and hashable; ``run.lr`` reads an option.  ``options=`` (pairs)
    is accepted for records written by earlier versions."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        values = dict(values)
        for k, v in values.pop("options", ()) or ():
            values[k] = v
        known = {f.name: default_of(f) for f in option_fields()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConvpropError(f"unknown training option(s): {', '.join(unknown)}")
        merged = {**known, **values}
        if merged["data"] is None:
            merged["data"] = "sample"
        if isinstance(merged["lr"], int) and not isinstance(merged["lr"], bool):
            merged["lr"] = float(merged["lr"])
        object.__setattr__(self, "_values", tuple((k, _plain(merged[k])) for k in known))

    def __getattr__(self, name: str) -> Any:
        for k, v in object.__getattribute__(self, "_values"):
            if k == name:
                return v
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Run is immutable; use run.replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Run({self.name})"

    def __reduce__(self):  # pickling for worker processes
        return (_rebuild, (self.to_dict(),))

    def replace(self, **changes: Any) -> Run:
        return Run(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def config(self):
        """The run's TrainConfig, validated."""
        return cfg.TrainConfig.from_dict(dict(self._values)).validate()

    @classmethod
    def from_config(cls, config: Any) -> Run:
        """The run of a TrainConfig (``data`` None: full MNIST if cached, else the sample)."""
        d = config.to_dict()
        d["data"] = parse_data(d["data"])[0]
        return cls(**d)

    @property
    def data_tag(self) -> str:
        return data_tag(self.data)

    @property
    def name(self) -> str:
        return run_name(self.to_dict())

    @property
    def setting(self) -> Run:
        """The run with every option that does not change its numbers' meaning (seed,
        diagnostics: fields marked ``setting=False``) at its default."""
        return Run(**{**self.to_dict(), **{f.name: default_of(f) for f in option_fields()
                                           if not f.metadata.get("setting", True)}})


def _rebuild(values: dict[str, Any]) -> Run:
    return Run(**values)


def data_tag(data: str | None) -> str:
    if data in ("sample", "mnist", None):
        return data or "sample"
    return "dir-" + hashlib.sha1(str(data).encode()).hexdigest()[:8]


def option_text(value: Any) -> str:
    return value_text(value).replace("/", "-")


def run_name(values: dict[str, Any]) -> str:
    """Folder name from every identity option, in field order:
    ``tanh-linear=0.13_lr0.1_bs50_6c5-2s-12c5-2s_it600_float32_mnist_seed0``.  Options whose
    metadata ``name`` is a function are always spelled (by it), ``"bare"`` ones as their
    value when not the default, the others as ``name=value`` when not the default (sorted
    by name); the seed last."""
    parts, bare, extra, last = [], [], [], []
    for f in option_fields():
        m, v = f.metadata, values.get(f.name, default_of(f))
        how = m.get("name")
        if not m.get("identity", True):
            continue
        if callable(how):
            part = how(v, values)
            if part is not None:
                parts.append(part)
        elif how == "data":
            parts.append(data_tag(v))
        elif how == "last":
            last.append(f"{f.name}{v}")
        elif v != default_of(f) and _plain(v) != _plain(default_of(f)):
            if how == "bare":
                bare.append(str(v))
            else:
                extra.append(f"{f.name}={option_text(v)}")
    return "_".join(parts + [e.replace(":", "=") for e in bare + sorted(extra)] + last)


def axis_label(name: str, value: Any) -> str:
    if name == "lr":
        return f"lr {value_text(value)}"
    if name == "activation":
        return str(value)
    if name == "data":
        return data_tag(value)
    return f"{name.replace('_', ' ')} {option_text(value)}"


def describe(setting: Run, axes: Sequence[str]) -> str:
    """Label of a setting from the options that vary (``k=0.13``-style for one axis)."""
    return ", ".join(axis_label(a, getattr(setting, a)) for a in axes) or setting.activation


def varying_axes(runs: Iterable[Run]) -> list[str]:
    """The options (seed and others outside a setting aside) that take more than one value
    among ``runs``."""
    runs = list(runs)
    return [f.name for f in option_fields() if f.metadata.get("setting", True)
            and len({getattr(r, f.name) for r in runs}) > 1]


_TITLE = {"lr": lambda v: f"lr {value_text(v)}", "data": lambda v: f"data {data_tag(v)}",
          "iterations": lambda v: f"{v} iterations",
          "epochs": lambda v: f"{v} epoch" + ("s" if v != 1 else ""),
          "batch_size": lambda v: f"batch {v}", "activation": str, "dtype": str}


def fixed_settings(runs: Iterable[Run]) -> str:
    """The settings every run shares, for a figure title: ``lr 0.1, data mnist, 600
    iterations, batch 50, float32`` (what varies is in the legend instead).  The
    options above always appear; any other shared option only where it is not its
    default."""
    runs = list(runs)
    if not runs:
        return ""
    vary, r, parts = set(varying_axes(runs)), runs[0], []
    length = "iterations" if r.iterations is not None else "epochs"
    for f in option_fields():
        if not f.metadata.get("setting", True) or f.name in vary:
            continue
        v = getattr(r, f.name)
        if f.name in ("iterations", "epochs"):
            if f.name == length and not vary & {"iterations", "epochs"}:
                parts.append(_TITLE[f.name](v if v is not None else 1))
        elif f.name in _TITLE:
            parts.append(_TITLE[f.name](v))
        elif v != default_of(f) and _plain(v) != _plain(default_of(f)):
            parts.append(axis_label(f.name, v))
    return ", ".join(parts)


# --------------------------------------------------------------------------- grids


def _items(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",")]
    if not text or not str(text).strip() or any(not t for t in items):
        raise ConvpropError(f"--{what}: empty value in {text!r} (give a comma list)")
    return items


def parse_floats(text: str, what: str = "lr") -> list[float]:
    """``"0.1,1.5,2"`` -> [0.1, 1.5, 2.0]; every value positive and finite."""
    out = []
    for item in _items(text, what):
        try:
            value = float(item)
        except ValueError:
            raise ConvpropError(f"--{what}: {item!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ConvpropError(f"--{what}: {item!r} must be positive and finite")
        out.append(value)
    return _unique(out)


def parse_ints(text: str, what: str = "seeds", minimum: int = 0,
               limit: int = MAX_RUNS) -> list[int]:
    """``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` -> ints >= ``minimum`` in the order given;
    more than ``limit`` values is an error (checked before expanding a range)."""
    out: list[int] = []
    for item in _items(text, what):
        lo, sep, hi = item.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ConvpropError(f"--{what}: {item!r} is not an integer or a range "
                                f"like 0-4") from None
        if a < minimum or b < a:
            raise ConvpropError(f"--{what}: {item!r} must be integers >= {minimum}, "
                                f"ranges low-high")
        if len(out) + b - a + 1 > limit:
            raise ConvpropError(f"--{what}: {text!r} gives more than {limit} values")
        out.extend(range(a, b + 1))
    return _unique(out)


def parse_activations(texts: str | Sequence[str]) -> list[str]:
    """``"tanh-linear:0,0.05,0.13"`` -> three activations; ``"sigmoid,relu"`` -> two;
    ``"relu,leaky-relu:0.01,0.05"`` -> three (a bare number is another parameter of the
    activation before it).  Several texts (the option repeated) are concatenated."""
    from convprop.maths.activations import get_activation

    out = []
    for text in [texts] if isinstance(texts, str) else texts:
        base = None
        for item in _items(text, "activation"):
            if base is not None and _is_number(item):
                item = f"{base}:{item}"  # another parameter of the same activation
            base = item.partition(":")[0] if ":" in item else None
            out.append(get_activation(item).name)
    return _unique(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_data(text: str | None) -> list[str]:
    """``--data`` values: ``sample``, ``mnist``, directories or ``.npz`` files (made
    absolute); none
    given: full MNIST if cached, else the sample."""
    from convprop.data.mnist import mnist_in_cache

    if text is None:
        return ["mnist" if mnist_in_cache() else "sample"]
    out = []
    for item in _items(text, "data"):
        if item in ("sample", "mnist"):
            out.append(item)
        else:
            p = Path(item).expanduser()
            if not p.is_dir() and not (p.is_file() and p.suffix.lower() == ".npz"):
                raise ConvpropError(f"--data: {item!r} is not a directory or .npz file (nor "
                                    f"'sample' or 'mnist')")
            out.append(str(p.resolve()))
    return _unique(out)


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def sweep_flag(f: Field) -> str:
    return f.metadata.get("sweep_flag") or "--" + f.name.replace("_", "-")


def parse_axis(f: Field, text: Any) -> list[Any]:
    """One grid axis from its comma list, parsed as the field's kind: activations (a
    bare number continues the activation before it), data sources, integers (ranges
    like 0-4), positive numbers, or items each read by the field's ``parse``."""
    what = sweep_flag(f)[2:]
    parse = f.metadata["parse"]
    if f.name == "activation":
        return parse_activations(text)
    if f.name == "data":
        return parse_data(text)
    if parse in (cfg.parse_positive_int, cfg.parse_non_negative_int):
        return parse_ints(text, what, minimum=1 if parse is cfg.parse_positive_int else 0)
    if parse is cfg.parse_positive_float:
        return parse_floats(text, what)
    out = []
    for item in _items(text, what):
        try:
            out.append(parse(item))
        except ConvpropError as exc:
            raise ConvpropError(f"--{what}: {exc}") from None
    return _unique(out)


class Grid:
    """Lists of values per axis option; :meth:`runs` is their product in field order,
    seeds innermost."""

    def __init__(self, **values: list[Any]):
        axes = {f.name: f for f in option_fields() if f.metadata.get("axis", True)}
        unknown = sorted(set(values) - set(axes))
        if unknown:
            raise ConvpropError(f"not a sweep option: {', '.join(unknown)}")
        self.values = {name: list(values.get(name, [default_of(f)]))
                       for name, f in axes.items()}
        if self.values["data"] == [None]:
            self.values["data"] = ["sample"]

    def __getattr__(self, name: str) -> list[Any]:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.values.items()}

    def size(self) -> int:
        return math.prod(len(v) for v in self.values.values())

    def runs(self, limit: int | None = MAX_RUNS) -> list[Run]:
        n = self.size()
        if n == 0:
            raise ConvpropError("the grid is empty: every option needs at least one value")
        if limit is not None and n > limit:
            raise ConvpropError(f"the grid has {n} runs, more than the limit of {limit} "
                                f"(use --force to run it anyway)")
        names = [k for k in self.values if k != "seed"] + ["seed"]
        out = []
        for combo in itertools.product(*(self.values[k] for k in names)):
            values = dict(zip(names, combo))
            config = cfg.TrainConfig.from_dict(values).validate()
            config = config.with_default_length(values["data"])  # same default as train
            out.append(Run(**config.to_dict()))
        return out


def parse_grid(**texts: Any) -> Grid:
    """The grid of ``convprop sweep``'s options: keyword = option name (``seeds`` or
    ``seed`` for the seeds), value = its comma list (None: the default)."""
    if "seeds" in texts:
        texts["seed"] = texts.pop("seeds")
    if texts.get("iterations") is not None and texts.get("epochs") is not None:
        raise ConvpropError("give --iterations or --epochs, not both")
    axes = {f.name: f for f in option_fields() if f.metadata.get("axis", True)}
    unknown = sorted(set(texts) - set(axes))
    if unknown:
        raise ConvpropError(f"not a sweep option: {', '.join(unknown)}")
    values = {"data": parse_data(texts.get("data"))}
    for name, text in texts.items():
        if text is not None and name != "data" and (not isinstance(text, list) or text):
            values[name] = parse_axis(axes[name], text)
    return Grid(**values)
