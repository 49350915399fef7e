"""``convprop explore``: the browser app (see :mod:`convprop.explore`)."""

from __future__ import annotations

import argparse

from convprop.cli.common import info, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore", help="draw a digit and watch back-propagation in the browser",
        description="Start a local web page: draw a digit and see every layer's feature "
                    "maps, the error maps delta of equations (4), (8), (11), (12) and the "
                    "kernel gradients (13); train a network live and watch its rL curve. "
                    "Without MODEL: the paper's network trained on the bundled sample "
                    "(trained once, then kept in the cache). Works offline.")
    p.add_argument("model", nargs="?", metavar="MODEL", default=None,
                   help="a model.npz to explore (default: the paper's network)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=non_negative_int, default=8000,
                   help="port (default 8000; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convprop.explore import Explorer, create_app
    from convprop.explore.server import bind, is_loopback, serve

    bind(args.host, args.port).close()  # a busy port fails before any training
    explorer = Explorer(args.model, log=info)
    app = create_app(explorer, None if not is_loopback(args.host) else
                     ("127.0.0.1", "localhost", "::1", "[::1]", args.host))
    serve(app, args.host, args.port, open_browser=not args.no_browser)
    return 0
