"""``convprop train`` and ``convprop evaluate``: parse, call the library, print."""

from __future__ import annotations

import argparse

from convprop.cli.common import add_data_option, info, positive_int
from convprop.cli.options import add_threads_option, add_train_options, apply_threads, given_options
from convprop.training.jobs import RunResult

DEFAULT_OUT = "runs/train"


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a network and write metrics, summary and model",
        description="Train the network with hand-written back-propagation (plain SGD "
                    "unless --optimizer); write metrics.csv (iteration, loss, rL), "
                    "summary.json and model.npz into --out.")
    add_train_options(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help=f"output folder (default: {DEFAULT_OUT}); one that already holds "
                        f"results is refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="overwrite the results already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_threads_option(p)
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="write DIR/checkpoint.npz every N iterations (Ctrl-C always writes "
                        "one); removed once the run finishes")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the unfinished run in DIR from its checkpoint, with the "
                        "options stored there (bit-for-bit the result of an uninterrupted run)")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test error and confusion matrix of a saved model",
                       description="Evaluate MODEL on the test set of --data (default: the "
                                   "data set the model was trained on, when it is available).")
    e.add_argument("model", metavar="MODEL", help="a model.npz written by `convprop train`")
    add_data_option(e, default_text="the data set the model was trained on when available, "
                                    "else full MNIST if cached, else the sample")
    add_threads_option(e)
    e.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from convprop.errors import ConvpropError
    from convprop.maths import team
    from convprop.training.checkpoint import StopOnSignal
    from convprop.training.config import TrainConfig
    from convprop.training.jobs import resume_training, run_training

    threads = apply_threads(args)
    options = given_options(args)
    if args.resume is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ConvpropError(f"--resume writes into the run folder {args.resume}; do not "
                                f"give --out {args.out}")
        out = args.resume
    else:
        config = TrainConfig(**options).validate()
        out = args.out if args.out is not None else DEFAULT_OUT
    team.start(threads)  # the workers start up while the data loads
    with StopOnSignal() as stop:
        if args.resume is not None:
            result = resume_training(out, options, progress=not args.no_progress, log=info,
                                     checkpoint_every=args.checkpoint_every,
                                     should_stop=stop)
        else:
            result = run_training(config, out, progress=not args.no_progress, log=info,
                                  checkpoint_every=args.checkpoint_every, should_stop=stop,
                                  force=args.force)
    code = print_result(result, out)
    return stop.exit_code if stop() or result["status"] == "interrupted" else code


def print_result(result: RunResult, out: str) -> int:
    """The run's outcome on stdout; exit status 1 for a diverged run, else 0."""
    summary = result.summary
    rl = summary["final_rL"]
    print(f"iterations: {summary['iterations']}   final rL: "
          f"{'n/a' if rl is None else f'{rl:.4f}'}   time: {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.0f} images/s)")
    status = summary["status"]
    if status in ("diverged", "interrupted"):
        print(f"{status}: {summary['message']}")
        print(f"results written to {out}")
        return 1 if status == "diverged" else 0
    if status == "stalled":
        print(f"stalled: {summary['message']}")
    print(f"test error: {100 * summary['test_error']:.2f}% "
          f"({summary['data']['n_test']} test images)")
    print(f"results written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convprop.cli.model import confusion_lines
    from convprop.data.mnist import load_data
    from convprop.interop.model import load_model
    from convprop.training.jobs import evaluate_model, trained_on

    apply_threads(args)
    net = load_model(args.model)
    source = args.data if args.data is not None else trained_on(net)
    data = load_data(source)
    result = evaluate_model(net, data, label=args.model)
    info(f"data: {data.description}" + (" (the data set the model was trained on)"
                                        if args.data is None and source is not None else ""))
    print(f"test error: {100 * result.error:.2f}% ({result.wrong} of "
          f"{len(result.predicted)} wrong)")
    names = net.class_names or getattr(data, "class_names", None)
    print("\n".join(confusion_lines(result.confusion, names)))
    return 0
