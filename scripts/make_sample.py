"""Regenerate convprop's bundled MNIST sample from a directory holding full MNIST.

    python scripts/make_sample.py SRC_DIR [--out DIR] [--n-train 10000] [--n-test 2000]

Writes the first N training and first M test images and labels as the four standard IDX
files, gzip-compressed at level 9 with mtime 0 and no file name in the header, so the bytes
depend only on the data (and on the zlib build). The source files are checked against
MNIST_SHA256 first, so the sample is always a prefix of the real MNIST.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from convprop.data.mnist import (  # noqa: E402
    MNIST_FILES,
    MNIST_SHA256,
    encode_idx,
    load_mnist_dir,
)

DEFAULT_OUT = REPO / "src" / "convprop" / "data" / "sample_data"


def sample_files(src: Path, n_train: int, n_test: int) -> dict[str, bytes]:
    """Role -> gzip bytes of the sample's IDX file."""
    full = load_mnist_dir(src)
    arrays = {
        "train_images": full.train_x, "train_labels": full.train_y,
        "test_images": full.test_x, "test_labels": full.test_y,
    }
    for role, a in arrays.items():
        sha = hashlib.sha256(encode_idx(a.astype("uint8"))).hexdigest()
        if sha != MNIST_SHA256[role]:
            raise SystemExit(f"{src}: {MNIST_FILES[role]} is not the standard MNIST file "
                             f"(sha256 {sha})")
    out = {}
    for role, a in arrays.items():
        n = n_train if role.startswith("train") else n_test
        raw = encode_idx(a[:n].astype("uint8"))
        out[role] = gzip.compress(raw, compresslevel=9, mtime=0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="directory with the four full MNIST files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the sample")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=2000)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for role, data in sample_files(args.src, args.n_train, args.n_test).items():
        path = args.out / f"{MNIST_FILES[role]}.gz"
        path.write_bytes(data)
        total += len(data)
        print(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
