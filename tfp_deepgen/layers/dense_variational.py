"""`DenseVariational`: a dense layer whose posterior family and prior you choose.

The Keras 3 counterpart of `tfp.layers.DenseVariational(units,
make_posterior_fn, make_prior_fn)`, without the callables: the posterior is a
registered family named in the config (`tdg.posteriors.FAMILIES`:
`"mean_field"`, `"full_covariance"`), the prior a `tdg.priors` prior, fixed or
`TrainableNormal`, so `.keras` files load with `safe_mode=True`.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen import posteriors as posteriors_lib
from tfp_deepgen import priors as priors_lib
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.layers.base import VariationalLayer

tfd = tfp.distributions

__all__ = ["DenseVariational"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DenseVariational(VariationalLayer):
    """Dense layer with a posterior over its kernel and bias together.

    Like tfp.layers' `DenseVariational`, the posterior and the prior cover
    one vector of all `input_dim * units (+ units)` weights, and a call draws
    one weight sample for the whole batch (the reparameterization estimator;
    in a Monte-Carlo pass of `tdg.predictive`, one per copy). The KL is in
    closed form where TFP has it (a Normal prior, fixed or trainable, against
    either family), else a single-draw Monte-Carlo estimate.

    Args:
        units: Output size.
        activation: Keras activation.
        use_bias: Whether the layer has a bias (inside the posterior).
        posterior: `"mean_field"` (independent Normals, `MeanFieldNormal`) or
            `"full_covariance"` (one multivariate Normal over all weights,
            `FullCovarianceNormal`, up to 2,000 weights).
        prior: A `tdg.priors` prior on every weight (default `Normal(0, 1)`),
            or `tdg.priors.TrainableNormal(...)` for a prior learned with
            the layer.
        kl_weight: Multiplier of the KL term; `1 / num_training_examples`
            makes the loss the negative ELBO per example.
        kernel_initializer: Initializer of the kernel's posterior means (the
            bias means start at 0).
        posterior_scale_init: Initial posterior stddev of every weight.
        sampling: `"sample"` or `"mean"` (posterior means).
        seed: Integer seed of the layer's draws, or None.
        **kwargs: `name`, `dtype` and the other arguments of
            `keras.layers.Layer`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseVariational(
    ...     2, posterior="full_covariance", prior=tdg.priors.TrainableNormal(), seed=0
    ... )
    >>> layer(np.ones((4, 3), "float32")).shape
    TensorShape([4, 2])
    >>> layer.posterior().event_shape  # 3 * 2 kernel + 2 bias weights
    TensorShape([8])
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        posterior="mean_field",
        prior=None,
        kl_weight=1.0,
        kernel_initializer="glorot_uniform",
        posterior_scale_init=posteriors_lib.DEFAULT_SCALE_INIT,
        sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        self.units = _validation.positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean("use_bias", use_bias)
        self.posterior_family = _validation.one_of(
            "posterior", posterior, tuple(posteriors_lib.FAMILIES)
        )
        if prior is None:
            prior = priors_lib.Normal(0.0, 1.0)
        self.prior = priors_lib.get(prior, "prior")
        if not isinstance(self.prior, priors_lib.TrainableNormal):
            try:
                self.prior.distribution((1,))
            except (NotImplementedError, ValueError) as error:
                raise ValueError(
                    f"`prior` must have a proper density; {self.prior!r} has none "
                    f"({error}). Use tdg.priors.Normal, ScaleMixtureNormal or "
                    "TrainableNormal."
                ) from None
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.posterior_scale_init = _validation.positive_float(
            "posterior_scale_init", posterior_scale_init
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "DenseVariational needs a known last input dimension; received input "
                f"shape {tuple(input_shape)}."
            )
        self.kernel_shape = (int(input_dim), self.units)
        self.num_weights = self.kernel_shape[0] * self.units + (self.units if self.use_bias else 0)
        kernel_size = self.kernel_shape[0] * self.units

        def initial_means(shape, dtype=None):
            kernel = tf.reshape(self.kernel_initializer(self.kernel_shape, dtype), [-1])
            return tf.concat([kernel, tf.zeros([shape[-1] - kernel_size], kernel.dtype)], 0)

        family = posteriors_lib.FAMILIES[self.posterior_family]
        self._posterior = family(
            self,
            "weights",
            (self.num_weights,),
            loc_initializer=initial_means,
            scale_init=self.posterior_scale_init,
        )
        if isinstance(self.prior, priors_lib.TrainableNormal):
            self.prior_loc = self.add_weight(
                name="prior_loc",
                shape=(self.num_weights,),
                initializer=keras.initializers.Constant(self.prior.loc_init),
                dtype="float32",
                autocast=False,
            )
            self.prior_untransformed_scale = self.add_weight(
                name="prior_untransformed_scale",
                shape=(),
                initializer=keras.initializers.Constant(softplus_inverse(self.prior.scale_init)),
                dtype="float32",
                trainable=self.prior.learn_scale,
                autocast=False,
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: int(input_dim)})
        self.built = True

    def posterior(self):
        """q(w): the TFP distribution over the flattened weights (kernel, then bias)."""
        return self._posterior.distribution()

    def prior_distribution(self):
        """p(w) over the flattened weights, with the trainable prior's current values."""
        if isinstance(self.prior, priors_lib.TrainableNormal):
            scale = tf.math.softplus(self.prior_untransformed_scale) + posteriors_lib.MIN_SCALE
            return tfd.Independent(tfd.Normal(self.prior_loc, scale), 1)
        return tfd.Independent(self.prior.distribution((self.num_weights,)), 1)

    def kl_divergence(self, sample=None):
        """KL(q || p) over all the weights; `sample` (a draw of q) for the Monte-Carlo case."""
        q, p = self.posterior(), self.prior_distribution()
        try:
            return tfd.kl_divergence(q, p)
        except NotImplementedError:
            pass
        if isinstance(p.distribution, tfd.Normal):
            # A full-covariance q has a closed form against p as one multivariate Normal.
            normal = p.distribution
            p_mvn = tfd.MultivariateNormalDiag(
                normal.loc + tf.zeros([self.num_weights]),
                normal.scale + tf.zeros([self.num_weights]),
            )
            return tfd.kl_divergence(q, p_mvn)
        if sample is None:
            sample = self._posterior.sample(self.next_seed(per_replica=False))
        return q.log_prob(sample) - p.log_prob(sample)

    def _split(self, weights):
        """Kernel and bias from flat weights of shape `(..., num_weights)`."""
        lead = tf.shape(weights)[:-1]
        kernel_size = self.kernel_shape[0] * self.units
        kernel = tf.reshape(weights[..., :kernel_size], tf.concat([lead, self.kernel_shape], 0))
        bias = weights[..., kernel_size:] if self.use_bias else None
        return kernel, bias

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs)
        num_samples = self.inference_state.monte_carlo_samples
        if num_samples is not None:
            return self.activation(self._monte_carlo_call(inputs, num_samples))
        draw = self._posterior.sample(self.next_seed())
        weights = draw if self.sampling_enabled else self._posterior.loc
        kernel, bias = self._split(tf.cast(weights, self.compute_dtype))
        outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        if bias is not None:
            outputs += bias
        self.add_kl(self.kl_divergence(sample=draw), training, inputs)
        return self.activation(outputs)

    def _monte_carlo_call(self, inputs, num_samples):
        # Copy s of the stacked batch (copy-major) uses weight draw s.
        draws = self._posterior.sample(self.next_seed(), num_samples)
        kernel, bias = self._split(tf.cast(draws, self.compute_dtype))
        shape = tf.shape(inputs)
        per_copy = tf.reshape(inputs, [num_samples, -1, self.kernel_shape[0]])
        outputs = tf.einsum("sbi,siu->sbu", per_copy, kernel)
        if bias is not None:
            outputs += bias[:, None, :]
        return tf.reshape(outputs, tf.concat([shape[:-1], [self.units]], 0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "posterior": self.posterior_family,
                "prior": keras.saving.serialize_keras_object(self.prior),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "posterior_scale_init": self.posterior_scale_init,
            }
        )
        return config
