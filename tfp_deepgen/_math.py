"""Small numerical helpers shared across the package (no Keras or TFP state)."""

import math


def softplus_inverse(x):
    """The `y` with `softplus(y) == x`, for a Python float `x > 0`.

    Example:

    >>> round(softplus_inverse(math.log(2.0)), 12)
    0.0
    """
    # log(expm1(x)) loses precision for large x; there softplus(y) ~= y.
    return x + math.log(-math.expm1(-x))
