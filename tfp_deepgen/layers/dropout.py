"""Dropout layers whose noise is a posterior: MC dropout and Gaussian dropout.

Dropout training is approximate variational inference (Gal & Ghahramani,
2016); keeping the noise on at inference turns a network into a sampler of
its approximate posterior, which `tfp_deepgen.predictive` averages.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((4,)),
...     keras.layers.Dense(16, activation="relu", kernel_initializer="ones"),
...     tdg.layers.MCDropout(0.5, seed=0),
...     keras.layers.Dense(1, kernel_initializer="ones"),
... ])
>>> a, b = model(keras.ops.ones((1, 4))), model(keras.ops.ones((1, 4)))
>>> bool(keras.ops.any(a != b))  # a new dropout mask per call
True
"""

import math

import keras
import tensorflow as tf

from tfp_deepgen import _validation, random
from tfp_deepgen.layers.base import StochasticLayer

__all__ = ["MCDropout", "GaussianDropout"]


def _check_rate(rate):
    rate = _validation.non_negative_float("rate", rate)
    if rate >= 1.0:
        raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate!r}")
    return rate


class _Dropout(StochasticLayer):
    """Shared argument handling; subclasses implement `noise(inputs)`."""

    def __init__(self, rate, sampling="sample", seed=None, **kwargs):
        super().__init__(sampling=sampling, seed=seed, **kwargs)
        self.rate = _check_rate(rate)
        self.supports_masking = True

    def noise_on(self, training):
        """Whether this call draws noise."""
        return self.sampling_enabled and self.rate > 0.0

    def call(self, inputs, training=None):
        # Monte-Carlo mode samples whatever `training` says (`noise_on` of
        # `GaussianDropout` also asks for training), so it is checked apart.
        if self.inference_state.monte_carlo_samples is None and not self.noise_on(training):
            return inputs
        return self.noise(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class MCDropout(_Dropout):
    """Bernoulli dropout that stays on at inference (Monte-Carlo dropout).

    Each entry is zeroed with probability `rate` and the survivors scaled by
    `1 / (1 - rate)`, in training and at inference alike, so repeated
    predictions are draws from the approximate posterior predictive
    (Gal & Ghahramani, 2016). `sampling="mean"` turns the noise off (the
    identity, which is the mean of the dropout output).

    Args:
        rate: Probability of dropping an entry, in [0, 1).
        noise_shape: Like `keras.layers.Dropout`: the mask's shape, with 1 on
            axes where the mask is shared (e.g. `(None, 1, 1, C)` to drop
            whole channels). The batch axis must be None: every example gets
            its own mask.
        sampling: `"sample"` (default) or `"mean"` (no noise).
        seed: Integer seed of the layer's noise.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.MCDropout(0.5, seed=0)
    >>> y = layer(keras.ops.ones((2, 4)))
    >>> sorted(set(y.numpy().ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    """

    def __init__(self, rate, noise_shape=None, sampling="sample", seed=None, **kwargs):
        super().__init__(rate, sampling=sampling, seed=seed, **kwargs)
        if noise_shape is not None:
            noise_shape = tuple(noise_shape)
            if (
                not noise_shape
                or noise_shape[0] is not None
                or any(d is not None and (not isinstance(d, int) or d < 1) for d in noise_shape)
            ):
                raise ValueError(
                    "`noise_shape` must be None or a tuple starting with None (one mask "
                    "per example) followed by None or positive ints. "
                    f"Received: noise_shape={noise_shape!r}"
                )
        self.noise_shape = noise_shape

    def _mask_shape(self, inputs):
        shape = tf.shape(inputs)
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != inputs.shape.rank:
            raise ValueError(
                f"`noise_shape` has {len(self.noise_shape)} entries but the inputs have "
                f"rank {inputs.shape.rank}. Received: noise_shape={self.noise_shape}"
            )
        return tf.stack([shape[i] if d is None else d for i, d in enumerate(self.noise_shape)])

    def noise(self, inputs):
        words = tf.random.stateless_uniform(
            self._mask_shape(inputs),
            seed=self.next_seed(),
            minval=None,
            maxval=None,
            dtype=tf.int32,
            alg="philox",
        )
        # An entry survives when its uniform 32-bit word lies above rate * 2^32.
        cutoff = tf.constant(
            min(int(round(self.rate * 2.0**32)) - 2**31, 2**31 - 1), dtype=tf.int32
        )
        keep = tf.cast(words >= cutoff, inputs.dtype)
        return inputs * keep * tf.constant(1.0 / (1.0 - self.rate), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["noise_shape"] = self.noise_shape
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class GaussianDropout(_Dropout):
    """Multiplicative Gaussian noise `x * xi`, `xi ~ N(1, alpha)`, `alpha = rate / (1 - rate)`.

    Gaussian dropout matches the mean and variance of Bernoulli dropout of the
    same rate (Srivastava et al., 2014): `E[y] = x`, `Var[y] = alpha x^2`.
    Like `keras.layers.GaussianDropout` the noise is on in training only;
    pass `at_inference=True` to keep it at inference too (then it samples
    an approximate posterior like `MCDropout`). Inside
    `tdg.layers.monte_carlo_mode` (used by `tdg.predictive`) it always samples.

    Args:
        rate: Dropout rate, in [0, 1).
        at_inference: Whether calls outside training draw noise too.
        sampling: `"sample"` (default) or `"mean"` (no noise at all).
        seed: Integer seed of the layer's noise.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.GaussianDropout(0.5, at_inference=True, seed=0)
    >>> y = layer(keras.ops.ones((1000, 10)))
    >>> abs(float(keras.ops.mean(y)) - 1.0) < 0.05
    True
    """

    def __init__(self, rate, at_inference=False, sampling="sample", seed=None, **kwargs):
        super().__init__(rate, sampling=sampling, seed=seed, **kwargs)
        self.at_inference = _validation.boolean("at_inference", at_inference)

    @property
    def alpha(self):
        """Variance of the multiplicative noise, `rate / (1 - rate)`."""
        return self.rate / (1.0 - self.rate)

    def noise_on(self, training):
        return super().noise_on(training) and (bool(training) or self.at_inference)

    def noise(self, inputs):
        eps = random.normal(tf.shape(inputs), self.next_seed(), inputs.dtype)
        return inputs * (1.0 + tf.constant(math.sqrt(self.alpha), inputs.dtype) * eps)

    def get_config(self):
        config = super().get_config()
        config["at_inference"] = self.at_inference
        return config
