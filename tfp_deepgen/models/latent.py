"""Gaussian latent variables shared by the VAE family: posterior draws, priors, KL.

The encoder of a VAE ends in a head with a reparameterized sample
(`head.reparameterizable`): `tfp_deepgen.heads.IndependentNormal` (a diagonal
Normal q(z|x)), `MultivariateNormalTriL` (full covariance) or one's own.
`LatentSampler` draws reparameterized samples `z = loc + L eps` from it with
the library's fast stateless Philox normals, and `latent_prior` /
`analytic_kl` give the prior p(z) and KL(q(z|x) || p(z)) per example.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import priors, random
from tfp_deepgen.heads import final_head
from tfp_deepgen.layers.base import StochasticLayer

tfd = tfp.distributions


def posterior_head(encoder, argument="encoder"):
    """The head ending `encoder`, which must have a reparameterized sample.

    Raises:
        ValueError: naming `argument` when `encoder` does not end in a head,
            or ends in one without `reparameterized_sample` (e.g. `Poisson`).
    """
    head = final_head(encoder, argument)
    if not head.reparameterizable:
        raise ValueError(
            f"`{argument}` must be a Keras model whose last layer is a head with a "
            "reparameterized sample (head.reparameterizable), the posterior q(z|x): "
            "tdg.heads.IndependentNormal(latent_dim), tdg.heads.MultivariateNormalTriL"
            f"(latent_dim) or a head of your own defining `reparameterized_sample`; its "
            f"last layer is a {type(head).__name__} ({head.name!r})."
        )
    return head


def checked_prior(prior, argument="prior"):
    """The latent prior: a `tfp_deepgen.priors` prior with a proper density (default N(0, 1))."""
    prior = priors.get(prior, argument)
    if prior is None:
        return priors.Normal(0.0, 1.0)
    try:
        prior.distribution((1,))
    except (NotImplementedError, ValueError) as error:
        raise ValueError(
            f"`{argument}` must have a proper density to sample latents from; {prior!r} "
            f"has none ({error}). Use tdg.priors.Normal or ScaleMixtureNormal."
        ) from None
    return prior


def latent_prior(prior, latent_dim):
    """p(z): the prior over a `latent_dim`-vector (independent coordinates)."""
    return tfd.Independent(prior.distribution((latent_dim,)), 1)


def analytic_kl(head, params, prior):
    """KL(q(z|x) || p(z)) per example in closed form (Normal priors only).

    p(z) is independent Normals; TFP has a closed form from an `Independent`
    q (a diagonal head) to them, and from a multivariate Normal q (full
    covariance) to the same p written as a `MultivariateNormalDiag`.
    """
    q = head.distribution(params)
    d = head.event_size
    try:
        return tfd.kl_divergence(q, latent_prior(prior, d))
    except NotImplementedError:  # no registered KL: q is a multivariate Normal
        p = tfd.MultivariateNormalDiag(
            tf.fill([d], tf.constant(prior.loc, "float32")),
            tf.fill([d], tf.constant(prior.scale, "float32")),
        )
        return tfd.kl_divergence(q, p)


class LatentSampler(StochasticLayer):
    """Draws reparameterized samples from a Gaussian encoder head.

    Owns the model's random stream (a `StochasticLayer`, so its seed state is
    saved with the model and replicas draw different noise). With
    `sampling="mean"` (e.g. inside `tdg.layers.sampling_mode(model, "mean")`)
    it returns the posterior mean instead of a draw.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> from tfp_deepgen.models.latent import LatentSampler
    >>> head = tdg.heads.IndependentNormal(2)
    >>> z = LatentSampler(seed=1).posterior_sample(head, np.zeros((3, 4)), num_samples=5)
    >>> tuple(z.shape)
    (5, 3, 2)
    """

    def __init__(self, sampling="sample", seed=None, **kwargs):
        super().__init__(sampling=sampling, seed=seed, **kwargs)
        self.built = True

    def posterior_sample(self, head, params, num_samples):
        """`num_samples` draws of z ~ q(z|x), shape `(num_samples, batch, latent_dim)`."""
        params = tf.convert_to_tensor(params, "float32")
        if not self.sampling_enabled:
            return tf.tile(head.mean(params)[None], [num_samples, 1, 1])
        shape = tf.concat([[num_samples], tf.shape(params)[:-1], [head.event_size]], 0)
        return head.reparameterized_sample(params, random.normal(shape, self.next_seed()))

    def prior_sample(self, prior, latent_dim, num_samples):
        """`num_samples` draws of z ~ p(z), shape `(num_samples, latent_dim)`."""
        shape = tf.stack([tf.convert_to_tensor(num_samples, tf.int32), latent_dim])
        if isinstance(prior, priors.Normal):
            return prior.loc + prior.scale * random.normal(shape, self.next_seed())
        return latent_prior(prior, latent_dim).sample(num_samples, seed=self.next_seed())

    def call(self, inputs):
        return inputs


keras.saving.register_keras_serializable(package="tfp_deepgen")(LatentSampler)
