"""Variational families q for the latents and weights of a Deep Exponential Family.

Each model family gets the q that suits it:

| model family | q | gradient estimator |
|---|---|---|
| gamma | log-normal | reparameterization (`log z = m + s * eps`) |
| normal | normal | reparameterization |
| Poisson | Poisson | score function (control variate in the model) |
| Bernoulli | Bernoulli | score function |

The log-normal is sampled and scored in log space, so `log q(z)` and the
gamma's `log p(z)` stay finite when `z` underflows float32. Densities are with
respect to `z` itself (the log-normal's `-log z` Jacobian included), so
`log p - log q` is the usual ELBO integrand.

Example:

>>> import numpy as np
>>> from tfp_deepgen.models import variational_families as vf
>>> raw = np.zeros((3, 4), "float32")
>>> draw, log_q = vf.sample("gamma", [raw, raw], num_samples=2, seed=[1, 2])
>>> tuple(draw.value.shape), tuple(log_q.shape)
((2, 3, 4), (2, 3, 4))
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import random
from tfp_deepgen.models.exponential_families import Draw

REPARAMETERIZED = ("gamma", "normal")
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
# Keeps Poisson rates and q scales away from 0 (a degenerate q has no density).
_MIN_SCALE = 1e-4
# Caps q scales (smoothly). A unit the model does not use drifts towards its
# prior, and the sparse gamma's log z has a standard deviation near 10 at shape
# 0.1: log-normal draws exp(m + 10 * eps) then overflow float32 and a single
# draw with a non-negligible weight row turns the loss into millions or NaN.
MAX_SCALE = 3.0


def num_parameters(family):
    """How many raw parameter tensors q has: 2 (loc, scale) or 1 (rate / logits)."""
    return 2 if family in REPARAMETERIZED else 1


def scale_of(raw_scale):
    """The scale of a log-normal or normal q from its raw parameter.

    `softplus(raw)` for small scales, bent smoothly to at most `MAX_SCALE`
    (`MAX_SCALE * tanh(softplus(raw) / MAX_SCALE)`, so the gradient never
    vanishes abruptly).
    """
    scale = tf.nn.softplus(raw_scale) + _MIN_SCALE
    return MAX_SCALE * tf.tanh(scale / MAX_SCALE)


def _normal_log_prob(value, loc, scale):
    return -0.5 * tf.square((value - loc) / scale) - tf.math.log(scale) - _HALF_LOG_TWO_PI


def sample(family, raw, num_samples, seed, at_mean=False):
    """`num_samples` draws from q and their elementwise `log q`.

    Args:
        family: The model family the draws are for.
        raw: List of `num_parameters(family)` raw parameter tensors.
        num_samples: Leading sample dimension of the result, or None for none.
        seed: int32 seed of shape `[2]`.
        at_mean: Return q's mean (for gamma: the log-normal's median times
            `exp(s**2 / 2)`) instead of draws, with `log q` there; a
            deterministic evaluation mode.

    Returns:
        `(Draw, log_q)`, both of shape `(num_samples, *raw[0].shape)`.
    """
    loc = tf.convert_to_tensor(raw[0], "float32")
    shape = tf.shape(loc) if num_samples is None else tf.concat([[num_samples], tf.shape(loc)], 0)
    if family in REPARAMETERIZED:
        scale = scale_of(tf.convert_to_tensor(raw[1], "float32"))
        if at_mean:
            offset = 0.5 * tf.square(scale) if family == "gamma" else 0.0
            value = tf.broadcast_to(loc + offset, shape)
        else:
            value = loc + scale * random.normal(shape, seed)
        log_q = _normal_log_prob(value, loc, scale)
        if family == "gamma":
            return Draw(tf.exp(value), value), log_q - value
        return Draw(value, None), log_q
    if family == "poisson":
        rate = tf.broadcast_to(tf.nn.softplus(loc) + _MIN_SCALE, shape)
        if at_mean:
            value = rate
        else:
            value = tf.stop_gradient(tfp.distributions.Poisson(rate=rate).sample(seed=seed))
        return Draw(value, None), value * tf.math.log(rate) - rate - tf.math.lgamma(value + 1.0)
    if family == "bernoulli":
        logits = tf.broadcast_to(loc, shape)
        if at_mean:
            value = tf.sigmoid(logits)
        else:
            uniform = tf.random.stateless_uniform(shape, seed)
            value = tf.cast(uniform < tf.sigmoid(logits), "float32")
        return Draw(value, None), value * logits - tf.nn.softplus(logits)
    raise ValueError(f"Unknown family {family!r}.")


def mean(family, raw):
    """The mean of q."""
    loc = tf.convert_to_tensor(raw[0], "float32")
    if family == "gamma":
        return tf.exp(loc + 0.5 * tf.square(scale_of(raw[1])))
    if family == "normal":
        return loc
    if family == "poisson":
        return tf.nn.softplus(loc) + _MIN_SCALE
    return tf.sigmoid(loc)


def point(family, raw):
    """A point estimate as a `Draw`: `exp(loc)` for positive families, else `loc`."""
    loc = tf.convert_to_tensor(raw[0], "float32")
    if family == "gamma":
        return Draw(tf.exp(loc), loc)
    return Draw(loc, None)
