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


class VariationalDense(linear.VariationalLinear):
    """`y = activation(x @ W + b)` with a mean-field Normal posterior on `W`.

    The public subclasses differ only in how they sample; their docstrings
    list the arguments.
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
class DenseReparameterization(VariationalDense):
    """Dense layer drawing one kernel sample per call (Bayes by Backprop).

    Computes `activation(x @ W + b)` with `W = mu + sigma * eps`: one draw of
    the kernel from its mean-field Normal posterior, shared by every example of
    the batch. Cheapest of the three estimators; its gradient noise grows with
    the batch, since all examples see the same weights.

    Args:
        units: Output width, a positive integer.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of `W`.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of `W`, > 0
            (default 0.01).
        bias_posterior_scale_init: Initial posterior stddev of the bias, > 0
            (used only with a `bias_prior`).
        kernel_prior: A `tfp_deepgen.priors.Prior`; default `Normal(0, 1)`.
        bias_prior: A prior for a variational bias, or None (default) for a
            point-estimated bias.
        kl_weight: Multiplier of the KL added as a loss; use
            `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` for posterior means.
        seed: Integer seed of the layer's noise.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseReparameterization(3, kl_weight=1 / 1000, seed=0)
    >>> layer(keras.ops.ones((2, 4))).shape
    TensorShape([2, 3])
    >>> layer.kernel_posterior().event_shape
    TensorShape([4, 3])
    """

    estimator = linear.REPARAMETERIZATION


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseFlipout(VariationalDense):
    """Dense layer with flipout: per-example decorrelated weight noise.

    Computes `activation(x @ W + b)` where each example's weight noise
    `sigma * eps` is multiplied by random +-1 signs on its inputs and outputs
    (Wen et al., 2018), so examples of one batch see pseudo-independent
    weights at the price of a second matmul.

    Args:
        units: Output width, a positive integer.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of `W`.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of `W`, > 0
            (default 0.01).
        bias_posterior_scale_init: Initial posterior stddev of the bias, > 0
            (used only with a `bias_prior`).
        kernel_prior: A `tfp_deepgen.priors.Prior`; default `Normal(0, 1)`.
        bias_prior: A prior for a variational bias, or None (default) for a
            point-estimated bias.
        kl_weight: Multiplier of the KL added as a loss; use
            `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` for posterior means.
        seed: Integer seed of the layer's noise.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

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

    estimator = linear.FLIPOUT


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseLocalReparameterization(VariationalDense):
    """Dense layer sampling its pre-activations from their Gaussian marginal.

    With a Normal posterior on `W`, `x @ W` is Gaussian with mean `x @ mu` and
    variance `x**2 @ sigma**2` (Kingma et al., 2015). The layer draws those
    pre-activations directly: independent noise per example and unit, two
    matmuls, no weight sample.

    Args:
        units: Output width, a positive integer.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of `W`.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of `W`, > 0
            (default 0.01).
        bias_posterior_scale_init: Initial posterior stddev of the bias, > 0
            (used only with a `bias_prior`).
        kernel_prior: A `tfp_deepgen.priors.Prior`; default `Normal(0, 1)`.
        bias_prior: A prior for a variational bias, or None (default) for a
            point-estimated bias.
        kl_weight: Multiplier of the KL added as a loss; use
            `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` for posterior means.
        seed: Integer seed of the layer's noise.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseLocalReparameterization(5, sampling="mean")
    >>> layer(keras.ops.ones((3, 2))).shape
    TensorShape([3, 5])
    """

    estimator = linear.LOCAL_REPARAMETERIZATION
