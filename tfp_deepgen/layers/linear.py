"""The three Bayes-by-Backprop estimators over any linear map (dense or conv).

A variational linear layer has a mean-field Normal posterior over its kernel
and computes `y = f(x; W) + b` with one of three gradient estimators:

- reparameterization: one kernel sample `W = mu + sigma * eps` per call,
  shared by the batch (Blundell et al., 2015);
- flipout: the shared perturbation `sigma * eps` decorrelated per example by
  random +-1 signs on inputs and outputs (Wen et al., 2018);
- local reparameterization: the pre-activations sampled directly from their
  Gaussian marginal, independent noise per example and output
  (Kingma, Salimans & Welling, 2015).

`dense.py` and `conv.py` supply the linear map `f`.
"""

import keras
import tensorflow as tf

from tfp_deepgen import _validation, random
from tfp_deepgen import priors as priors_lib
from tfp_deepgen.layers.base import VariationalLayer
from tfp_deepgen.posteriors import DEFAULT_SCALE_INIT, MeanFieldNormal

REPARAMETERIZATION = "reparameterization"
FLIPOUT = "flipout"
LOCAL_REPARAMETERIZATION = "local_reparameterization"

# Keeps the gradient of sqrt(variance) finite where an input row is all zero.
VARIANCE_FLOOR = 1e-12

# x^2 overflows float32 from |x| = 1.8e19: rows whose largest |x| exceeds this
# are divided by it before squaring (see `preactivation_stddev`).
_RESCALE_ABOVE = 2.0**32
# Smallest normal float32: the floor of a rescaled row, which 1e-12 / m^2 underflows.
_TINY = 1.1754944e-38


def preactivation_stddev(linear, inputs, kernel_variance, row_axes, extra_variance=None):
    """Stddev of `linear(x, W)` for independent weights of variance `kernel_variance`.

    Computes `sqrt(linear(x^2, kernel_variance) + extra_variance + floor)` as
    `m * sqrt(linear((x / m)^2, kernel_variance) + ...)` with a per-row scale
    `m`, so that inputs whose square overflows float32 give a finite stddev
    (as they give a finite mean) instead of `inf`, which turns into NaN in
    the next layer or wherever a weight or gate is zero. `m` is a row's
    largest `|x|` where that exceeds 2^32 and 1 elsewhere (so ordinary rows
    get exactly the plain formula's numbers); it is held constant for the
    gradient.

    Args:
        linear: The linear map, `linear(inputs, kernel)`.
        inputs: The layer's inputs (any float dtype; computed in float32).
        kernel_variance: Float32 variance of every kernel entry.
        row_axes: Axes of `inputs` one scale is taken over; the scale keeps
            them with size 1 and must broadcast against the outputs.
        extra_variance: Float32 variance added to every output (e.g. a
            variational bias's), broadcastable to the outputs, or None.

    Returns:
        The float32 stddev, shaped like `linear(inputs, kernel)`.
    """
    inputs = tf.cast(inputs, "float32")
    largest = tf.stop_gradient(tf.reduce_max(tf.abs(inputs), axis=row_axes, keepdims=True))
    m = tf.where(largest > _RESCALE_ABOVE, largest, tf.ones_like(largest))
    variance = linear(tf.square(inputs / m), kernel_variance)
    m_squared = tf.square(m)
    if extra_variance is not None:
        variance += extra_variance / m_squared
    floor = tf.maximum(VARIANCE_FLOOR / m_squared, _TINY)
    return m * tf.sqrt(variance + floor)


class VariationalLinear(VariationalLayer):
    """Shared machinery of the variational dense and conv layers.

    Subclasses set `estimator` and implement `kernel_shape`, `linear`,
    `bias_axis_shape`, `flipout_sign_shapes` and `compute_output_shape`.
    """

    estimator = None

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_posterior_scale_init=DEFAULT_SCALE_INIT,
        bias_posterior_scale_init=DEFAULT_SCALE_INIT,
        kernel_prior=None,
        bias_prior=None,
        kl_weight=1.0,
        sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        if kernel_prior is None:
            kernel_prior = priors_lib.Normal(0.0, 1.0)
        self.kernel_prior = priors_lib.get(kernel_prior, "kernel_prior")
        self.bias_prior = priors_lib.get(bias_prior, "bias_prior")
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_posterior_scale_init = _validation.positive_float(
            "kernel_posterior_scale_init", kernel_posterior_scale_init
        )
        self.bias_posterior_scale_init = _validation.positive_float(
            "bias_posterior_scale_init", bias_posterior_scale_init
        )
        if self.bias_prior is not None and not use_bias:
            raise ValueError(
                "`bias_prior` was given but `use_bias=False`; pass bias_prior=None "
                "or use_bias=True."
            )

    # Hooks for dense / conv -------------------------------------------------

    def kernel_shape(self, input_shape):
        raise NotImplementedError

    def linear(self, inputs, kernel):
        """The linear map without bias, in the inputs' dtype."""
        raise NotImplementedError

    def bias_shape_for_broadcast(self):
        """Shape that makes a `[out]` bias broadcast against the outputs."""
        return (-1,)

    def flipout_sign_shapes(self, inputs, outputs):
        """Shapes of the per-example input and output sign tensors."""
        raise NotImplementedError

    def row_scale_axes(self, inputs):
        """Axes of `inputs` that share one scale in `preactivation_stddev`."""
        raise NotImplementedError

    # Keras API --------------------------------------------------------------

    def build(self, input_shape):
        kernel_shape = self.kernel_shape(input_shape)
        self._kernel_posterior = self.make_kernel_posterior(kernel_shape)
        out = kernel_shape[-1]
        self._bias_posterior = None
        self.bias = None
        if self.bias_prior is not None:
            self._bias_posterior = MeanFieldNormal(
                self,
                "bias",
                (out,),
                loc_initializer=self.bias_initializer,
                scale_init=self.bias_posterior_scale_init,
            )
        elif self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(out,), initializer=self.bias_initializer
            )

    def make_kernel_posterior(self, kernel_shape):
        """Creates the kernel's posterior (its variables live on this layer)."""
        return MeanFieldNormal(
            self,
            "kernel",
            kernel_shape,
            loc_initializer=self.kernel_initializer,
            scale_init=self.kernel_posterior_scale_init,
        )

    def posterior_scales(self):
        """`(kernel scale, bias scale or None)`: computed from the variables,
        or read from the inference state's `PosteriorScaleSnapshot` (see
        `PosteriorScaleSnapshot.active`)."""
        snapshot = self.inference_state.posterior_scales
        if snapshot is not None:
            copies = snapshot.scales_of(self)
            if copies is not None:
                return copies
        return self._computed_scales()

    def _computed_scales(self):
        bias_q = self._bias_posterior
        bias_scale = bias_q.scale() if bias_q is not None else None
        return self._kernel_posterior.scale(), bias_scale

    @property
    def kernel_posterior_params(self):
        """The kernel's `tdg.posteriors` object: its variables and `distribution()`.

        E.g. `layer.kernel_posterior_params.loc` is the variable of the kernel's
        posterior means (assign to it to start from trained weights).
        """
        return self._kernel_posterior

    @property
    def bias_posterior_params(self):
        """The bias's `tdg.posteriors` object, or None for a point-estimated bias."""
        return self._bias_posterior

    def kernel_posterior(self):
        """The TFP distribution `q(kernel)` (event shape = kernel shape)."""
        return self._kernel_posterior.distribution()

    def bias_posterior(self):
        """`q(bias)`, or None when the bias is point-estimated or absent."""
        if self._bias_posterior is None:
            return None
        return self._bias_posterior.distribution()

    def call(self, inputs, training=None):
        if self.inference_state.monte_carlo_samples is not None:
            return self.activation(self._monte_carlo_call(inputs))
        dtype = self.compute_dtype
        q = self._kernel_posterior
        # Never the snapshot here: the KL and the gradients need the variables.
        scale, bias_scale = self._computed_scales()
        loc, kl_scale = q.loc, scale  # the KL always sees the posterior itself
        if training is not True:
            loc, scale = self.inference_kernel(loc, scale)
        sample_for_kl = not self.kernel_prior.has_analytic_kl
        bias_q = self._bias_posterior
        bias_sample_for_kl = bias_q is not None and not self.bias_prior.has_analytic_kl

        seeds = None
        if self.sampling_enabled or sample_for_kl or bias_sample_for_kl:
            # With posterior-mean outputs the only noise is a KL sample, which
            # replicas share so the loss equals one device's.
            seed = self.next_seed(per_replica=self.sampling_enabled)
            seeds = tf.random.experimental.stateless_split(seed, num=4)

        def draw_perturbation():
            eps = random.normal(q.shape, seeds[0])
            return eps * scale

        def draw_bias():
            eps = random.normal(bias_q.shape, seeds[1])
            return bias_q.loc + bias_scale * eps

        kernel_sample = None
        bias_sample = None
        if not self.sampling_enabled:
            outputs = self.linear(inputs, tf.cast(loc, dtype))
            bias = self.bias if bias_q is None else tf.cast(bias_q.loc, dtype)
        elif self.estimator == REPARAMETERIZATION:
            kernel_sample = loc + draw_perturbation()
            outputs = self.linear(inputs, tf.cast(kernel_sample, dtype))
            bias = self.bias
            if bias_q is not None:
                bias_sample = draw_bias()
                bias = tf.cast(bias_sample, dtype)
        elif self.estimator == FLIPOUT:
            perturbation = draw_perturbation()
            kernel_sample = loc + perturbation if sample_for_kl else None
            outputs = self.linear(inputs, tf.cast(loc, dtype))
            sign_in_shape, sign_out_shape = self.flipout_sign_shapes(inputs, outputs)
            sign_in = random.rademacher(sign_in_shape, seeds[2], dtype)
            sign_out = random.rademacher(sign_out_shape, seeds[3], dtype)
            outputs += self.linear(inputs * sign_in, tf.cast(perturbation, dtype)) * sign_out
            bias = self.bias
            if bias_q is not None:
                bias_sample = draw_bias()
                bias = tf.cast(bias_sample, dtype)
        else:  # LOCAL_REPARAMETERIZATION
            outputs = self._local_reparameterization(inputs, loc, scale, bias_scale, seeds[2])
            bias = None  # included

        if bias is not None:
            outputs += tf.reshape(tf.cast(bias, dtype), self.bias_shape_for_broadcast())

        if sample_for_kl and kernel_sample is None:
            kernel_sample = q.loc + draw_perturbation()
        kl = q.kl_divergence(self.kernel_prior, kl_scale, sample=kernel_sample)
        if bias_q is not None:
            if bias_sample_for_kl and bias_sample is None:
                bias_sample = draw_bias()
            kl += bias_q.kl_divergence(self.bias_prior, bias_scale, sample=bias_sample)
        self.add_kl(kl, training, inputs)

        return self.activation(outputs)

    def _monte_carlo_call(self, inputs):
        """Pre-activations for the inference state's `monte_carlo_samples` stacked copies.

        When each example meets the kernel once (a dense layer on rank-2
        inputs), an example's pre-activations under a kernel sample are
        exactly Gaussian, `N(x mu, x^2 sigma^2)`, and drawing them with
        independent noise per row (local reparameterization) is the same, for
        every example, as drawing one kernel per copy. Otherwise (convolutions,
        dense layers over sequences) each copy gets its own kernel sample.
        """
        dtype = self.compute_dtype
        q, bias_q = self._kernel_posterior, self._bias_posterior
        scale, bias_scale = self.posterior_scales()
        loc, scale = self.inference_kernel(q.loc, scale)
        seeds = tf.random.experimental.stateless_split(self.next_seed(), num=2)
        bias_shape = self.bias_shape_for_broadcast()
        if self.exact_local_sampling(inputs):
            return self._local_reparameterization(inputs, loc, scale, bias_scale, seeds[0])

        num_samples = self.inference_state.monte_carlo_samples
        copies = tf.reshape(inputs, tf.concat([[num_samples, -1], tf.shape(inputs)[1:]], 0))
        kernel_shape = (num_samples, *q.shape)
        kernels = loc + scale * random.normal(kernel_shape, seeds[0])

        def one_copy(args):
            return self.linear(*args)

        outputs = tf.vectorized_map(one_copy, (copies, tf.cast(kernels, dtype)))
        bias = self.bias
        if bias_q is not None:
            eps = random.normal((num_samples, *bias_q.shape), seeds[1])
            bias = bias_q.loc + bias_scale * eps
            # (copy, example, ...): one bias sample per copy, on the channel axis.
            per_copy = [num_samples, 1, *bias_shape]
            if bias_shape == (-1,):
                per_copy = [num_samples, *[1] * (outputs.shape.rank - 2), -1]
            outputs += tf.reshape(tf.cast(bias, dtype), per_copy)
        elif bias is not None:
            outputs += tf.reshape(tf.cast(bias, dtype), bias_shape)
        return tf.reshape(outputs, tf.concat([[-1], tf.shape(outputs)[2:]], 0))

    def _local_reparameterization(self, inputs, loc, scale, bias_scale, seed):
        """Pre-activations (bias included) drawn from `N(x mu + b, x^2 sigma^2 + s_b^2)`."""
        dtype = self.compute_dtype
        bias_q = self._bias_posterior
        # A layer fed the stacked batch itself (the first of a Monte-Carlo
        # pass) sees S copies of one batch: every copy has the same mean and
        # variance, so compute them once and draw the noise for all copies
        # (the same draws as without the shortcut).
        stacked = self.inference_state.stacked_batch
        original = None if stacked is None else stacked.original(inputs)
        if original is not None:
            inputs = original
        # Mean path in the compute dtype; variance path in float32, where
        # squared scales (~1e-6) do not underflow as they would in float16.
        outputs = self.linear(inputs, tf.cast(loc, dtype))
        bias = self.bias
        bias_variance = None
        if bias_q is not None:
            bias = bias_q.loc
            bias_variance = tf.reshape(tf.square(bias_scale), self.bias_shape_for_broadcast())
        stddev = preactivation_stddev(
            self.linear, inputs, tf.square(scale), self.row_scale_axes(inputs), bias_variance
        )
        if original is not None:
            outputs, stddev = stacked.stack(outputs), stacked.stack(stddev)
        eps = random.normal(tf.shape(stddev), seed)
        outputs += tf.cast(stddev * eps, dtype)
        if bias is not None:
            outputs += tf.reshape(tf.cast(bias, dtype), self.bias_shape_for_broadcast())
        return outputs

    def exact_local_sampling(self, inputs):
        """Whether each example meets the kernel exactly once."""
        return False

    def inference_kernel(self, loc, scale):
        """The kernel's `(loc, scale)` outside training; sparse layers prune here."""
        return loc, scale

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_posterior_scale_init": self.kernel_posterior_scale_init,
                "bias_posterior_scale_init": self.bias_posterior_scale_init,
                "kernel_prior": keras.saving.serialize_keras_object(self.kernel_prior),
                "bias_prior": keras.saving.serialize_keras_object(self.bias_prior),
            }
        )
        return config
