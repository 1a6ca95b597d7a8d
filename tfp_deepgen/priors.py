"""Priors over the weights of variational layers.

A prior is a small serializable object: it builds the TFP distribution of a
weight tensor and computes ``KL(q || p)`` against a mean-field Normal
posterior. The KL is analytic where TFP registers one for the pair, and a
single-sample Monte-Carlo estimate otherwise.

Example:

>>> import tfp_deepgen as tdg
>>> prior = tdg.priors.ScaleMixtureNormal(pi=0.5, scale1=1.0, scale2=0.01)
>>> prior.has_analytic_kl
False
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation

tfd = tfp.distributions

__all__ = ["Prior", "Normal", "ScaleMixtureNormal", "LogUniform", "TrainableNormal", "get"]

# Blundell et al. (2015) report -log(scale2) in {6, 7, 8} working best.
_DEFAULT_NARROW_SCALE = math.exp(-6)


class Prior:
    """Base class of weight priors.

    Subclasses implement `distribution(shape)`; every prior is elementwise
    (i.i.d. over the entries of the weight tensor) so its log-density and KL
    are sums over entries.
    """

    #: Whether `kl_divergence` needs no posterior sample (a closed form, or
    #: for `LogUniform` a closed-form approximation).
    has_analytic_kl = False

    def distribution(self, shape=(), dtype="float32"):
        """Returns the prior as a TFP distribution with batch shape `shape`."""
        raise NotImplementedError

    def log_prob(self, weights):
        """Elementwise log-density of `weights` under the prior."""
        return self.distribution(tf.shape(weights), weights.dtype).log_prob(weights)

    def kl_divergence(self, loc, scale, sample=None, log_scale=None):
        """Sum over entries of `KL(Normal(loc, scale) || prior)`.

        Args:
            loc: Posterior means, any shape.
            scale: Posterior standard deviations, same shape as `loc`.
            sample: A draw from the posterior, used for the Monte-Carlo
                estimate when no analytic KL exists. Required in that case.
            log_scale: `log(scale)` when the caller holds it (a posterior
                stored as a log scale passes its variable), so a closed form
                needs no `log` per weight; computed from `scale` otherwise.

        Returns:
            A scalar float tensor.
        """
        posterior = tfd.Normal(loc, scale)
        if self.has_analytic_kl:
            # A scalar prior broadcasts against the posterior's batch shape.
            prior = self.distribution((), loc.dtype)
            return tf.reduce_sum(tfd.kl_divergence(posterior, prior))
        if sample is None:
            raise ValueError(
                f"{type(self).__name__} has no analytic KL; a posterior "
                "`sample` is needed for the Monte-Carlo estimate."
            )
        return tf.reduce_sum(posterior.log_prob(sample) - self.log_prob(sample))

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Normal(Prior):
    """Independent Normal prior `N(loc, scale^2)` on every weight.

    The KL against a mean-field Normal posterior is analytic.

    Args:
        loc: Prior mean.
        scale: Prior standard deviation, > 0.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.priors.Normal(0.0, 1.0).has_analytic_kl
    True
    """

    has_analytic_kl = True

    def __init__(self, loc=0.0, scale=1.0):
        self.loc = _validation.finite_float("loc", loc)
        self.scale = _validation.positive_float("scale", scale)

    def distribution(self, shape=(), dtype="float32"):
        loc = tf.fill(shape, tf.constant(self.loc, dtype))
        return tfd.Normal(loc, tf.constant(self.scale, dtype))

    def kl_divergence(self, loc, scale, sample=None, log_scale=None):
        """Closed form, `sum log(s/scale) + (scale^2 + (loc - m)^2) / (2 s^2) - 1/2`.

        Written out with its gradient (`(loc - m) / s^2`, `scale / s^2`, and
        `-1` for `log(scale)`) rather than through TFP's registered KL: same
        values, about 5% off a dense training step, since autodiff would keep
        and revisit more intermediates of the elementwise graph.
        """
        del sample  # the KL is exact
        # Read variables first: a custom gradient is taken w.r.t. tensor inputs.
        loc, scale = tf.convert_to_tensor(loc), tf.convert_to_tensor(scale)
        log_scale = tf.math.log(scale) if log_scale is None else tf.convert_to_tensor(log_scale)
        prior_loc = tf.constant(self.loc, loc.dtype)
        prior_var = tf.constant(self.scale**2, loc.dtype)
        log_prior_scale = tf.constant(math.log(self.scale), loc.dtype)

        @tf.custom_gradient
        def normal_kl(loc, scale, log_scale):
            delta = loc - prior_loc
            terms = (tf.square(scale) + tf.square(delta)) / (2.0 * prior_var) - log_scale
            kl = tf.reduce_sum(terms) + tf.cast(tf.size(loc), loc.dtype) * (log_prior_scale - 0.5)

            def grad(upstream):
                return (
                    upstream * delta / prior_var,
                    upstream * scale / prior_var,
                    -upstream * tf.ones_like(log_scale),
                )

            return kl, grad

        return normal_kl(loc, scale, log_scale)

    def get_config(self):
        return {"loc": self.loc, "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class ScaleMixtureNormal(Prior):
    """Scale mixture of two zero-mean Normals (Blundell et al., 2015).

    `p(w) = pi N(w; 0, scale1^2) + (1 - pi) N(w; 0, scale2^2)`: a wide
    component and a narrow one that pulls many weights to zero. It has no
    closed-form KL against a Normal, so layers use a one-sample Monte-Carlo
    estimate `log q(w) - log p(w)` at the weights they sampled.

    Args:
        pi: Weight of the first component, in (0, 1).
        scale1: Standard deviation of the first component, > 0.
        scale2: Standard deviation of the second component, > 0.

    Example:

    >>> import tfp_deepgen as tdg
    >>> prior = tdg.priors.ScaleMixtureNormal(0.25, 1.0, math.exp(-6))
    """

    def __init__(self, pi=0.5, scale1=1.0, scale2=_DEFAULT_NARROW_SCALE):
        self.pi = _validation.open_unit_float("pi", pi)
        self.scale1 = _validation.positive_float("scale1", scale1)
        self.scale2 = _validation.positive_float("scale2", scale2)

    def distribution(self, shape=(), dtype="float32"):
        batch = tf.concat([tf.cast(shape, tf.int32), [2]], axis=0)
        logits = tf.math.log(tf.constant([self.pi, 1.0 - self.pi], dtype))
        scales = tf.constant([self.scale1, self.scale2], dtype)
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.broadcast_to(logits, batch)),
            components_distribution=tfd.Normal(
                tf.zeros(batch, dtype), tf.broadcast_to(scales, batch)
            ),
        )

    def log_prob(self, weights):
        # logsumexp over the two components, without building a mixture
        # distribution per weight: this runs on every training step.
        dtype = weights.dtype
        log_mix = tf.constant([math.log(self.pi), math.log1p(-self.pi)], dtype)
        scales = tf.constant([self.scale1, self.scale2], dtype)
        z = weights[..., None] / scales
        log_normal = -0.5 * tf.square(z) - tf.math.log(scales) - 0.5 * math.log(2 * math.pi)
        return tf.reduce_logsumexp(log_mix + log_normal, axis=-1)

    def get_config(self):
        return {"pi": self.pi, "scale1": self.scale1, "scale2": self.scale2}


# Molchanov, Ashukha & Vetrov (2017), eq. 14: -KL(alpha) is approximated by
# K1 sigmoid(K2 + K3 log alpha) - log1p(1 / alpha) / 2 - K1.
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
_LOG_ALPHA_RANGE = (-8.0, 8.0)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class LogUniform(Prior):
    """The improper log-uniform prior `p(|w|) ∝ 1 / |w|` of variational dropout.

    Against a Gaussian posterior `N(theta, alpha theta^2)` the KL depends only
    on `alpha` (Kingma, Salimans & Welling, 2015). It has no closed form; this
    prior uses the approximation of Molchanov et al. (2017),
    `KL(alpha) ≈ k1 - k1 sigmoid(k2 + k3 log alpha) + softplus(-log alpha) / 2`
    with `k1, k2, k3 = 0.63576, 1.87320, 1.48695`, whose constant makes the KL
    vanish as `alpha -> inf`. `log alpha` is clipped to `[-8, 8]`.
    The KL decreases in `alpha`: on its own it pushes the noise up, which is
    what prunes weights.

    Example:

    >>> import tfp_deepgen as tdg
    >>> prior = tdg.priors.LogUniform()
    >>> round(float(prior.kl_from_log_alpha(0.0)), 4)
    0.4312
    """

    has_analytic_kl = True

    def distribution(self, shape=(), dtype="float32"):
        raise ValueError(
            "LogUniform is improper (it does not integrate to 1), so it has no TFP "
            "distribution; use `log_prob` or `kl_from_log_alpha`."
        )

    def log_prob(self, weights):
        """Unnormalised log-density, `-log|w|`."""
        return -tf.math.log(tf.abs(weights))

    def kl_from_log_alpha(self, log_alpha):
        """Elementwise `KL(N(theta, alpha theta^2) || LogUniform)` (approximate).

        Args:
            log_alpha: Tensor of `log alpha`; clipped to `[-8, 8]`.

        Returns:
            A float32 tensor shaped like `log_alpha`.
        """
        log_alpha = tf.clip_by_value(tf.cast(log_alpha, "float32"), *_LOG_ALPHA_RANGE)
        return (
            _K1 - _K1 * tf.math.sigmoid(_K2 + _K3 * log_alpha) + 0.5 * tf.math.softplus(-log_alpha)
        )

    def kl_divergence(self, loc, scale, sample=None, log_scale=None):
        """Sum of the approximate KL with `alpha = scale^2 / loc^2` per weight."""
        del sample  # the approximation needs no sample
        log_scale = tf.math.log(scale) if log_scale is None else log_scale
        log_alpha = 2.0 * log_scale - tf.math.log(tf.square(loc) + 1e-8)
        return tf.reduce_sum(self.kl_from_log_alpha(log_alpha))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class TrainableNormal(Prior):
    """A Normal prior learned with the network (empirical Bayes).

    `N(m_i, s^2)` on every weight i, where the means m are variables trained
    with the layer (starting at `loc_init`) and the scale s stays at
    `scale_init`, or is learned too with `learn_scale=True` (one scale per
    layer). Maximising the ELBO over them fits the prior to the data, as
    TFP's regression tutorial does with its `prior_trainable`. Only
    `tdg.layers.DenseVariational` takes it: the variables live on the layer.

    Args:
        loc_init: Initial prior mean of every weight.
        scale_init: Prior standard deviation (initial, if learned), > 0.
        learn_scale: Whether the scale is learned as well.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.priors.TrainableNormal(scale_init=1.0).learn_scale
    False
    """

    has_analytic_kl = True

    def __init__(self, loc_init=0.0, scale_init=1.0, learn_scale=False):
        self.loc_init = _validation.finite_float("loc_init", loc_init)
        self.scale_init = _validation.positive_float("scale_init", scale_init)
        self.learn_scale = _validation.boolean("learn_scale", learn_scale)

    def distribution(self, shape=(), dtype="float32"):
        raise ValueError(
            "TrainableNormal is learned with the layer that holds it: only "
            "tdg.layers.DenseVariational takes it. Use tdg.priors.Normal elsewhere."
        )

    def kl_divergence(self, loc, scale, sample=None, log_scale=None):
        self.distribution()  # raises: no fixed prior to compare against

    def get_config(self):
        return {
            "loc_init": self.loc_init,
            "scale_init": self.scale_init,
            "learn_scale": self.learn_scale,
        }


def get(identifier, argument="prior"):
    """Resolves a prior from an instance, a config dict or `None`.

    Raises:
        ValueError: naming `argument` when `identifier` is not a prior.
    """
    if identifier is None or isinstance(identifier, Prior):
        return identifier
    if isinstance(identifier, dict):
        try:
            obj = keras.saving.deserialize_keras_object(identifier)
        except ValueError as error:
            if _names_a_prior(identifier):  # a prior's own check refused its arguments
                raise ValueError(
                    f"`{argument}` holds an invalid {identifier.get('class_name')} prior "
                    f"config {identifier.get('config')!r}: {error}"
                ) from None
            obj = None  # not a serialized prior; reported below
        except TypeError:
            obj = None
        if isinstance(obj, Prior):
            return obj
    raise ValueError(
        f"`{argument}` must be a tfp_deepgen.priors.Prior (e.g. "
        f"tfp_deepgen.priors.Normal(0.0, 1.0)) or None. Received: {identifier!r}"
    )


def _names_a_prior(config):
    """Whether a serialized object's config names one of the registered priors."""
    cls = keras.saving.get_registered_object(config.get("registered_name") or "")
    return isinstance(cls, type) and issubclass(cls, Prior)
