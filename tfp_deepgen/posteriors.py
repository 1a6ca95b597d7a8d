"""Variational families for the weights of a layer.

Keras 3 tracks only plain variables, so a posterior stores unconstrained
variables and applies its transform (`exp` of a log scale) when read.

Example:

>>> import keras, tfp_deepgen as tdg
>>> layer = keras.layers.Layer()
>>> q = tdg.posteriors.MeanFieldNormal(layer, "kernel", (3, 2), scale_init=0.01)
>>> q.distribution().event_shape
TensorShape([3, 2])
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation, random
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.priors import LogUniform

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "FAMILIES",
    "FullCovarianceNormal",
    "LogVarianceNormal",
    "MeanFieldNormal",
    "MultiplicativeNormal",
    "softplus_inverse",
]

#: Floor added to the softplus-transformed scales (the full-covariance
#: diagonal, a trainable prior's scale) so their log stays finite.
MIN_SCALE = 1e-8

# Lower bound of the learned log alpha of variational dropout.
_MIN_LOG_ALPHA = -8.0


def _float32_weight(layer, name, shape, initializer, trainable=True):
    # autocast=False: sampling and the KL stay float32 under mixed precision.
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=initializer,
        dtype="float32",
        trainable=trainable,
        autocast=False,
    )


#: Initial posterior stddev of every weight. Measured against 1e-3, 0.05 and
#: tfp.layers' start (`python benchmarks/posterior_init.py`): 0.01 gave the best
#: or equal test NLL and accuracy on TFP's Flipout LeNet (MNIST-5k, 9 epochs)
#: and a better test NLL than 1e-3 on Boston-housing regression, where 0.05 was
#: better still but cost LeNet 1.2 points of accuracy. At 1e-3 the scales
#: barely move: the gradient of a log scale is scaled by the scale itself.
DEFAULT_SCALE_INIT = 0.01


class MeanFieldNormal:
    """Fully factorised Normal `q(w) = prod_i N(w_i; loc_i, scale_i^2)`.

    Creates two float32 variables on `layer`: `{name}_loc` and
    `{name}_log_scale`, with `scale = exp(log_scale)`. Storing the log makes
    the scale one `exp` per weight (whose gradient reuses its output) and lets
    the KL read `log(scale)` straight from the variable; softplus, the other
    common choice, costs an `exp` and a `log1p` per weight, and the KL a
    `log` on top. For scales well below 1, as posterior scales are, the two
    take nearly the same steps (`softplus(x) ~ exp(x)` for `x << 0`).
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

    #: Whether `scale()` reads `loc` (then it cannot be snapshotted from
    #: `untransformed_scale` alone).
    scale_depends_on_loc = False

    def __init__(
        self,
        layer,
        name,
        shape,
        loc_initializer="glorot_uniform",
        scale_init=DEFAULT_SCALE_INIT,
        trainable=True,
    ):
        scale_init = _validation.positive_float(f"{name}_posterior_scale_init", scale_init)
        self.shape = tuple(shape)
        self.loc = _float32_weight(layer, f"{name}_loc", self.shape, loc_initializer, trainable)
        self.log_scale = _float32_weight(
            layer,
            f"{name}_log_scale",
            self.shape,
            keras.initializers.Constant(math.log(scale_init)),
            trainable,
        )

    @property
    def untransformed_scale(self):
        """The variable the scale is computed from (here `log_scale`)."""
        return self.log_scale

    def scale(self):
        """Posterior standard deviations, float32."""
        return tf.exp(self.log_scale)

    def sample(self, seed, num_samples=None):
        """Reparameterized draws `loc + scale * eps`, float32.

        One draw of shape `shape`, or `num_samples` of them stacked first.
        The noise comes from `tfp_deepgen.random.normal` (Philox bits).
        """
        batch = () if num_samples is None else (num_samples,)
        eps = random.normal((*batch, *self.shape), seed)
        return self.loc + self.scale() * eps

    def kl_divergence(self, prior, scale, sample=None):
        """`KL(q || prior)` summed over the weights, given `scale()` read once."""
        return prior.kl_divergence(self.loc, scale, sample=sample, log_scale=self.log_scale)

    def distribution(self):
        """The posterior as a TFP distribution with event shape `shape`."""
        return tfd.Independent(
            tfd.Normal(self.loc, self.scale()),
            reinterpreted_batch_ndims=len(self.shape),
        )


def _require_log_uniform(prior, posterior):
    if not isinstance(prior, LogUniform):
        raise ValueError(
            f"{posterior} has a KL only against tfp_deepgen.priors.LogUniform. "
            f"Received: prior={prior!r}"
        )


class LogVarianceNormal(MeanFieldNormal):
    """`q(w) = N(theta, sigma^2)` stored as `theta` and `log sigma^2`.

    The additive reparameterization of sparse variational dropout (Molchanov
    et al., 2017): the noise `sigma` is a free parameter instead of
    `sqrt(alpha) |theta|`, which keeps gradient variance low when `alpha` is
    large. `log alpha = log sigma^2 - log theta^2` (clipped to `[-8, 8]`) is
    what the log-uniform KL and pruning read. Creates `{name}_loc` and
    `{name}_log_sigma2` on `layer`, float32.

    Args:
        layer: The Keras layer that owns the variables.
        name: Prefix of the variable names.
        shape: Shape of the weight tensor.
        loc_initializer: Keras initializer of `theta`.
        log_variance_init: Initial `log sigma^2` of every weight.
    """

    def __init__(
        self, layer, name, shape, loc_initializer="glorot_uniform", log_variance_init=-10.0
    ):
        log_variance_init = _validation.finite_float("log_sigma2_init", log_variance_init)
        self.shape = tuple(shape)
        self.loc = _float32_weight(layer, f"{name}_loc", self.shape, loc_initializer)
        self.log_variance = _float32_weight(
            layer, f"{name}_log_sigma2", self.shape, keras.initializers.Constant(log_variance_init)
        )

    @property
    def untransformed_scale(self):
        """The variable the scale is computed from (`log sigma^2`)."""
        return self.log_variance

    def scale(self):
        return tf.exp(0.5 * self.log_variance)

    def log_alpha(self):
        """`log sigma^2 - log theta^2`, clipped to `[-8, 8]`, float32."""
        log_alpha = self.log_variance - tf.math.log(tf.square(self.loc) + 1e-8)
        return tf.clip_by_value(log_alpha, -8.0, 8.0)

    def kl_divergence(self, prior, scale, sample=None):
        del scale, sample  # the KL reads log alpha directly
        _require_log_uniform(prior, type(self).__name__)
        return tf.reduce_sum(prior.kl_from_log_alpha(self.log_alpha()))


class MultiplicativeNormal(MeanFieldNormal):
    """`q(w) = N(theta, alpha theta^2)`: Gaussian dropout noise on the weights.

    `alpha` is shared along the axes where `alpha_shape` has size 1 (one per
    output unit, or one per layer), as in variational dropout (Kingma,
    Salimans & Welling, 2015). Creates `{name}_loc` and `{name}_log_alpha` on
    `layer`, float32; `log alpha` is softly bounded to `(-8, max_log_alpha)` when read.

    Args:
        layer: The Keras layer that owns the variables.
        name: Prefix of the variable names.
        shape: Shape of the weight tensor.
        alpha_shape: Shape of `log alpha`, broadcastable to `shape`.
        loc_initializer: Keras initializer of `theta`.
        log_alpha_init: Initial `log alpha`.
        max_log_alpha: Upper clip of `log alpha`.
    """

    #: The scale depends on `loc`, so it cannot be snapshotted from one variable.
    scale_depends_on_loc = True

    def __init__(
        self,
        layer,
        name,
        shape,
        alpha_shape,
        loc_initializer="glorot_uniform",
        log_alpha_init=-4.0,
        max_log_alpha=0.0,
    ):
        self.shape = tuple(shape)
        self.max_log_alpha = max_log_alpha
        self.loc = _float32_weight(layer, f"{name}_loc", self.shape, loc_initializer)
        if not _MIN_LOG_ALPHA < log_alpha_init < max_log_alpha:
            raise ValueError(
                f"The initial log alpha must lie in ({_MIN_LOG_ALPHA}, {max_log_alpha}). "
                f"Received: log_alpha_init={log_alpha_init!r}"
            )
        # Invert the soft bounds of `log_alpha()` so it starts at log_alpha_init.
        below_cap = max_log_alpha - softplus_inverse(max_log_alpha - log_alpha_init)
        raw_init = _MIN_LOG_ALPHA + softplus_inverse(below_cap - _MIN_LOG_ALPHA)
        self.raw_log_alpha = _float32_weight(
            layer, f"{name}_log_alpha", tuple(alpha_shape), keras.initializers.Constant(raw_init)
        )

    def log_alpha(self):
        """`log alpha` softly bounded to `(-8, max_log_alpha)`, in its own shape.

        Softplus bounds rather than a clip: a clipped value has zero gradient,
        so a rate pushed past its cap by one optimizer step would stay there.
        """
        floored = _MIN_LOG_ALPHA + tf.math.softplus(self.raw_log_alpha - _MIN_LOG_ALPHA)
        return self.max_log_alpha - tf.math.softplus(self.max_log_alpha - floored)

    def scale(self):
        return tf.exp(0.5 * self.log_alpha()) * tf.abs(self.loc)

    def kl_divergence(self, prior, scale, sample=None):
        del scale, sample  # the KL reads log alpha directly
        _require_log_uniform(prior, type(self).__name__)
        kl = tf.broadcast_to(prior.kl_from_log_alpha(self.log_alpha()), self.shape)
        return tf.reduce_sum(kl)


class FullCovarianceNormal:
    """A multivariate Normal over all the weights: `q(w) = N(loc, L L^T)`.

    Captures the correlations between weights that a mean-field posterior
    drops (keras-io's "Probabilistic Bayesian Neural Networks" uses it). For n
    weights it holds `n + n (n + 1) / 2` float32 variables, `{name}_loc` and
    `{name}_untransformed_scale_tril` (TFP's `FillScaleTriL` layout: the
    diagonal through softplus + 1e-8), so it suits small layers only; a layer
    refuses more than `MAX_WEIGHTS`.

    Args:
        layer: The Keras layer that owns the variables.
        name: Prefix of the variable names.
        shape: Shape of the weight tensor (the distribution is over its
            flattened entries).
        loc_initializer: Keras initializer of the means (called with `shape`).
        scale_init: Initial posterior standard deviation of every weight
            (uncorrelated at the start), > 0.
        trainable: Whether both variables are trained.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = keras.layers.Layer()
    >>> q = tdg.posteriors.FullCovarianceNormal(layer, "kernel", (3, 2))
    >>> tuple(q.scale_tril().shape)
    (6, 6)
    """

    #: Largest number of weights (the scale matrix has n (n + 1) / 2 entries).
    MAX_WEIGHTS = 2_000

    def __init__(
        self,
        layer,
        name,
        shape,
        loc_initializer="glorot_uniform",
        scale_init=DEFAULT_SCALE_INIT,
        trainable=True,
    ):
        scale_init = _validation.positive_float(f"{name}_posterior_scale_init", scale_init)
        self.shape = tuple(shape)
        self.size = int(np.prod(self.shape))
        if self.size > self.MAX_WEIGHTS:
            raise ValueError(
                f"A full-covariance posterior over {self.size} weights holds "
                f"{self.size * (self.size + 1) // 2} scale parameters; it is limited to "
                f"{self.MAX_WEIGHTS} weights. Use the mean-field posterior for larger layers."
            )
        initializer = keras.initializers.get(loc_initializer)
        self.loc = _float32_weight(
            layer,
            f"{name}_loc",
            (self.size,),
            lambda shape, dtype=None: tf.reshape(initializer(self.shape, dtype), shape),
            trainable,
        )
        self._bijector = tfb.FillScaleTriL(diag_bijector=tfb.Softplus(), diag_shift=MIN_SCALE)
        start = self._bijector.inverse(
            tf.eye(self.size, dtype="float32") * (scale_init - MIN_SCALE)
        ).numpy()
        self.untransformed_scale_tril = _float32_weight(
            layer,
            f"{name}_untransformed_scale_tril",
            start.shape,
            keras.initializers.Constant(start),
            trainable,
        )

    def scale_tril(self):
        """The lower-triangular factor L of the covariance, `(n, n)`, float32."""
        return self._bijector.forward(self.untransformed_scale_tril)

    def sample(self, seed, num_samples=None):
        """Reparameterized draws `loc + L eps`: shape `shape`, or `(num_samples, *shape)`."""
        batch = [] if num_samples is None else [num_samples]
        eps = random.normal([*batch, self.size], seed)
        draws = self.loc + tf.linalg.matvec(self.scale_tril(), eps)
        return tf.reshape(draws, [*batch, *self.shape])

    def mean(self):
        """The posterior mean in the weights' shape."""
        return tf.reshape(self.loc, self.shape)

    def distribution(self):
        """The posterior as a TFP `MultivariateNormalTriL` over the flattened weights."""
        return tfd.MultivariateNormalTriL(self.loc, self.scale_tril())


#: Posterior families a `tdg.layers.DenseVariational` takes by name.
FAMILIES = {"mean_field": MeanFieldNormal, "full_covariance": FullCovarianceNormal}
