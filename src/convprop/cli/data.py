"""``convprop data fetch`` and ``convprop data info``."""

from __future__ import annotations

import argparse

from convprop.cli.common import info, positive_int


def register(sub) -> None:
    p = sub.add_parser("data", help="download MNIST or show where data comes from",
                       description="Manage the MNIST data set.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download full MNIST into the cache and verify it",
                        description="Download the four MNIST files from public mirrors "
                                    "(trying each in turn, with retries), check each "
                                    "file's sha256, and keep only verified files.")
    f.add_argument("--out", "--dir", dest="dir", metavar="DIR", default=None,
                   help="folder to put the files in (default: the cache, see `convprop data "
                        "info`; --dir: the old spelling)")
    f.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL to try (repeatable; default: the built-in mirror list)")
    f.add_argument("--retries", type=positive_int, default=3, help="tries per mirror")
    f.set_defaults(func=cmd_fetch)
    i = dsub.add_parser("info", help="show the cache directory and what is in it")
    i.set_defaults(func=cmd_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_fetch(args: argparse.Namespace) -> int:
    from convprop.data.mnist import fetch_mnist
    from convprop.errors import DataError

    try:
        dest = fetch_mnist(args.dir, mirrors=args.mirror, retries=args.retries, progress=True)
    except DataError as exc:
        raise DataError(f"{exc}; without a download, put the four MNIST files in a directory "
                        f"and pass it as --data DIR") from None
    info(f"MNIST verified in {dest}")
    print(dest)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from convprop.data.mnist import cache_dir, mnist_in_cache

    print(f"cache directory: {cache_dir()} (set CONVPROP_DATA_DIR to change it)")
    print(f"full MNIST in cache: {'yes' if mnist_in_cache() else 'no (run `convprop data fetch`)'}")
    return 0
