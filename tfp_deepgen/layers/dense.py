"""Variational dense layers: drop-in replacements for `keras.layers.Dense`.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((8,)),
...     tdg.layers.DenseFlipout(16, activation="relu", kl_weight=1 / 1000),
...     tdg.layers.DenseFlipout(1, kl_weight=1 / 1000),
... ])
>>> model(keras.ops.ones((4, 8))).shape
TensorShape([4, 1])
"""

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.layers import linear

__all__ = ["DenseReparameterization", "DenseFlipout", "DenseLocalReparameterization"]


class _VariationalDense(linear.VariationalLinear):
    """`y = activation(x @ W + b)` with a mean-field Normal posterior on `W`.

    Args:
        units: Output width, a positive integer.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of `W`.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of `W`, > 0.
        bias_posterior_scale_init: Initial posterior stddev of the bias, > 0
            (used only with a `bias_prior`).
        kernel_prior: A `tfp_deepgen.priors.Prior`; default `Normal(0, 1)`.
        bias_prior: A prior for a variational bias, or None (default) for a
            point-estimated bias.
        kl_weight: Multiplier of the KL added as a loss; use
            `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` for posterior means.
        seed: Integer seed of the layer's noise.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = _validation.positive_int("units", units)
        self.input_spec = keras.InputSpec(min_ndim=2)

    def kernel_shape(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= 2 with a known "
                f"last dimension. Received input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})
        return (int(input_shape[-1]), self.units)

    def linear(self, inputs, kernel):
        return (
            tf.matmul(inputs, kernel)
            if inputs.shape.rank == 2
            else keras.ops.matmul(inputs, kernel)
        )

    def flipout_sign_shapes(self, inputs, outputs):
        return tf.shape(inputs), tf.shape(outputs)

    def row_scale_axes(self, inputs):
        return [-1]

    def exact_local_sampling(self, inputs):
        return inputs.shape.rank == 2

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseReparameterization(_VariationalDense):
    __doc__ = (
        "Dense layer with one kernel sample per call (Bayes by Backprop).\n"
        + _VariationalDense.__doc__.split("\n", 1)[1]
    )
    estimator = linear.REPARAMETERIZATION


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseFlipout(_VariationalDense):
    __doc__ = (
        "Dense layer with flipout: per-example decorrelated weight noise.\n"
        + _VariationalDense.__doc__.split("\n", 1)[1]
    )
    estimator = linear.FLIPOUT


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseLocalReparameterization(_VariationalDense):
    __doc__ = (
        "Dense layer sampling pre-activations from their Gaussian marginal.\n"
        + _VariationalDense.__doc__.split("\n", 1)[1]
    )
    estimator = linear.LOCAL_REPARAMETERIZATION
