"""Argument checks shared by every public constructor.

Each check raises `ValueError` naming the argument, the allowed range and the
value received, and returns the value normalised to a Python type.

Example:

>>> import numpy as np
>>> from tfp_deepgen import _validation
>>> _validation.seed("seed", np.int64(3))
3
>>> _validation.seed("seed", -3)
-3
>>> _validation.boolean("use_bias", 1)
Traceback (most recent call last):
    ...
ValueError: `use_bias` must be True or False. Received: use_bias=1
"""

import math
import numbers

import keras


def _fail(name, allowed, value):
    raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")


def _as_float(name, value, allowed):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, allowed, value)
    value = float(value)
    if not math.isfinite(value):
        _fail(name, allowed, value)
    return value


def finite_float(name, value):
    return _as_float(name, value, "a finite number")


def positive_float(name, value):
    allowed = "a finite number > 0"
    value = _as_float(name, value, allowed)
    if value <= 0:
        _fail(name, allowed, value)
    return value


def non_negative_float(name, value):
    allowed = "a finite number >= 0"
    value = _as_float(name, value, allowed)
    if value < 0:
        _fail(name, allowed, value)
    return value


def open_unit_float(name, value):
    allowed = "a number in the open interval (0, 1)"
    value = _as_float(name, value, allowed)
    if not 0 < value < 1:
        _fail(name, allowed, value)
    return value


def positive_int(name, value):
    allowed = "a positive integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, allowed, value)
    if value <= 0:
        _fail(name, allowed, value)
    return int(value)


def positive_int_tuple(name, value, rank):
    """An int or a sequence of `rank` positive ints, returned as a tuple."""
    allowed = f"a positive integer or a tuple of {rank} positive integers"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * rank
    try:
        value = tuple(value)
    except TypeError:
        _fail(name, allowed, value)
    if len(value) != rank or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0 for v in value
    ):
        _fail(name, allowed, value)
    return tuple(int(v) for v in value)


def boolean(name, value):
    """`value` if it is `True` or `False`; anything else (1, "yes", None) raises."""
    if not isinstance(value, bool):
        _fail(name, "True or False", value)
    return value


def seed(name, value, allow_none=True, non_negative=False):
    """A seed as a Python int: any Python or NumPy integer, or None (random).

    The one seed rule of the package. Keras seeds (`keras.random.SeedGenerator`)
    take any integer, negative ones included, and `.keras` files saved by earlier
    releases hold negative seeds, so they are accepted. Pass `non_negative=True`
    where the seed goes to NumPy, which refuses negatives
    (`np.random.default_rng(-1)` raises). Bools and floats are refused so that
    `seed=True` or `seed=1.5` is not silently a seed. NumPy integers are
    returned as Python ints, which `keras.random.SeedGenerator` requires. Pass
    `allow_none=False` where a fixed seed is part of the promise (a dataset
    split that must be the same on every call).
    """
    if value is None and allow_none:
        return None
    allowed = ("an integer >= 0" if non_negative else "an integer") + (
        " or None" if allow_none else ""
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, allowed, value)
    if non_negative and value < 0:
        _fail(name, allowed, value)
    return int(value)


def one_of(name, value, options):
    normalised = value.lower() if isinstance(value, str) else value
    if normalised not in options:
        _fail(name, "one of " + ", ".join(repr(o) for o in options), value)
    return normalised


def head(name, value, members=("checked_nll",)):
    """A distribution-output head: `value`, or the head its serialized config describes.

    The one check of a `head` argument, shared by `tdg.losses` (which sits
    below `tdg.heads`) and `tdg.metrics`. A head is recognised by the
    `members` its caller uses (by default the per-example loss `checked_nll`),
    which every `tdg.heads.DistributionHead` has; the error names those missing.

    Example:

    >>> from tfp_deepgen import _validation
    >>> _validation.head("head", "normal", members=("checked_nll", "kind"))
    Traceback (most recent call last):
        ...
    ValueError: `head` must be a tfp_deepgen.heads head (e.g. tdg.heads.IndependentNormal()); it has no `checked_nll`, `kind`. Received: head='normal'
    """  # noqa: E501
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    missing = [member for member in members if not hasattr(value, member)]
    if not missing and "checked_nll" in members and not callable(value.checked_nll):
        missing = ["checked_nll"]
    if missing:
        raise ValueError(
            f"`{name}` must be a tfp_deepgen.heads head (e.g. "
            f"tdg.heads.IndependentNormal()); it has no "
            + ", ".join(f"`{member}`" for member in missing)
            + f". Received: {name}={value!r}"
        )
    return value
