"""Regression datasets: diabetes progression (scikit-learn) and Boston housing (mlxtend).

Features come back float32, standardised with the training split's statistics
unless `standardize=False`; targets float32 in their own units.

Example:

>>> import tfp_deepgen as tdg
>>> (x_train, y_train), _ = tdg.datasets.load_diabetes(seed=0)
>>> x_train.shape, y_train.dtype.name
((354, 10), 'float32')
"""

import functools

import numpy as np

from tfp_deepgen import _validation
from tfp_deepgen.datasets._common import mlxtend_file, require, split_args, split_indices

__all__ = ["load_diabetes", "load_boston_housing"]


def _standardize(x_train, x_test):
    """Scales features by the training split's mean and stddev only."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


@functools.cache
def _diabetes_raw():
    datasets = require("sklearn.datasets", "load_diabetes")
    bunch = datasets.load_diabetes(scaled=False)
    return bunch.data, bunch.target


@functools.cache
def _boston_housing_raw():
    path = mlxtend_file("boston_housing.csv", "load_boston_housing")
    with path.open("r") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1]


def _regression(features, targets, test_fraction, seed, standardize):
    test_fraction, seed = split_args(test_fraction, seed)
    standardize = _validation.boolean("standardize", standardize)
    train, test = split_indices(len(targets), test_fraction, seed)
    x_train, x_test = features[train], features[test]
    if standardize:
        x_train, x_test = _standardize(x_train, x_test)
    y = targets.astype(np.float32)
    return (x_train.astype(np.float32), y[train]), (x_test.astype(np.float32), y[test])


def load_diabetes(test_fraction=0.2, seed=0, standardize=True):
    """Diabetes progression regression: 442 patients, 10 features.

    Source: `sklearn.datasets.load_diabetes(scaled=False)` (Efron et al.,
    2004, "Least Angle Regression"). Features are standardised with the
    training split's mean and stddev unless `standardize=False`; the target,
    a disease-progression score one year after baseline (25 to 346), is left
    in its own units.

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        standardize: Whether to standardise the features. Pass False to
            get raw features, e.g. for a `keras.layers.Normalization` layer
            inside the model, so an exported model takes raw inputs.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 features `(n, 10)`
        and float32 targets `(n,)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_diabetes()
    >>> x_train.shape, x_test.shape
    ((354, 10), (88, 10))
    """
    features, targets = _diabetes_raw()
    return _regression(features, targets, test_fraction, seed, standardize)


def load_boston_housing(test_fraction=0.2, seed=0, standardize=True):
    """Boston house prices regression: 506 towns, 13 features.

    Source: the file `mlxtend/data/data/boston_housing.csv` of the mlxtend
    package (Harrison & Rubinfeld, 1978, via the UCI repository; the data
    behind `mlxtend.data.boston_housing_data`). The target is MEDV, the
    median home value in $1000s (5 to 50, censored at 50). Features are
    standardised with the training split's mean and stddev unless
    `standardize=False`.

    Note: feature 12 (`B`) is derived from the share of Black residents per
    town; scikit-learn removed this dataset for that reason. Prefer
    `load_diabetes` unless you need this benchmark for comparison.

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        standardize: Whether to standardise the features (see
            `load_diabetes`).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 features `(n, 13)`
        and float32 targets `(n,)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_boston_housing()
    >>> x_train.shape, x_test.shape
    ((405, 13), (101, 13))
    """
    features, targets = _boston_housing_raw()
    return _regression(features, targets, test_fraction, seed, standardize)
