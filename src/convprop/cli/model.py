"""``convprop predict``, ``info``, ``import-matlab``, ``export-matlab`` and
``plot features``: using a trained model."""

from __future__ import annotations

import argparse
import json

from convprop.cli.common import info
from convprop.cli.options import add_threads_option, apply_threads


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict the class (digit) of image files (PNG, JPEG, BMP)",
        description="For a grey model, convert each image the way MNIST was made (grey, "
                    "light digit on dark, fitted into 20x20, centred by its centre of mass "
                    "in 28x28, then resized to the model's input) and print the predicted "
                    "class and the network's output scores; a 28x28 MNIST-like image (or "
                    "one of the model's size) is used as it is. For a colour model the RGB "
                    "image is only resized to the model's input. Classes are shown by name "
                    "when the model has class names.")
    p.add_argument("model", metavar="MODEL", help="a model.npz")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--always-preprocess", action="store_true",
                   help="convert 28x28 MNIST-like images too instead of using them as they are")
    add_threads_option(p)
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser(
        "info", help="architecture, parameter counts and training summary of a model",
        description="Print the layers, each layer's parameter count next to what a fully "
                    "connected layer between the same maps would need (the paper's "
                    "weight-sharing argument), and the training summary in the file.")
    i.add_argument("model", metavar="MODEL", help="a model.npz")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser(
        "import-matlab", help="convert a DeepLearnToolbox network (.mat) into a model file",
        description="Read save('net.mat', 'cnn') of the struct DeepLearnToolbox's cnnsetup/"
                    "cnntrain build (-v7 or -v6 file) and write a convprop model.")
    m.add_argument("mat", metavar="NET.mat")
    m.add_argument("-o", "--output", metavar="MODEL", required=True, help="model file to write")
    m.add_argument("--variable", default=None,
                   help="the struct's variable name (default: 'cnn', or the only network)")
    m.set_defaults(func=cmd_import)

    e = sub.add_parser(
        "export-matlab", help="write a model as a DeepLearnToolbox struct (.mat)",
        description="Write the model as the struct 'cnn' that DeepLearnToolbox's cnnff runs "
                    "(sigmoid conv layers and mean-pooling only).")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("-o", "--output", metavar="NET.mat", required=True)
    e.add_argument("--mat-version", choices=("7", "6"), default="7",
                   help="MAT-file version: 7 (compressed, default) or 6")
    e.set_defaults(func=cmd_export)


def register_plot_features(plot_sub) -> None:
    f = plot_sub.add_parser(
        "features", help="kernels, feature maps and back-propagated errors for one image",
        description="One PNG with the learned kernels, every layer's feature maps for IMAGE, "
                    "and the error maps delta that back-propagation sends to each layer for "
                    "the image's label (equations 11 and 12).")
    f.add_argument("model", metavar="MODEL")
    f.add_argument("image", metavar="IMAGE", help="an image file (converted as for predict)")
    f.add_argument("-o", "--output", metavar="PNG", default="features.png",
                   help="figure to write (default features.png)")
    f.add_argument("--label", type=int, default=None,
                   help="the image's true digit (default: the predicted one)")
    f.add_argument("--always-preprocess", action="store_true",
                   help="convert 28x28 MNIST-like images too")
    f.set_defaults(func=cmd_plot_features)


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from convprop.interop.images import load_image_for, scores
    from convprop.interop.model import class_label, load_model

    apply_threads(args)
    net = load_model(args.model)
    images = np.stack([load_image_for(net, p, args.always_preprocess) for p in args.images])
    out = scores(net, images)
    results = [{"image": path, "digit": int(o.argmax()), "scores": [float(v) for v in o]}
               for path, o in zip(args.images, out)]
    if net.class_names:
        for r in results:
            r["class"] = class_label(net, r["digit"])
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        shown = f"{r['class']} ({r['digit']})" if net.class_names else str(r["digit"])
        print(f"{r['image']}: {shown}   scores " +
              " ".join(f"{class_label(net, d)}:{v:.3f}" for d, v in enumerate(r["scores"])))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from convprop.interop.model import describe_model, load_model

    net = load_model(args.model)
    report = describe_model(net)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model: {args.model}")
    print(f"spec: {net.spec}   activation: {net.activation.name}   input: "
          f"{'x'.join(map(str, net.input_shape))}   outputs: {net.n_outputs}   "
          f"dtype: {net.dtype.name}   loss: {net.loss.name}")
    if net.class_names:
        print("classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(net.class_names)))
    print(f"{'layer':<8}{'kind':<7}{'output':<12}{'params':>10}{'fully connected':>18}")
    for row in report["layers"]:
        fc = "" if row["fully_connected_weights"] is None else f"{row['fully_connected_weights']:,}"
        print(f"{row['name']:<8}{row['kind']:<7}{'x'.join(map(str, row['output_shape'])):<12}"
              f"{row['params']:>10,}{fc:>18}")
    print(f"total parameters: {report['total_params']:,}")
    for row in report["layers"]:
        if row["fully_connected_weights"]:
            print(f"  {row['name']}: {row['weights']:,} shared kernel weights; a fully connected "
                  f"layer between the same maps needs {row['fully_connected_weights']:,} "
                  f"({row['fully_connected_weights'] / row['weights']:,.0f}x)")
    s, c = net.summary, net.config
    if c:
        keys = ("lr", "batch_size", "epochs", "iterations", "seed", "data", "imported_from")
        print("training config: " + ", ".join(f"{k}={c[k]}" for k in keys
                                               if c.get(k) is not None))
    if s:
        parts = [f"{k}={_num(s[k])}" for k in ("status", "iterations", "final_rL", "seconds")
                 if s.get(k) is not None]
        if s.get("test_error") is not None:
            n = (s.get("data") or {}).get("n_test")
            parts.append(f"test_error={100 * s['test_error']:.2f}%"
                         + (f" ({n} test images)" if n else ""))
        print("training summary: " + ", ".join(parts))
    if not s and not c:
        print("training summary: none stored")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from convprop.interop.matlab import import_matlab
    from convprop.interop.model import save_model

    net = import_matlab(args.mat, args.variable)
    save_model(net, args.output)
    print(f"imported {net.spec} ({net.n_params:,} parameters) from {args.mat} -> {args.output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from convprop.interop.matlab import export_matlab
    from convprop.interop.model import load_model

    net = load_model(args.model)
    export_matlab(net, args.output, version=args.mat_version)
    print(f"exported {net.spec} as struct 'cnn' (-v{args.mat_version}) -> {args.output}")
    return 0


def cmd_plot_features(args: argparse.Namespace) -> int:
    from convprop.interop.images import load_image_for
    from convprop.interop.model import load_model
    from convprop.plots.features import feature_data, plot_features

    net = load_model(args.model)
    image = load_image_for(net, args.image, args.always_preprocess)
    data = feature_data(net, image, args.label)
    plot_features(data, args.output, title=f"{args.image}")
    info(f"label {data.label}, predicted {data.predicted}")
    print(f"wrote {args.output}")
    return 0


def confusion_lines(m, names=None) -> list[str]:
    """The confusion matrix as text: rows the true class, columns the predicted one,
    headed by class names when there are names (else the labels)."""
    labels = [str(n) for n in names] if names else [str(k) for k in range(m.shape[0])]
    width = max(6, max(len(s) for s in labels) + 1, len(str(int(m.max(initial=0)))) + 1)
    lines = ["confusion matrix (rows: true label, columns: predicted)",
             " " * width + "".join(f"{s:>{width}}" for s in labels)]
    lines += [f"{labels[i]:>{width}}" + "".join(f"{int(v):>{width}d}" for v in row)
              for i, row in enumerate(m)]
    return lines


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
