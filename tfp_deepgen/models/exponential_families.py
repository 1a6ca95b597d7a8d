"""The exponential families a Deep Exponential Family stacks, in log space where it matters.

A DEF layer's distribution is fixed by one parameter computed from the layer
above (`z_{l+1} W_l`): the log of the mean for the positive families (gamma,
Poisson), the logits for Bernoulli, the location for Normal. A draw is kept as
`Draw(value, log_value)`; gamma draws carry their logarithm, because with the
sparse gamma's shape 0.1 a float32 `value` underflows to 0 (log density
`-inf`, the known failure of naive sparse gamma DEFs) while its log stays
finite. Every density below reads `log_value`, never `log(value)`.

Example:

>>> import numpy as np
>>> from tfp_deepgen.models import exponential_families as ef
>>> draw = ef.Draw(np.float32([[1e-40]]), np.float32([[-92.1]]))  # value underflowed
>>> bool(np.isfinite(ef.log_prob("gamma", draw, np.float32([[0.0]]), shape=0.1)))
True
"""

import collections
import math

import tensorflow as tf

LATENT_FAMILIES = ("gamma", "poisson", "bernoulli", "normal")
WEIGHT_FAMILIES = ("gamma", "normal")
OBSERVATION_FAMILIES = ("poisson", "bernoulli", "normal")
POSITIVE_FAMILIES = ("gamma", "poisson", "bernoulli")

# Means below exp(LOG_FLOOR) are floored there: a Poisson or gamma with mean 0
# has no density at positive values. Means above exp(LOG_CEILING) are capped,
# so that exp() of a mean stays finite in float32.
LOG_FLOOR = -60.0
LOG_CEILING = 60.0
_TINY = math.exp(LOG_FLOOR)
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

Draw = collections.namedtuple("Draw", ["value", "log_value"])
"""A sample of a layer (or weight matrix): `value` and, for positive continuous
families, `log_value` (else None)."""


def parameter_kind(family):
    """`"log_mean"` (gamma, Poisson), `"logits"` (Bernoulli) or `"loc"` (Normal)."""
    return {"gamma": "log_mean", "poisson": "log_mean", "bernoulli": "logits"}.get(family, "loc")


def _matmul(a, b):
    """`a @ b` for `a` of shape `(..., K)` and a matrix `b` of shape `(K, M)`."""
    flat = tf.reshape(a, [-1, tf.shape(a)[-1]])
    out = tf.matmul(flat, b)
    return tf.reshape(out, tf.concat([tf.shape(a)[:-1], [tf.shape(b)[-1]]], 0))


def log_positive_matmul(log_a, log_b):
    """`log(exp(log_a) @ exp(log_b))` without under- or overflow.

    Both factors are shifted by their largest entry (per row of `a`, per
    column of `b`), so the product sums numbers in (0, 1] and at least one
    term is near 1 whenever the largest entries line up.
    """
    shift_a = tf.stop_gradient(tf.reduce_max(log_a, -1, keepdims=True))
    shift_b = tf.stop_gradient(tf.reduce_max(log_b, 0, keepdims=True))
    scaled = _matmul(tf.exp(log_a - shift_a), tf.exp(log_b - shift_b))
    return shift_a + shift_b + tf.math.log(tf.maximum(scaled, _TINY))


def _log_softplus(x):
    """`log(softplus(x))`, equal to x (to float32 precision) for x < -20."""
    safe = tf.maximum(x, -20.0)
    return tf.where(x < -20.0, x, tf.math.log(tf.nn.softplus(safe)))


def child_parameter(family, parent, weights, positive):
    """The parameter of `family` given the layer above, `eta = parent @ weights`.

    Args:
        family: The child's family (a latent or observation family).
        parent: `Draw` of the layer above, shape `(..., K_parent)`.
        weights: `Draw` of the weights, shape `(K_parent, K_child)`.
        positive: Whether parent and weights are non-negative. Then the mean
            of a gamma or Poisson child is `eta` itself (the identity link of
            Ranganath et al.'s sparse gamma DEF); otherwise it is
            `softplus(eta)`. Bernoulli takes `eta` as logits, Normal as loc.
    """
    kind = parameter_kind(family)
    if kind == "log_mean" and positive:
        if parent.log_value is not None and weights.log_value is not None:
            log_mean = log_positive_matmul(parent.log_value, weights.log_value)
        else:
            log_mean = tf.math.log(tf.maximum(_matmul(parent.value, weights.value), _TINY))
        return tf.clip_by_value(log_mean, LOG_FLOOR, LOG_CEILING)
    eta = _matmul(parent.value, weights.value)
    if kind == "log_mean":
        return tf.clip_by_value(_log_softplus(eta), LOG_FLOOR, LOG_CEILING)
    return eta


def log_prob(family, draw, parameter, shape=None, scale=None):
    """Elementwise log density (or mass) of `draw` under `family(parameter)`.

    Args:
        family: One of `LATENT_FAMILIES` or `OBSERVATION_FAMILIES`.
        draw: `Draw` (gamma reads `log_value`) or a value tensor.
        parameter: From `child_parameter` (or a top-layer prior's).
        shape: The gamma shape `alpha`; the rate is `alpha / mean`, so the
            mean is `exp(parameter)` whatever the shape.
        scale: The Normal's standard deviation (default 1).
    """
    value = draw.value if isinstance(draw, Draw) else draw
    if family == "gamma":
        log_value = draw.log_value
        return (
            shape * (math.log(shape) - parameter)
            - math.lgamma(shape)
            + (shape - 1.0) * log_value
            - shape * tf.exp(log_value - parameter)
        )
    if family == "poisson":
        return value * parameter - tf.exp(parameter) - tf.math.lgamma(value + 1.0)
    if family == "bernoulli":
        return value * parameter - tf.nn.softplus(parameter)
    if family == "normal":
        if scale is None:
            return -0.5 * tf.square(value - parameter) - _HALF_LOG_TWO_PI
        return -0.5 * tf.square((value - parameter) / scale) - tf.math.log(scale) - _HALF_LOG_TWO_PI
    raise ValueError(f"Unknown family {family!r}.")


def mean(family, parameter):
    """The mean of `family(parameter)`."""
    if parameter_kind(family) == "log_mean":
        return tf.exp(parameter)
    if family == "bernoulli":
        return tf.sigmoid(parameter)
    return parameter
