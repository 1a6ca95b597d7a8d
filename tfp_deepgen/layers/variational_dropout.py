"""Variational dropout: Gaussian weight noise with a learned rate and a log-uniform prior.

With the improper log-uniform prior `p(|w|) ∝ 1 / |w|` and the posterior
`q(w) = N(theta, alpha theta^2)`, the KL depends on `alpha` alone, so
Gaussian dropout with rate `alpha / (1 + alpha)` becomes a variational
method whose dropout rate is learned (Kingma, Salimans & Welling, 2015).
Learning one `alpha` per weight (sparse variational dropout, Molchanov,
Ashukha & Vetrov, 2017) drives most of them to infinity: those weights carry
only noise and are dropped at evaluation.

Both layers sample pre-activations by local reparameterization and add
`kl_weight * KL` like every variational layer (`priors.LogUniform` gives the
KL). With the default `sampling="sample"` they also sample at inference, so
`tfp_deepgen.predictive` sees their uncertainty; evaluate the pruned
deterministic network inside `tdg.layers.sampling_mode(model, "mean")`.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((20,)),
...     tdg.layers.DenseSparseVariationalDropout(8, activation="relu", kl_weight=1e-3),
...     tdg.layers.DenseSparseVariationalDropout(1, kl_weight=1e-3),
... ])
>>> model(keras.ops.ones((2, 20))).shape
TensorShape([2, 1])
>>> model.layers[0].sparsity() < 0.05  # few weights start out dropped
True
"""

import math

import keras
import tensorflow as tf

from tfp_deepgen import _validation, priors
from tfp_deepgen.layers import conv, dense, linear
from tfp_deepgen.posteriors import LogVarianceNormal, MultiplicativeNormal

__all__ = [
    "DenseVariationalDropout",
    "DenseSparseVariationalDropout",
    "Conv2DSparseVariationalDropout",
]

# Arguments of the generic variational layers that these layers fix.
_FIXED_ARGUMENTS = (
    "kernel_prior",
    "bias_prior",
    "kernel_posterior_scale_init",
    "bias_posterior_scale_init",
)


class _LogUniformLayer:
    """Mixin over a variational dense or conv class: log-uniform prior, point bias."""

    estimator = linear.LOCAL_REPARAMETERIZATION

    def __init__(self, *args, **kwargs):
        for key in _FIXED_ARGUMENTS:
            if key in kwargs:
                raise ValueError(
                    f"{type(self).__name__} fixes `{key}` (log-uniform prior on the "
                    f"kernel, point-estimated bias). Received: {key}={kwargs[key]!r}"
                )
        super().__init__(*args, kernel_prior=priors.LogUniform(), bias_prior=None, **kwargs)

    @property
    def log_alpha(self):
        """`log alpha` of the kernel's noise (clipped), a float32 tensor."""
        return self._kernel_posterior.log_alpha()

    def get_config(self):
        config = super().get_config()
        for key in _FIXED_ARGUMENTS:
            config.pop(key)
        return config


def _log_alpha_of_rate(name, rate):
    rate = _validation.open_unit_float(name, rate)
    return math.log(rate / (1.0 - rate))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseVariationalDropout(_LogUniformLayer, dense.VariationalDense):
    """Dense layer with variational Gaussian dropout whose rate is learned.

    The weights have the posterior `N(theta, alpha theta^2)`, i.e. Gaussian
    dropout of rate `alpha / (1 + alpha)` on every weight, with `alpha`
    learned per output unit or per layer (Kingma, Salimans & Welling, 2015,
    independent weight noise). `alpha` stays below `max_rate / (1 - max_rate)`
    (`alpha < 1` by default, as in the paper, where larger `alpha` made
    gradients too noisy) and above `exp(-8)`, through softplus bounds that
    keep its gradient alive.

    Args:
        units: Output width, a positive integer.
        alpha_per: `"unit"` (one rate per output unit) or `"layer"`.
        initial_rate: Initial dropout rate, in (0, 1).
        max_rate: Bound on the dropout rate, in (0, 1), > `initial_rate`.
        activation, use_bias, kernel_initializer, bias_initializer: As for
            `tdg.layers.DenseFlipout`; the bias is point-estimated.
        kl_weight, sampling, seed: As for `tdg.layers.DenseFlipout`.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseVariationalDropout(4, initial_rate=0.2)
    >>> layer(keras.ops.ones((3, 5))).shape
    TensorShape([3, 4])
    >>> [round(r, 2) for r in layer.dropout_rate.numpy().tolist()]
    [0.2, 0.2, 0.2, 0.2]
    """

    def __init__(self, units, alpha_per="unit", initial_rate=0.2, max_rate=0.5, **kwargs):
        super().__init__(units, **kwargs)
        self.alpha_per = _validation.one_of("alpha_per", alpha_per, ("unit", "layer"))
        self.initial_rate = _validation.open_unit_float("initial_rate", initial_rate)
        self.max_rate = _validation.open_unit_float("max_rate", max_rate)
        smallest = 1.0 / (1.0 + math.exp(8.0))  # log alpha = -8
        if not smallest < self.initial_rate < self.max_rate:
            raise ValueError(
                f"`initial_rate` must lie strictly between {smallest:.2e} (log alpha = -8) "
                f"and `max_rate`. Received: initial_rate={initial_rate!r}, max_rate={max_rate!r}"
            )

    def make_kernel_posterior(self, kernel_shape):
        alpha_shape = (1, self.units) if self.alpha_per == "unit" else ()
        return MultiplicativeNormal(
            self,
            "kernel",
            kernel_shape,
            alpha_shape=alpha_shape,
            loc_initializer=self.kernel_initializer,
            log_alpha_init=_log_alpha_of_rate("initial_rate", self.initial_rate),
            max_log_alpha=_log_alpha_of_rate("max_rate", self.max_rate),
        )

    @property
    def dropout_rate(self):
        """The learned Gaussian dropout rate(s) `alpha / (1 + alpha)`."""
        return tf.reshape(tf.sigmoid(self.log_alpha), [-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha_per": self.alpha_per,
                "initial_rate": self.initial_rate,
                "max_rate": self.max_rate,
            }
        )
        return config


class _SparseVariationalDropout(_LogUniformLayer):
    """Per-weight `log alpha`; weights above `threshold` are dropped outside training."""

    def __init__(self, *args, threshold=3.0, log_sigma2_init=-10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = _validation.finite_float("threshold", threshold)
        self.log_sigma2_init = _validation.finite_float("log_sigma2_init", log_sigma2_init)

    def make_kernel_posterior(self, kernel_shape):
        return LogVarianceNormal(
            self,
            "kernel",
            kernel_shape,
            loc_initializer=self.kernel_initializer,
            log_variance_init=self.log_sigma2_init,
        )

    def kept_weights(self, threshold=None):
        """Float32 mask of the kernel: 1 where `log alpha <= threshold`."""
        threshold = self.threshold if threshold is None else threshold
        threshold = _validation.finite_float("threshold", threshold)
        return tf.cast(self.log_alpha <= threshold, "float32")

    def sparsity(self, threshold=None):
        """Fraction of kernel weights dropped (`log alpha > threshold`), a float.

        Args:
            threshold: Defaults to the layer's `threshold`.
        """
        kept = int(tf.reduce_sum(tf.cast(self.kept_weights(threshold), "int32")))
        total = math.prod(self._kernel_posterior.shape)
        return (total - kept) / total

    def inference_kernel(self, loc, scale):
        keep = self.kept_weights()
        return loc * keep, scale * keep

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold, "log_sigma2_init": self.log_sigma2_init})
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseSparseVariationalDropout(_SparseVariationalDropout, dense.VariationalDense):
    """Dense layer with sparse variational dropout: a learned dropout rate per weight.

    Each weight has the posterior `N(theta, sigma^2)` with its own
    `log alpha = log sigma^2 - log theta^2` (the additive reparameterization of
    Molchanov et al., 2017), clipped to `[-8, 8]`. Training samples
    pre-activations by local reparameterization; outside training
    (`training` not True: `predict`, `evaluate`, serving) weights with
    `log alpha > threshold` are set to zero, and the rest sample or, under
    `sampling="mean"`, give `theta`.

    Args:
        units: Output width, a positive integer.
        threshold: `log alpha` above which a weight is dropped (default 3,
            i.e. dropout rate > 0.95).
        log_sigma2_init: Initial `log sigma^2` of every weight.
        kl_weight: Multiplier of the KL; use `1 / num_training_examples`.
        activation, use_bias, kernel_initializer, bias_initializer: As for
            the other variational layers; the bias is point-estimated.
        sampling, seed: As for the other variational layers.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseSparseVariationalDropout(3, threshold=3.0)
    >>> layer(keras.ops.ones((2, 4))).shape
    TensorShape([2, 3])
    >>> layer.log_alpha.shape
    TensorShape([4, 3])
    """


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Conv2DSparseVariationalDropout(_SparseVariationalDropout, conv.VariationalConv):
    """2-D convolution with sparse variational dropout: a learned dropout rate per weight.

    Each weight has the posterior `N(theta, sigma^2)` with its own
    `log alpha = log sigma^2 - log theta^2` (the additive reparameterization of
    Molchanov et al., 2017), clipped to `[-8, 8]`. Training samples
    pre-activations by local reparameterization; outside training
    (`training` not True: `predict`, `evaluate`, serving) weights with
    `log alpha > threshold` are set to zero, and the rest sample or, under
    `sampling="mean"`, give `theta`.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate:
            As for `keras.layers.Conv2D`.
        threshold: `log alpha` above which a weight is dropped (default 3,
            i.e. dropout rate > 0.95).
        log_sigma2_init: Initial `log sigma^2` of every weight.
        kl_weight: Multiplier of the KL; use `1 / num_training_examples`.
        activation, use_bias, kernel_initializer, bias_initializer: As for
            the other variational layers; the bias is point-estimated.
        sampling, seed: As for the other variational layers.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.Conv2DSparseVariationalDropout(4, 3)
    >>> layer(keras.ops.ones((2, 8, 8, 1))).shape
    TensorShape([2, 6, 6, 4])
    """

    rank = 2
