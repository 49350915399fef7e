"""Small helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def info(message: str) -> None:
    """A progress/status line for the user (stderr, so stdout stays parseable)."""
    print(message, file=sys.stderr, flush=True)


def add_data_option(parser: argparse.ArgumentParser,
                    default_text: str = "full MNIST if cached, else the sample") -> None:
    parser.add_argument(
        "--data", metavar="sample|mnist|DIR|FILE.npz", default=None,
        help="data set: 'sample' (bundled, 10k train / 2k test), 'mnist' (full MNIST from the "
             "cache, see `convprop data fetch`), a directory of MNIST-format IDX files (any "
             "image size: Fashion-MNIST, KMNIST, EMNIST), a CIFAR-10 binary directory, an "
             "image folder DIR/train/<class>/*.png + DIR/test/<class>/*, or a .npz file "
             "with x_train, y_train, x_test, y_test (see README 'Your own data'). "
             f"Default: {default_text}")
