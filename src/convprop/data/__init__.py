"""Data sets: the bundled MNIST sample, MNIST-format IDX directories, the cache and
the download of full MNIST.

``load_data(source)`` is the one entry point: ``None`` or ``"sample"`` for the
bundled sample, ``"mnist"`` for the cached full MNIST, or a directory."""

from convprop.data.mnist import (
    ENV_DATA_DIR,
    Dataset,
    cache_dir,
    encode_idx,
    fetch_mnist,
    load_data,
    load_mnist_dir,
    load_sample,
    mnist_in_cache,
    read_idx,
)

__all__ = ["ENV_DATA_DIR", "Dataset", "cache_dir", "encode_idx", "fetch_mnist", "load_data",
           "load_mnist_dir", "load_sample", "mnist_in_cache", "read_idx"]
