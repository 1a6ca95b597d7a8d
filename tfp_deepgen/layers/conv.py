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


class _VariationalConv(linear.VariationalLinear):
    """N-D convolution with a mean-field Normal posterior on its kernel.

    Args:
        filters: Number of output channels, a positive integer.
        kernel_size: Positive int or tuple of `rank` ints.
        strides: Positive int or tuple of `rank` ints.
        padding: `"valid"` or `"same"`.
        data_format: `"channels_last"` or `"channels_first"`; default from
            `keras.config.image_data_format()`.
        dilation_rate: Positive int or tuple of `rank` ints.
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_posterior_scale_init, bias_posterior_scale_init, kernel_prior,
        bias_prior, kl_weight, sampling, seed: as for the variational dense
            layers.
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


def _conv_class(name, rank, estimator, summary):
    cls = type(
        name,
        (_VariationalConv,),
        {
            "rank": rank,
            "estimator": estimator,
            "__doc__": summary + "\n" + _VariationalConv.__doc__.split("\n", 1)[1],
            "__module__": __name__,
        },
    )
    return keras.saving.register_keras_serializable(package="tfp_deepgen")(cls)


_REPARAM = "Convolution with one kernel sample per call (Bayes by Backprop)."
_FLIPOUT = "Convolution with flipout: per-example decorrelated weight noise."
_LOCAL = "Convolution sampling each activation from its Gaussian marginal."

Conv1DReparameterization = _conv_class(
    "Conv1DReparameterization", 1, linear.REPARAMETERIZATION, _REPARAM
)
Conv2DReparameterization = _conv_class(
    "Conv2DReparameterization", 2, linear.REPARAMETERIZATION, _REPARAM
)
Conv3DReparameterization = _conv_class(
    "Conv3DReparameterization", 3, linear.REPARAMETERIZATION, _REPARAM
)
Conv1DFlipout = _conv_class("Conv1DFlipout", 1, linear.FLIPOUT, _FLIPOUT)
Conv2DFlipout = _conv_class("Conv2DFlipout", 2, linear.FLIPOUT, _FLIPOUT)
Conv3DFlipout = _conv_class("Conv3DFlipout", 3, linear.FLIPOUT, _FLIPOUT)
Conv2DLocalReparameterization = _conv_class(
    "Conv2DLocalReparameterization", 2, linear.LOCAL_REPARAMETERIZATION, _LOCAL
)
