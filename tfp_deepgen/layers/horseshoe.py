"""A dense layer with a node-wise horseshoe prior, which switches off whole units.

Ghosh & Doshi-Velez (2017): the weights into unit `k` are
`w_jk = beta_jk * tau * lambda_k` with `beta_jk ~ N(0, 1)`, a local scale
`lambda_k ~ HalfCauchy(0, local_scale)` per unit and a global scale
`tau ~ HalfCauchy(0, global_scale)` (the non-centred parameterization). The
half-Cauchy's mass at zero shrinks units the data do not need towards zero,
and its heavy tail leaves needed ones alone.

Variational posterior: mean-field Normal over `beta`, log-normal over each
`lambda_k` and over `tau`. The KL added as a loss is
`KL(q(beta) || N(0, 1))` (analytic) plus a one-sample Monte-Carlo estimate
`log q - log p` of the scales at the drawn `lambda` and `tau`. Pre-activations
are sampled by local reparameterization: given the scales, unit `k`'s
pre-activation is `tau * lambda_k * (x beta)_k`, Gaussian in `beta`. Under
`tdg.layers.monte_carlo_mode` every stacked copy draws its own scales.

Example:

>>> import keras, tfp_deepgen as tdg
>>> layer = tdg.layers.DenseHorseshoe(8, activation="relu", kl_weight=1e-3)
>>> layer(keras.ops.ones((2, 5))).shape
TensorShape([2, 8])
>>> layer.unit_norms().shape
(8,)
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation, random
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.layers.base import VariationalLayer
from tfp_deepgen.layers.linear import preactivation_stddev
from tfp_deepgen.posteriors import MeanFieldNormal
from tfp_deepgen.priors import Normal

__all__ = ["DenseHorseshoe"]

_LOG_2_OVER_PI = math.log(2.0 / math.pi)
_MIN_LOG_SCALE_STDDEV = 1e-4


def half_cauchy_log_prob(x, scale):
    """`log HalfCauchy(x; 0, scale)` for `x > 0`."""
    return _LOG_2_OVER_PI - math.log(scale) - tf.math.log1p(tf.square(x / scale))


class _LogNormal:
    """`q(s)` with `log s ~ N(mean, stddev^2)`; variables on the owning layer."""

    def __init__(self, layer, name, shape, initial_scale, initial_stddev):
        self.mean = layer.add_weight(
            name=f"{name}_log_mean",
            shape=shape,
            initializer=keras.initializers.Constant(math.log(initial_scale)),
            dtype="float32",
            autocast=False,
        )
        self.untransformed_stddev = layer.add_weight(
            name=f"{name}_log_untransformed_stddev",
            shape=shape,
            initializer=keras.initializers.Constant(softplus_inverse(initial_stddev)),
            dtype="float32",
            autocast=False,
        )

    def stddev(self):
        return tf.math.softplus(self.untransformed_stddev) + _MIN_LOG_SCALE_STDDEV

    def sample(self, seed, copies=None):
        """A reparameterized draw and `log q` of it (`copies` independent draws, stacked)."""
        stddev = self.stddev()
        shape = tf.shape(self.mean)
        if copies is not None:
            shape = tf.concat([[copies], shape], axis=0)
        eps = random.normal(shape, seed)
        log_s = self.mean + stddev * eps
        # Density of s = exp(log s): Normal density of log s over the Jacobian s.
        log_q = -0.5 * tf.square(eps) - tf.math.log(stddev) - 0.5 * math.log(2 * math.pi) - log_s
        return tf.exp(log_s), log_q

    def posterior_mean(self):
        return tf.exp(self.mean + 0.5 * tf.square(self.stddev()))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseHorseshoe(VariationalLayer):
    """Dense layer with a node-wise horseshoe prior (Ghosh & Doshi-Velez, 2017).

    Args:
        units: Output width, a positive integer.
        activation, use_bias, bias_initializer: As for `keras.layers.Dense`
            (the bias is point-estimated).
        local_scale: Scale of each unit's half-Cauchy `lambda_k`, > 0.
        global_scale: Scale of the layer's half-Cauchy `tau`, > 0; small
            values (the paper uses 1e-5 to 1) shrink harder.
        kl_weight: Multiplier of the KL; use `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` (posterior means of
            `beta`, `lambda`, `tau`).
        seed: Integer seed of the layer's noise.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseHorseshoe(4, global_scale=1e-2)
    >>> layer(keras.ops.ones((3, 2))).shape
    TensorShape([3, 4])
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        bias_initializer="zeros",
        local_scale=1.0,
        global_scale=1e-1,
        kl_weight=1.0,
        sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        self.units = _validation.positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean("use_bias", use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.local_scale = _validation.positive_float("local_scale", local_scale)
        self.global_scale = _validation.positive_float("global_scale", global_scale)
        self._beta_prior = Normal(0.0, 1.0)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "DenseHorseshoe expects inputs of shape (batch, features) with known "
                f"features. Received input_shape={tuple(input_shape)}"
            )
        fan_in = int(input_shape[-1])
        # Start with weights of Glorot size: beta ~ U(+-sqrt(3)), tau * lambda = sqrt(2 / fan sum).
        initial_scale = math.sqrt(2.0 / (fan_in + self.units))
        self._beta = MeanFieldNormal(
            self,
            "beta",
            (fan_in, self.units),
            loc_initializer=keras.initializers.RandomUniform(-math.sqrt(3), math.sqrt(3)),
            scale_init=0.1,
        )
        self._local = _LogNormal(self, "local_scale", (self.units,), 1.0, 0.1)
        self._global = _LogNormal(self, "global_scale", (), initial_scale, 0.1)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )

    def unit_scales(self):
        """Posterior mean of `tau * lambda_k` per unit (NumPy array)."""
        return (self._global.posterior_mean() * self._local.posterior_mean()).numpy()

    def unit_norms(self):
        """L2 norm of each unit's posterior-mean incoming weights (NumPy array)."""
        beta = self._beta.loc.numpy()
        return np.linalg.norm(beta, axis=0) * self.unit_scales()

    def call(self, inputs, training=None):
        dtype = self.compute_dtype
        beta_scale = self._beta.scale()
        copies = self.inference_state.monte_carlo_samples
        noisy = self.sampling_enabled
        seeds = tf.random.experimental.stateless_split(self.next_seed(per_replica=noisy), 3)
        # One draw of the scales per call, or per stacked copy in Monte-Carlo mode.
        local, log_q_local = self._local.sample(seeds[0], copies)
        tau, log_q_tau = self._global.sample(seeds[1], copies)
        if copies is None:
            kl = self._beta.kl_divergence(self._beta_prior, beta_scale)
            kl += tf.reduce_sum(log_q_local - half_cauchy_log_prob(local, self.local_scale))
            kl += log_q_tau - half_cauchy_log_prob(tau, self.global_scale)
            self.add_kl(kl, training, inputs)
        if not noisy:
            local, tau = self._local.posterior_mean(), self._global.posterior_mean()
        outputs = tf.matmul(inputs, tf.cast(self._beta.loc, dtype))
        if noisy:
            # Local reparameterization of beta given the scales.
            stddev = preactivation_stddev(tf.matmul, inputs, tf.square(beta_scale), [-1])
            eps = random.normal(tf.shape(stddev), seeds[2])
            outputs += tf.cast(stddev * eps, dtype)
        unit_scale = tf.cast(tf.expand_dims(tau, -1) * local, dtype)
        if copies is None:
            outputs *= unit_scale
        else:
            per_copy = tf.reshape(outputs, [copies, -1, self.units]) * unit_scale[:, None, :]
            outputs = tf.reshape(per_copy, [-1, self.units])
        if self.bias is not None:
            outputs += tf.cast(self.bias, dtype)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "local_scale": self.local_scale,
                "global_scale": self.global_scale,
            }
        )
        return config
