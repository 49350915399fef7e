"""Command-line flags derived from :class:`~convprop.training.config.TrainConfig`.

``convprop train`` gets one flag per option (``--batch-size N``), ``convprop sweep``
one comma-list flag per sweep axis (``--lr 0.1,1.5,2``); names, types, choices, help
and defaults all come from the config's fields, so a new option needs no edit here.
Train flags default to "not given" (``argparse.SUPPRESS``): the namespace holds only
the options typed, which is what ``--resume`` checks against the stored ones.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from convprop.errors import ConvpropError
from convprop.training import config as cfg


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConvpropError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _default_note(f) -> str:
    if f.metadata.get("default_text"):
        return f" (default {f.metadata['default_text']})"
    default = cfg.default_of(f)
    if default is None:
        return ""
    return f" (default {cfg.value_text(default)})"


def add_train_options(p: argparse.ArgumentParser) -> None:
    """One flag per option of the current TrainConfig."""
    groups: dict[str, Any] = {}
    for f in cfg.options(cfg.TrainConfig):
        m = f.metadata
        target = p
        if m.get("group"):
            if m["group"] not in groups:
                groups[m["group"]] = p.add_mutually_exclusive_group()
            target = groups[m["group"]]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                  "help": m["help"] + _default_note(f)}
        if m.get("choices"):
            kwargs["choices"] = m["choices"]
        else:
            kwargs["type"] = _argparse_type(m["parse"])
            ints = (cfg.parse_positive_int, cfg.parse_non_negative_int)
            kwargs["metavar"] = m.get("metavar") or ("N" if m["parse"] in ints else
                                                     f.name.upper().replace("_", "-"))
        target.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training options typed on the command line (see :func:`add_train_options`)."""
    return {f.name: getattr(args, f.name) for f in cfg.options(cfg.TrainConfig)
            if hasattr(args, f.name)}


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """One comma-list flag per sweep axis of the current TrainConfig."""
    from convprop.experiments.runs import sweep_flag

    groups: dict[str, Any] = {}
    for f in cfg.options(cfg.TrainConfig):
        m = f.metadata
        if not m.get("axis", True):
            continue
        target = p
        if m.get("group"):
            if m["group"] not in groups:
                groups[m["group"]] = p.add_mutually_exclusive_group()
            target = groups[m["group"]]
        text = (m.get("sweep_help") or f"{m['help']}; a comma list") + _default_note(f)
        target.add_argument(sweep_flag(f), dest=f.name, metavar="LIST", default=None,
                            action="append" if f.name == "activation" else "store",
                            help=text)


def sweep_texts(args: argparse.Namespace) -> dict[str, Any]:
    """The comma lists given to ``convprop sweep``, by option name."""
    return {f.name: getattr(args, f.name) for f in cfg.options(cfg.TrainConfig)
            if f.metadata.get("axis", True) and hasattr(args, f.name)}


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def add_threads_option(p: argparse.ArgumentParser, per_worker: bool = False) -> None:
    from convprop.cli.common import positive_int

    default = ("1 per worker" if per_worker else
               "$CONVPROP_NUM_THREADS if set, else every core available to the process")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help=f"threads for the network{' in each worker' if per_worker else ''} "
                        f"(default {default}; training with N > 1 starts N - 1 worker "
                        f"processes); results do not depend on it")


def threads_for(args: argparse.Namespace, per_worker: bool = False) -> int:
    """``--threads``, else $CONVPROP_NUM_THREADS, else every available core (1 per worker
    in a sweep)."""
    if getattr(args, "threads", None) is not None:
        return args.threads
    text = os.environ.get("CONVPROP_NUM_THREADS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ConvpropError(f"CONVPROP_NUM_THREADS must be a positive integer, got "
                                f"{text!r}")
        return int(text)
    return 1 if per_worker else available_cores()


def apply_threads(args: argparse.Namespace) -> int:
    from convprop.maths.network import set_num_threads

    n = threads_for(args)
    set_num_threads(n)
    return n
