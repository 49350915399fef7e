"""Data sets: the bundled MNIST sample, MNIST-format IDX directories (any image size),
CIFAR-10's binary version, image folders, ``.npz`` archives, the cache and the download
of full MNIST.

``load_data(source)`` is the one entry point: ``None`` or ``"sample"`` for the
bundled sample, ``"mnist"`` for the cached full MNIST, or a path (a directory or a
``.npz`` file), read by what it is."""

from convprop.data.base import Dataset
from convprop.data.cifar import load_cifar_dir
from convprop.data.folder import load_image_folder
from convprop.data.idx import encode_idx, read_idx
from convprop.data.mnist import (
    ENV_DATA_DIR,
    cache_dir,
    fetch_mnist,
    load_data,
    load_mnist_dir,
    load_sample,
    mnist_in_cache,
)
from convprop.data.npz import load_npz
from convprop.data.specs import default_spec_for

__all__ = ["ENV_DATA_DIR", "Dataset", "cache_dir", "default_spec_for", "encode_idx",
           "fetch_mnist", "load_cifar_dir", "load_data", "load_image_folder", "load_mnist_dir",
           "load_npz", "load_sample", "mnist_in_cache", "read_idx"]
