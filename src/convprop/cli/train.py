"""``convprop train`` and ``convprop evaluate``."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from convprop.cli.common import (
    add_data_option,
    info,
    non_negative_int,
    positive_float,
    positive_int,
)
from convprop.maths.network import DEFAULT_SPEC


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a network and write metrics, summary and model",
        description="Train the network with hand-written back-propagation (plain SGD "
                    "unless --optimizer); write metrics.csv (iteration, loss, rL), "
                    "summary.json and model.npz into --out.")
    add_data_option(p)
    add_training_options(p)
    p.add_argument("--out", metavar="DIR", default="runs/train",
                   help="output folder (default: runs/train)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_checkpoint_options(p)
    p.set_defaults(func=cmd_train, train_parser=p)
    _record_command_line(p)

    e = sub.add_parser("evaluate", help="test error and confusion matrix of a saved model",
                       description="Evaluate MODEL on the test set of --data.")
    e.add_argument("model", metavar="MODEL", help="a model.npz written by `convprop train`")
    add_data_option(e)
    e.set_defaults(func=cmd_evaluate)


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default=DEFAULT_SPEC,
                   help=f"architecture, toolbox notation (default {DEFAULT_SPEC}: conv 6 maps "
                        f"5x5, mean-pool 2, conv 12 maps 5x5, mean-pool 2; 'm' = max-pool)")
    p.add_argument("--activation", default="sigmoid", metavar="NAME",
                   help="conv-layer activation: sigmoid, tanh, tanh-linear:K, relu, "
                        "leaky-relu:A; learned: prelu:map|layer[:A0], "
                        "tanh-linear-learned:map|layer[:K0] (default sigmoid)")
    p.add_argument("--lr", type=positive_float, default=1.0, help="learning rate (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=50,
                   help="images per iteration (default 50)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, default=None,
                        help="passes over the training set (default 1; on the bundled "
                             "10,000-image sample 6, the 60,000 images of one epoch of "
                             "full MNIST)")
    length.add_argument("--iterations", type=positive_int, default=None,
                        help="number of mini-batches instead of epochs")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point precision (default float32)")
    add_modern_options(p)


def add_modern_options(p: argparse.ArgumentParser) -> None:
    """Beyond the paper: today's defaults as options, and gradient-flow diagnostics."""
    from convprop.maths.losses import LOSSES
    from convprop.maths.network import INITS
    from convprop.maths.optim import DEFAULT_BETAS, DEFAULT_MOMENTUM, OPTIMIZERS

    p.add_argument("--loss", choices=tuple(LOSSES), default="mse",
                   help="mse: the paper's squared error on sigmoid outputs (default); "
                        "cross-entropy: softmax + cross-entropy on linear outputs")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd",
                   help="sgd (the paper's, default), momentum (see --momentum) or adam "
                        "(see --betas; try --lr 0.001)")
    p.add_argument("--momentum", type=_unit_interval, default=DEFAULT_MOMENTUM,
                   help=f"momentum coefficient of --optimizer momentum (default "
                        f"{DEFAULT_MOMENTUM})")
    p.add_argument("--betas", type=_betas, default=DEFAULT_BETAS, metavar="B1,B2",
                   help=f"Adam's decay rates (default {DEFAULT_BETAS[0]},{DEFAULT_BETAS[1]}, "
                        f"as PyTorch)")
    p.add_argument("--init", choices=INITS, default="dlt",
                   help="dlt: the toolbox's uniform ±sqrt(6/(fan_in+fan_out)) (default); "
                        "he: uniform ±sqrt(6/fan_in) (He et al. 2015)")
    p.add_argument("--diagnostics", type=non_negative_int, default=0, metavar="N",
                   help="every N iterations record per-layer gradient flow (mean |delta|, "
                        "mean |weight gradient|, saturated and dead units) into "
                        "diagnostics.csv (default 0: off)")


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _betas(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2 in [0, 1), got {text!r}")
    b1, b2 = (_unit_interval(s.strip()) for s in parts)
    return b1, b2


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="write DIR/checkpoint.npz every N iterations (Ctrl-C always writes "
                        "one); removed once the run finishes")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the unfinished run in DIR from its checkpoint, with the "
                        "options stored there (bit-for-bit the result of an uninterrupted run)")


def config_from_args(args: argparse.Namespace):
    from convprop.training.trainer import TrainConfig

    return TrainConfig(spec=args.spec, activation=args.activation, lr=args.lr,
                       batch_size=args.batch_size, epochs=args.epochs,
                       iterations=args.iterations, seed=args.seed, dtype=args.dtype,
                       data=args.data, loss=args.loss, optimizer=args.optimizer,
                       momentum=args.momentum, betas=args.betas, init=args.init,
                       diagnostics=args.diagnostics).validate()


SAMPLE_EPOCHS = 6  # 6 x 10,000 sample images = one epoch of full MNIST


def _uses_sample(source: str | None) -> bool:
    from convprop.data.mnist import mnist_in_cache

    return source == "sample" or (source is None and not mnist_in_cache())


def cmd_train(args: argparse.Namespace) -> int:
    from convprop.training.checkpoint import StopOnSignal
    from convprop.training.trainer import resume_training, run_training

    log = info
    if args.resume is not None:
        _refuse_options_that_conflict_with_resume(args)
        out = args.resume
    else:
        if args.epochs is None and args.iterations is None and _uses_sample(args.data):
            args.epochs = SAMPLE_EPOCHS

            def log(message: str) -> None:  # the note follows the data line
                info(message)
                if message.startswith("data:"):
                    info(f"training {SAMPLE_EPOCHS} epochs of the sample (as many images as "
                         f"one epoch of full MNIST); --epochs or --iterations to change")
        config = config_from_args(args)
        out = args.out
    with StopOnSignal() as stop:
        if args.resume is not None:
            summary = resume_training(out, progress=not args.no_progress, log=log,
                                      checkpoint_every=args.checkpoint_every,
                                      should_stop=stop)
        else:
            summary = run_training(config, out, progress=not args.no_progress, log=log,
                                   checkpoint_every=args.checkpoint_every, should_stop=stop)
    rl = summary["final_rL"]
    print(f"iterations: {summary['iterations']}   final rL: "
          f"{'n/a' if rl is None else f'{rl:.4f}'}   time: {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.0f} images/s)")
    status = summary["status"]
    if status in ("diverged", "interrupted"):
        print(f"{status}: {summary['message']}")
        print(f"results written to {out}")
        return stop.exit_code if status == "interrupted" else 1
    if status == "stalled":
        print(f"stalled: {summary['message']}")
    print(f"test error: {100 * summary['test_error']:.2f}% "
          f"({summary['data']['n_test']} test images)")
    print(f"results written to {out}")
    return stop.exit_code if stop() else 0


def _record_command_line(p: argparse.ArgumentParser) -> None:
    """Keep the words given to ``convprop train`` as ``args.train_argv``, so that --resume
    can tell an option typed on the command line from one left at its default."""
    parse = p.parse_known_args

    def parse_and_record(args=None, namespace=None):
        ns, extras = parse(args, namespace)
        ns.train_argv = list(sys.argv[1:] if args is None else args)
        return ns, extras

    p.parse_known_args = parse_and_record  # type: ignore[method-assign]


_UNSET = object()


def _typed_options(args: argparse.Namespace) -> set[str] | None:
    """The dests of the options on the command line (None if it was not recorded): parse
    it again into a namespace pre-filled with a marker, which argparse leaves alone for
    every option not given."""
    argv = getattr(args, "train_argv", None)
    if argv is None:
        return None
    parser = args.train_parser
    probe = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions})
    ns, _ = parser.parse_known_args(argv, probe)
    return {k for k, v in vars(ns).items() if v is not _UNSET}


def _refuse_options_that_conflict_with_resume(args: argparse.Namespace) -> None:
    """--resume continues with the stored options: a training option typed on the command
    line whose value differs from the stored one is refused, and so is another --out."""
    from pathlib import Path

    from convprop.errors import ConvpropError
    from convprop.training.checkpoint import load_checkpoint

    stored = load_checkpoint(args.resume).config().to_dict()
    typed = _typed_options(args)
    defaults = args.train_parser.parse_args([])
    out_given = "out" in typed if typed is not None else args.out != defaults.out
    if out_given and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ConvpropError(f"--resume writes into the run folder {args.resume}; do not give "
                            f"--out {args.out}")
    given, default = config_from_args(args).to_dict(), config_from_args(defaults).to_dict()
    for key, value in given.items():
        explicit = key in typed if typed is not None and key in vars(args) \
            else value != default[key]
        if explicit and value != stored[key]:
            flag = "--" + key.replace("_", "-")
            raise ConvpropError(f"--resume continues {args.resume} with its stored options: "
                                f"{flag} {value} conflicts with the stored {stored[key]} "
                                f"(start a new run with --out to change it)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convprop.cli.model import check_model_fits_data, confusion_lines
    from convprop.data.mnist import load_data
    from convprop.interop.model import load_model
    from convprop.training.trainer import confusion_matrix, predict

    net = load_model(args.model)
    data = load_data(args.data)
    check_model_fits_data(net, data, args.model)
    info(f"data: {data.description}")
    pred = predict(net, data.test_x)
    err = float(np.mean(pred != data.test_y))
    print(f"test error: {100 * err:.2f}% ({int(np.sum(pred != data.test_y))} of "
          f"{len(pred)} wrong)")
    m = confusion_matrix(data.test_y, pred, net.n_outputs)
    print("\n".join(confusion_lines(m, net.class_names or getattr(data, "class_names", None))))
    return 0
