"""Variational convolution layers: drop-in replacements for `keras.layers.Conv*D`.

Local reparameterization for convolutions samples every output activation
from its exact Gaussian marginal, `N(conv(x, mu), conv(x^2, sigma^2))`, with
independent noise per position; the correlation between positions that share
a kernel sample is dropped, as in Molchanov et al. (2017).

Example:

>>> import keras, tfp_deepgen as tdg
>>> layer = tdg.layers.Conv2DFlipout(4, 3, padding="same", seed=0)
>>> layer(keras.ops.ones((2, 8, 8, 1))).shape
TensorShape([2, 8, 8, 4])
"""

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.layers import linear

__all__ = [
    "Conv1DReparameterization",
    "Conv2DReparameterization",
    "Conv3DReparameterization",
    "Conv1DFlipout",
    "Conv2DFlipout",
    "Conv3DFlipout",
    "Conv2DLocalReparameterization",
]


class VariationalConv(linear.VariationalLinear):
    """N-D convolution with a mean-field Normal posterior on its kernel.

    The public subclasses fix the rank and the estimator; their docstrings
    list the arguments.
    """

    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _validation.positive_int("filters", filters)
        self.kernel_size = _validation.positive_int_tuple("kernel_size", kernel_size, self.rank)
        self.strides = _validation.positive_int_tuple("strides", strides, self.rank)
        self.padding = _validation.one_of("padding", padding, ("valid", "same"))
        self.data_format = _validation.one_of(
            "data_format",
            data_format or keras.config.image_data_format(),
            ("channels_last", "channels_first"),
        )
        self.dilation_rate = _validation.positive_int_tuple(
            "dilation_rate", dilation_rate, self.rank
        )
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 cannot be combined with `dilation_rate` > 1. Received: "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        self.input_spec = keras.InputSpec(ndim=self.rank + 2)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def kernel_shape(self, input_shape):
        if len(input_shape) != self.rank + 2 or input_shape[self._channel_axis] is None:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2} "
                f"(batch, {self.rank} spatial dims, channels in {self.data_format}) "
                f"with a known channel dimension. Received input_shape={tuple(input_shape)}"
            )
        channels = int(input_shape[self._channel_axis])
        self.input_spec = keras.InputSpec(ndim=self.rank + 2, axes={self._channel_axis: channels})
        return self.kernel_size + (channels, self.filters)

    def linear(self, inputs, kernel):
        return keras.ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def bias_shape_for_broadcast(self):
        if self.data_format == "channels_last":
            return (-1,)
        return (-1,) + (1,) * self.rank

    def flipout_sign_shapes(self, inputs, outputs):
        # One sign per example and channel, shared over spatial positions.
        def shape(tensor):
            full = tf.shape(tensor)
            ones = tf.ones([self.rank], tf.int32)
            if self.data_format == "channels_last":
                return tf.concat([full[:1], ones, full[-1:]], axis=0)
            return tf.concat([full[:2], ones], axis=0)

        return shape(inputs), shape(outputs)

    def row_scale_axes(self, inputs):
        # One scale per example: it must broadcast against the outputs.
        return list(range(1, self.rank + 2))

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            spatial = input_shape[1:-1]
        else:
            spatial = input_shape[2:]
        out = []
        for size, k, s, d in zip(
            spatial, self.kernel_size, self.strides, self.dilation_rate, strict=True
        ):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append(-(-(size - d * (k - 1)) // s))
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv1DReparameterization(VariationalConv):
    """1-D convolution drawing one kernel sample per call (Bayes by Backprop).

    A drop-in replacement for `keras.layers.Conv1D` with weight uncertainty.
    Convolves with `W = mu + sigma * eps`, one draw of the kernel from its
    mean-field Normal posterior shared by the whole batch.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 1 int.
        strides: Positive int or tuple of 1 int; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 1 int; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv1DReparameterization(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 10, 3))).shape
    TensorShape([2, 10, 4])
    """

    rank = 1
    estimator = linear.REPARAMETERIZATION


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv2DReparameterization(VariationalConv):
    """2-D convolution drawing one kernel sample per call (Bayes by Backprop).

    A drop-in replacement for `keras.layers.Conv2D` with weight uncertainty.
    Convolves with `W = mu + sigma * eps`, one draw of the kernel from its
    mean-field Normal posterior shared by the whole batch.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 2 ints.
        strides: Positive int or tuple of 2 ints; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 2 ints; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv2DReparameterization(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 8, 8, 3))).shape
    TensorShape([2, 8, 8, 4])
    """

    rank = 2
    estimator = linear.REPARAMETERIZATION


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv3DReparameterization(VariationalConv):
    """3-D convolution drawing one kernel sample per call (Bayes by Backprop).

    A drop-in replacement for `keras.layers.Conv3D` with weight uncertainty.
    Convolves with `W = mu + sigma * eps`, one draw of the kernel from its
    mean-field Normal posterior shared by the whole batch.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 3 ints.
        strides: Positive int or tuple of 3 ints; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 3 ints; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv3DReparameterization(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 5, 5, 5, 3))).shape
    TensorShape([2, 5, 5, 5, 4])
    """

    rank = 3
    estimator = linear.REPARAMETERIZATION


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv1DFlipout(VariationalConv):
    """1-D convolution with flipout: per-example decorrelated weight noise.

    A drop-in replacement for `keras.layers.Conv1D` with weight uncertainty.
    Each example's kernel noise `sigma * eps` is multiplied by random +-1
    signs per input and output channel (Wen et al., 2018), shared over
    spatial positions; examples see pseudo-independent kernels at the price
    of a second convolution.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 1 int.
        strides: Positive int or tuple of 1 int; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 1 int; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv1DFlipout(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 10, 3))).shape
    TensorShape([2, 10, 4])
    """

    rank = 1
    estimator = linear.FLIPOUT


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv2DFlipout(VariationalConv):
    """2-D convolution with flipout: per-example decorrelated weight noise.

    A drop-in replacement for `keras.layers.Conv2D` with weight uncertainty.
    Each example's kernel noise `sigma * eps` is multiplied by random +-1
    signs per input and output channel (Wen et al., 2018), shared over
    spatial positions; examples see pseudo-independent kernels at the price
    of a second convolution.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 2 ints.
        strides: Positive int or tuple of 2 ints; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 2 ints; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv2DFlipout(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 8, 8, 3))).shape
    TensorShape([2, 8, 8, 4])
    """

    rank = 2
    estimator = linear.FLIPOUT


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv3DFlipout(VariationalConv):
    """3-D convolution with flipout: per-example decorrelated weight noise.

    A drop-in replacement for `keras.layers.Conv3D` with weight uncertainty.
    Each example's kernel noise `sigma * eps` is multiplied by random +-1
    signs per input and output channel (Wen et al., 2018), shared over
    spatial positions; examples see pseudo-independent kernels at the price
    of a second convolution.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 3 ints.
        strides: Positive int or tuple of 3 ints; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 3 ints; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv3DFlipout(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 5, 5, 5, 3))).shape
    TensorShape([2, 5, 5, 5, 4])
    """

    rank = 3
    estimator = linear.FLIPOUT


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv2DLocalReparameterization(VariationalConv):
    """2-D convolution sampling each activation from its Gaussian marginal.

    A drop-in replacement for `keras.layers.Conv2D` with weight uncertainty.
    Draws every output activation from `N(conv(x, mu), conv(x**2, sigma**2))`
    with independent noise per example, position and channel. The correlation
    between positions that share one kernel sample is dropped, as in
    Molchanov et al. (2017); `tfp.layers` has no such convolution.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of 2 ints.
        strides: Positive int or tuple of 2 ints; default 1.
        padding: `"valid"` (default) or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of 2 ints; default 1. Cannot be
            combined with strides > 1.
        activation: Keras activation (name or callable), default linear.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of the posterior means of the kernel.
        bias_initializer: Initializer of the bias (or of its posterior mean).
        kernel_posterior_scale_init: Initial posterior stddev of the kernel,
            > 0 (default 0.01).
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
    >>> layer = tdg.layers.Conv2DLocalReparameterization(4, 3, padding="same", seed=0)
    >>> layer(keras.ops.ones((2, 8, 8, 3))).shape
    TensorShape([2, 8, 8, 4])
    """

    rank = 2
    estimator = linear.LOCAL_REPARAMETERIZATION
