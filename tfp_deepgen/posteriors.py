"""Variational families for the weights of a layer.

Keras 3 tracks only plain variables, so a posterior stores unconstrained
variables and applies its transform (softplus for scales) when read.

Example:

>>> import keras, tfp_deepgen as tdg
>>> layer = keras.layers.Layer()
>>> q = tdg.posteriors.MeanFieldNormal(layer, "kernel", (3, 2), scale_init=0.01)
>>> q.distribution().event_shape
TensorShape([3, 2])
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation, random

tfd = tfp.distributions

__all__ = ["MeanFieldNormal", "softplus_inverse"]

#: Floor added to every softplus scale so `log(scale)` in the KL stays finite.
MIN_SCALE = 1e-8


def softplus_inverse(x):
    """The `y` with `softplus(y) == x`, for a Python float `x > 0`."""
    # log(expm1(x)) loses precision for large x; there softplus(y) ~= y.
    return x + math.log(-math.expm1(-x))


class MeanFieldNormal:
    """Fully factorised Normal `q(w) = prod_i N(w_i; loc_i, scale_i^2)`.

    Creates two float32 variables on `layer`: `{name}_loc` and
    `{name}_untransformed_scale`, with `scale = softplus(untransformed) + 1e-8`.
    Variables are created with `autocast=False` so sampling and the KL stay in
    float32 under mixed-precision policies.

    Args:
        layer: The Keras layer that owns the variables.
        name: Prefix of the variable names.
        shape: Shape of the weight tensor.
        loc_initializer: Keras initializer of the means.
        scale_init: Initial posterior standard deviation, > 0.
        trainable: Whether both variables are trained.
    """

    def __init__(
        self,
        layer,
        name,
        shape,
        loc_initializer="glorot_uniform",
        scale_init=1e-3,
        trainable=True,
    ):
        scale_init = _validation.positive_float(f"{name}_posterior_scale_init", scale_init)
        self.shape = tuple(shape)
        self.loc = layer.add_weight(
            name=f"{name}_loc",
            shape=self.shape,
            initializer=loc_initializer,
            dtype="float32",
            trainable=trainable,
            autocast=False,
        )
        self.untransformed_scale = layer.add_weight(
            name=f"{name}_untransformed_scale",
            shape=self.shape,
            initializer=keras.initializers.Constant(softplus_inverse(scale_init)),
            dtype="float32",
            trainable=trainable,
            autocast=False,
        )

    def scale(self):
        """Posterior standard deviations, float32."""
        return tf.math.softplus(self.untransformed_scale) + MIN_SCALE

    def sample(self, seed):
        """One reparameterized draw `loc + scale * eps`, float32.

        The noise comes from `tfp_deepgen.random.normal` (Philox bits).
        """
        eps = random.normal(self.shape, seed)
        return self.loc + self.scale() * eps

    def distribution(self):
        """The posterior as a TFP distribution with event shape `shape`."""
        return tfd.Independent(
            tfd.Normal(self.loc, self.scale()),
            reinterpreted_batch_ndims=len(self.shape),
        )
