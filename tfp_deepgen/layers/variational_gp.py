"""`VariationalGaussianProcess`: a sparse variational Gaussian process as a Keras layer.

The Keras 3 counterpart of `tfp.layers.VariationalGaussianProcess`: an SVGP
(Titsias 2009; Hensman et al. 2013) with `num_inducing_points` inducing
inputs `Z` shared by `units` independent GP outputs, in the whitened
parameterisation `u = L v`, `L L^T = K(Z, Z)`, `q(v) = N(m, S S^T)`, prior
`v ~ N(0, I)`. A call computes the marginal `q(f(x_i))` of every example and
passes on one reparameterized draw of it (or its mean), a tensor the head
that follows (e.g. `tdg.heads.IndependentNormal(units, scale="homoscedastic")`,
which owns the observation noise) turns into a likelihood; the layer adds
`kl_weight * KL(q(v) || N(0, I))`. With `kl_weight = 1 / num_train` the
training loss is the negative SVGP ELBO per example.

The GP algebra (Cholesky, triangular solves) runs in float32 whatever the
dtype policy: in float16 a kernel matrix's Cholesky fails at any useful size.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation, random
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.layers.base import VariationalLayer

tfd = tfp.distributions
psd_kernels = tfp.math.psd_kernels

__all__ = ["KERNELS", "MEAN_FUNCTIONS", "VariationalGaussianProcess"]

#: Kernels by name: stationary `tfp.math.psd_kernels` kernels with a trainable
#: amplitude and length scale.
KERNELS = {
    "exponentiated_quadratic": psd_kernels.ExponentiatedQuadratic,
    "matern_one_half": psd_kernels.MaternOneHalf,
    "matern_three_halves": psd_kernels.MaternThreeHalves,
    "matern_five_halves": psd_kernels.MaternFiveHalves,
}
MEAN_FUNCTIONS = ("zero", "constant")
# Floor of the softplus-transformed positive parameters: keeps them > 0 in float32.
_MIN_POSITIVE = 1e-6
# Floor of the marginal variance before its square root: float32 round-off can
# make `k(x, x) - a^T a` slightly negative.
_MIN_VARIANCE = 1e-10


def _positive(raw):
    return tf.math.softplus(raw) + _MIN_POSITIVE


def _raw(value):
    """The unconstrained value `_positive` maps to `value` (at least its floor)."""
    return softplus_inverse(max(value - _MIN_POSITIVE, _MIN_POSITIVE))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class VariationalGaussianProcess(VariationalLayer):
    """Sparse variational GP layer: inputs `(batch, d)` to draws of `f(x)`, `(batch, units)`.

    Variables: inducing points `Z` `(m, d)`; whitened variational mean
    `(units, m)`; the variational scale `S` `(units, m, m)`, lower triangular
    with a softplus diagonal (only its lower triangle is used); the kernel's
    amplitude and length scale through softplus, shared by the outputs; a
    constant mean per output when `mean="constant"`.

    Each example's output is drawn independently from its marginal
    `q(f(x_i))`: the correlations between examples are not sampled, which is
    all a likelihood that factorises over examples (and the Monte-Carlo
    predictive of `tdg.predictive`) needs. `posterior_marginals` gives the
    marginals in closed form.

    Args:
        units: Number of independent GP outputs (TFP's `event_shape=[units]`).
        num_inducing_points: Number of inducing inputs `m`.
        kernel: Name of the kernel, one of `KERNELS`:
            `"exponentiated_quadratic"`, `"matern_one_half"`,
            `"matern_three_halves"`, `"matern_five_halves"`.
        amplitude_init: Initial kernel amplitude (prior stddev of `f`), > 0.
        length_scale_init: Initial kernel length scale, > 0.
        inducing_points_initializer: Keras initializer of `Z`. The default,
            `RandomNormal(stddev=1)`, spreads the points like standardised
            inputs (zero mean, unit variance per feature); for other inputs
            pass e.g. `RandomUniform(low, high)` over their range. (Keras's
            `"random_normal"` has stddev 0.05, which piles the points up and
            leaves `K(Z, Z)` nearly singular.)
        mean: Prior mean function: `"zero"` or `"constant"` (one learned
            constant per output, initially 0).
        variational_scale_init: Initial diagonal of `S`; 1 (the default)
            starts `q` at the prior, KL 0.
        jitter: `jitter * amplitude**2` is added to the diagonal of `K(Z, Z)`
            before its Cholesky, >= 0: relative to the prior variance, so a
            kernel whose amplitude or length scale grows in training keeps a
            factorable matrix in float32.
        kl_weight: Multiplier of the KL term; `1 / num_training_examples`
            makes the loss the negative ELBO per example.
        sampling: `"sample"` (draw `f`) or `"mean"` (the posterior mean).
        seed: Integer seed of the layer's draws, or None.
        **kwargs: `name`, `dtype` and the other arguments of
            `keras.layers.Layer`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentNormal(1, scale="homoscedastic")
    >>> model = keras.Sequential(
    ...     [keras.Input((1,)), tdg.layers.VariationalGaussianProcess(1, 8, seed=0), head]
    ... )
    >>> model.compile("adam", head.loss)
    >>> gp = model.layers[0]
    >>> mean, variance = gp.posterior_marginals(np.zeros((3, 1), "float32"))
    >>> mean.shape, round(float(variance[0, 0]), 4)  # q(v) starts at the prior
    (TensorShape([3, 1]), 1.0)
    """

    def __init__(
        self,
        units,
        num_inducing_points,
        kernel="exponentiated_quadratic",
        amplitude_init=1.0,
        length_scale_init=1.0,
        inducing_points_initializer=None,
        mean="zero",
        variational_scale_init=1.0,
        jitter=1e-4,
        kl_weight=1.0,
        sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        self.units = _validation.positive_int("units", units)
        self.num_inducing_points = _validation.positive_int(
            "num_inducing_points", num_inducing_points
        )
        self.kernel_name = _validation.one_of("kernel", kernel, tuple(KERNELS))
        self.amplitude_init = _validation.positive_float("amplitude_init", amplitude_init)
        self.length_scale_init = _validation.positive_float("length_scale_init", length_scale_init)
        if inducing_points_initializer is None:
            inducing_points_initializer = keras.initializers.RandomNormal(stddev=1.0)
        self.inducing_points_initializer = keras.initializers.get(inducing_points_initializer)
        self.mean_function = _validation.one_of("mean", mean, MEAN_FUNCTIONS)
        self.variational_scale_init = _validation.positive_float(
            "variational_scale_init", variational_scale_init
        )
        self.jitter = _validation.non_negative_float("jitter", jitter)
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if len(input_shape) != 2 or input_dim is None:
            raise ValueError(
                "VariationalGaussianProcess takes inputs of shape (batch, features) with "
                f"known features; received input shape {tuple(input_shape)}."
            )
        m, units = self.num_inducing_points, self.units
        self.input_dim = int(input_dim)

        def weight(name, shape, initializer, **kwargs):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=initializer,
                dtype="float32",
                autocast=False,
                **kwargs,
            )

        self.inducing_points = weight(
            "inducing_points", (m, self.input_dim), self.inducing_points_initializer
        )
        self.variational_loc = weight("variational_loc", (units, m), "zeros")
        raw_diagonal = _raw(self.variational_scale_init)

        def initial_scale(shape, dtype=None):
            return tf.eye(m, batch_shape=[units], dtype=dtype) * raw_diagonal

        self.variational_raw_scale = weight("variational_raw_scale", (units, m, m), initial_scale)
        self.raw_amplitude = weight(
            "raw_amplitude",
            (),
            keras.initializers.Constant(_raw(self.amplitude_init)),
        )
        self.raw_length_scale = weight(
            "raw_length_scale",
            (),
            keras.initializers.Constant(_raw(self.length_scale_init)),
        )
        if self.mean_function == "constant":
            self.constant_mean = weight("constant_mean", (units,), "zeros")
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: self.input_dim})
        self.built = True

    # -- the model -------------------------------------------------------------

    @property
    def amplitude(self):
        """The kernel amplitude (float32 scalar)."""
        return _positive(self.raw_amplitude)

    @property
    def length_scale(self):
        """The kernel length scale (float32 scalar)."""
        return _positive(self.raw_length_scale)

    def psd_kernel(self, dtype="float32"):
        """The `tfp.math.psd_kernels` kernel with the current hyperparameters, in `dtype`."""
        return KERNELS[self.kernel_name](
            amplitude=tf.cast(self.amplitude, dtype),
            length_scale=tf.cast(self.length_scale, dtype),
        )

    def prior_mean(self, dtype="float32"):
        """The prior mean of each output, shape `(units,)`."""
        if self.mean_function == "constant":
            return tf.cast(self.constant_mean, dtype)
        return tf.zeros([self.units], dtype)

    def variational_scale(self):
        """`S`, `(units, m, m)`: lower triangular with a positive diagonal."""
        raw = self.variational_raw_scale
        return tf.linalg.set_diag(
            tf.linalg.band_part(raw, -1, 0), _positive(tf.linalg.diag_part(raw))
        )

    def variational_posterior(self):
        """q(v): a batch of `units` multivariate Normals over the whitened inducing values."""
        return tfd.MultivariateNormalTriL(self.variational_loc, self.variational_scale())

    def kl_divergence(self):
        """`KL(q(v) || N(0, I))` summed over the outputs, in closed form (float32 scalar)."""
        loc, scale = self.variational_loc, self.variational_scale()
        m = float(self.num_inducing_points)
        per_output = 0.5 * (
            tf.reduce_sum(tf.square(scale), axis=[-2, -1])
            + tf.reduce_sum(tf.square(loc), axis=-1)
            - m
        ) - tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale)), axis=-1)
        return tf.reduce_sum(per_output)

    def _inducing_cholesky(self, kernel, dtype):
        z = tf.cast(self.inducing_points, dtype)
        kzz = kernel.matrix(z, z)
        # Relative to the prior variance, so that a grown amplitude keeps K(Z, Z)'s
        # condition number (at most about m / jitter) within float32's reach.
        jitter = tf.cast(self.jitter, dtype) * tf.square(tf.cast(kernel.amplitude, dtype))
        kzz += jitter * tf.eye(self.num_inducing_points, dtype=dtype)
        return tf.linalg.cholesky(kzz)

    def posterior_marginals(self, x):
        """The mean and variance of `q(f(x_i))` for each row of `x`, in closed form.

        Args:
            x: Inputs, shape `(batch, d)`.

        Returns:
            `(mean, variance)`, float32 tensors of shape `(batch, units)`.
        """
        x = tf.cast(tf.convert_to_tensor(x), "float32")
        kernel = self.psd_kernel()
        chol = self._inducing_cholesky(kernel, "float32")
        # a = L^-1 K(Z, x): f(x) = a^T v + (a part independent of the inducing values).
        a = tf.linalg.triangular_solve(
            chol, kernel.matrix(tf.cast(self.inducing_points, "float32"), x), lower=True
        )
        mean = tf.matmul(a, self.variational_loc, transpose_a=True, transpose_b=True)
        mean += self.prior_mean()
        scale_a = tf.einsum("ujk,jb->ukb", self.variational_scale(), a)
        conditional = kernel.apply(x, x) - tf.reduce_sum(tf.square(a), axis=0)
        variance = conditional[:, None] + tf.transpose(tf.reduce_sum(tf.square(scale_a), axis=1))
        return mean, tf.maximum(variance, _MIN_VARIANCE)

    # -- closed-form optimum for Gaussian noise --------------------------------

    def optimal_variational_posterior(self, x, y, observation_noise_variance):
        """The `q(v)` maximising the ELBO for `y = f(x) + N(0, noise)`, in float64.

        Titsias's optimum for the layer's current kernel, inducing points and
        mean: the posterior of `v ~ N(0, I)` under `y ~ N(a^T v + mean,
        noise I)` with `a = L^-1 K(Z, x)`. With `Z = x` the layer's marginals
        under it are the exact GP posterior (up to `jitter`).

        Args:
            x: Training inputs, `(n, d)`.
            y: Training targets, `(n, units)`.
            observation_noise_variance: The Gaussian noise variance, > 0.

        Returns:
            `(loc, scale_tril)`: float64 tensors `(units, m)` and
            `(units, m, m)`; pass them to `set_variational_posterior`.
        """
        noise = _validation.positive_float("observation_noise_variance", observation_noise_variance)
        x = tf.cast(tf.convert_to_tensor(x), tf.float64)
        y = tf.cast(tf.convert_to_tensor(y), tf.float64)
        kernel = self.psd_kernel(tf.float64)
        chol = self._inducing_cholesky(kernel, tf.float64)
        a = tf.linalg.triangular_solve(
            chol, kernel.matrix(tf.cast(self.inducing_points, tf.float64), x), lower=True
        )
        m = self.num_inducing_points
        precision = tf.eye(m, dtype=tf.float64) + tf.matmul(a, a, transpose_b=True) / noise
        precision_chol = tf.linalg.cholesky(precision)
        residual = y - self.prior_mean(tf.float64)
        loc = tf.linalg.cholesky_solve(precision_chol, tf.matmul(a, residual) / noise)
        covariance = tf.linalg.cholesky_solve(precision_chol, tf.eye(m, dtype=tf.float64))
        scale = tf.linalg.cholesky(covariance)
        return tf.transpose(loc), tf.tile(scale[None], [self.units, 1, 1])

    def set_variational_posterior(self, loc, scale_tril):
        """Sets `q(v)` to `N(loc, scale_tril scale_tril^T)`.

        Args:
            loc: `(units, m)`.
            scale_tril: `(units, m, m)`, lower triangular with a positive diagonal.
        """
        loc = tf.cast(loc, "float32")
        scale_tril = tf.cast(scale_tril, "float32")
        diagonal = tf.linalg.diag_part(scale_tril)
        if not bool(tf.reduce_all(diagonal > _MIN_POSITIVE)):
            raise ValueError(
                f"`scale_tril` must have a diagonal > {_MIN_POSITIVE}; its smallest entry "
                f"is {float(tf.reduce_min(diagonal))}."
            )
        raw = tf.linalg.set_diag(
            tf.linalg.band_part(scale_tril, -1, 0),
            tfp.math.softplus_inverse(diagonal - _MIN_POSITIVE),
        )
        self.variational_loc.assign(loc)
        self.variational_raw_scale.assign(raw)

    # -- the call --------------------------------------------------------------

    def call(self, inputs, training=None):
        state = self.inference_state
        # One seed per call in every mode, so the noise stream does not depend on the mode.
        seed = self.next_seed()
        if state.monte_carlo_samples is not None:
            # Each row is drawn independently, so copy s of the stacked batch is
            # posterior sample s; compute the marginals once per example if we can.
            original = None
            if state.stacked_batch is not None:
                original = state.stacked_batch.original(inputs)
            if original is not None:
                mean, variance = self.posterior_marginals(original)
                mean = state.stacked_batch.stack(mean)
                variance = state.stacked_batch.stack(variance)
            else:
                mean, variance = self.posterior_marginals(inputs)
            return tf.cast(self._draw(mean, variance, seed), self.compute_dtype)
        mean, variance = self.posterior_marginals(inputs)
        outputs = self._draw(mean, variance, seed) if self.sampling_enabled else mean
        self.add_kl(self.kl_divergence(), training, inputs)
        return tf.cast(outputs, self.compute_dtype)

    @staticmethod
    def _draw(mean, variance, seed):
        return mean + tf.sqrt(variance) * random.normal(tf.shape(mean), seed)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "num_inducing_points": self.num_inducing_points,
                "kernel": self.kernel_name,
                "amplitude_init": self.amplitude_init,
                "length_scale_init": self.length_scale_init,
                "inducing_points_initializer": keras.initializers.serialize(
                    self.inducing_points_initializer
                ),
                "mean": self.mean_function,
                "variational_scale_init": self.variational_scale_init,
                "jitter": self.jitter,
            }
        )
        return config
