"""A latent variable anywhere in a model: a head's distribution, its KL to a prior as a loss.

`KLDivergenceAddLoss` is the Keras 3 counterpart of tfp.layers'
`KLDivergenceAddLoss` / `KLDivergenceRegularizer` on a distribution layer:
it reads a head's parameters, adds `kl_weight * KL(q || p)` (the mean over the
batch) to the model's losses and passes on a reparameterized draw of the
latent, a tensor the next layer takes.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import priors as priors_lib
from tfp_deepgen import random
from tfp_deepgen.heads import DistributionHead
from tfp_deepgen.layers.base import VariationalLayer

tfd = tfp.distributions

__all__ = ["KLDivergenceAddLoss", "kl_to_prior"]


def kl_to_prior(q, prior, event_size, z):
    """KL(q || p) per example, p the prior over an `event_size`-vector.

    Closed form where TFP has one (a diagonal or full-covariance Normal q and
    a Normal prior), else the single-sample Monte-Carlo estimate
    `log q(z) - log p(z)` at the reparameterized draw `z`, which is unbiased
    and differentiable.

    Args:
        q: The TFP distribution of the latent, event shape `(event_size,)`.
        prior: A `tfp_deepgen.priors` prior, the same for every coordinate.
        event_size: Length of the latent vector.
        z: A draw from `q`, shape `(..., event_size)`.

    Returns:
        A float32 tensor of shape `q.batch_shape`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentNormal(1, scale=1.0)
    >>> q = head.distribution(np.array([[1.0]], "float32"))
    >>> kl = tdg.layers.kl_divergence.kl_to_prior(q, tdg.priors.Normal(0.0, 1.0), 1, None)
    >>> float(kl[0])  # mu^2 / 2
    0.5
    """
    p = tfd.Independent(prior.distribution((event_size,)), 1)
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        pass
    if isinstance(prior, priors_lib.Normal):
        # A full-covariance q has a closed form against the same p written as one
        # multivariate Normal.
        p_mvn = tfd.MultivariateNormalDiag(
            tf.fill([event_size], tf.constant(prior.loc, "float32")),
            tf.fill([event_size], tf.constant(prior.scale, "float32")),
        )
        try:
            return tfd.kl_divergence(q, p_mvn)
        except NotImplementedError:
            pass
    return q.log_prob(z) - p.log_prob(z)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class KLDivergenceAddLoss(VariationalLayer):
    """A latent `z ~ head(params)`: adds `kl_weight * KL(q(z) || p(z))`, outputs a draw of z.

    Put it where tfp.layers code has a distribution layer with a KL
    regularizer (`tfpl.MultivariateNormalTriL(d,
    activity_regularizer=tfpl.KLDivergenceRegularizer(prior))`, or such a
    layer followed by `tfpl.KLDivergenceAddLoss(prior)`): after a layer of
    size `head.input_size`, it passes on a reparameterized draw of the latent
    (shape `(batch, head.event_size)`), or its mean under
    `sampling="mean"`. The KL is averaged over the batch, so `kl_weight=1`
    with a per-example reconstruction loss is the negative ELBO per example.
    That is what tfp.layers' `activity_regularizer=KLDivergenceRegularizer`
    gives too (tf_keras divides activity regularizers by the batch size);
    a `tfpl.KLDivergenceAddLoss` layer adds the batch total instead, which
    `kl_weight=batch_size` reproduces. In a Monte-Carlo pass each copy draws its own latent and
    no KL is added.

    Args:
        head: The latent's distribution: a `tfp_deepgen.heads` head with a
            reparameterized sample (`IndependentNormal(d)`,
            `MultivariateNormalTriL(d)`, or one's own).
        prior: A `tfp_deepgen.priors` prior on each coordinate of z (default
            `Normal(0, 1)`); closed-form KL for `Normal`, Monte Carlo otherwise.
        kl_weight: Multiplier of the KL term, >= 0.
        sampling: `"sample"` (a draw, default) or `"mean"` (the latent's mean).
        seed: Integer seed of the draws, or None.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> latent = tdg.heads.MultivariateNormalTriL(2)
    >>> encoder = keras.Sequential([
    ...     keras.Input((6,)),
    ...     keras.layers.Dense(latent.input_size),
    ...     tdg.layers.KLDivergenceAddLoss(latent, seed=0),
    ... ])
    >>> z = encoder(np.ones((3, 6), "float32"))
    >>> tuple(z.shape), len(encoder.losses)
    ((3, 2), 1)
    """

    def __init__(self, head, prior=None, kl_weight=1.0, sampling="sample", seed=None, **kwargs):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        if not isinstance(head, DistributionHead) or not head.reparameterizable:
            raise ValueError(
                "`head` must be a tfp_deepgen.heads head with a reparameterized sample "
                "(head.reparameterizable): tdg.heads.IndependentNormal(d), "
                "tdg.heads.MultivariateNormalTriL(d) or a head of your own defining "
                f"`reparameterized_sample`. Received: head={head!r}"
            )
        self.head = head
        if prior is None:
            prior = priors_lib.Normal(0.0, 1.0)
        self.prior = priors_lib.get(prior, "prior")
        try:
            self.prior.distribution((1,))
        except (NotImplementedError, ValueError) as error:
            raise ValueError(
                f"`prior` must have a proper density; {self.prior!r} has none ({error}). "
                "Use tdg.priors.Normal or ScaleMixtureNormal."
            ) from None

    def build(self, input_shape):
        self.head.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        params = self.head(inputs)
        shape = tf.concat([[1], tf.shape(params)[:-1], [self.head.event_size]], 0)
        z = self.head.reparameterized_sample(params, random.normal(shape, self.next_seed()))[0]
        if self.inference_state.monte_carlo_samples is None:
            # Also under sampling="mean": the loss is the KL of the posterior.
            q = self.head.distribution(params)
            kl = kl_to_prior(q, self.prior, self.head.event_size, z)
            self.add_kl(tf.reduce_mean(kl), training, inputs)
        # The head computes in float32; the next layer gets the compute dtype.
        return tf.cast(z if self.sampling_enabled else self.head.mean(params), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.head.event_size)

    def get_config(self):
        config = super().get_config()
        config["head"] = keras.saving.serialize_keras_object(self.head)
        config["prior"] = keras.saving.serialize_keras_object(self.prior)
        return config
