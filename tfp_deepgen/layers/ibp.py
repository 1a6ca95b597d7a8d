"""Indian-Buffet-Process gates that learn how many units a layer needs.

`IBPGate` multiplies each unit (last axis) of its input by a gate
`z_k ~ Bernoulli(pi_k)`, with the stick-breaking IBP prior
`pi_k = prod_{j <= k} v_j`, `v_j ~ Beta(alpha, 1)`, so a layer's `units` is an
upper bound and the posterior decides how many are used. `IBPDense` is a
dense layer followed by its gate.

Variational posterior (as in Panousis, Chatzis & Theodoridis, 2019):
`q(v_k) = Kumaraswamy(a_k, b_k)` and `q(z_k) = Bernoulli(p_k)`, relaxed in
training to a binary Concrete of temperature `temperature`, one draw per
example. The KL added as a loss is

- `sum_k KL(Kumaraswamy(a_k, b_k) || Beta(alpha, 1))`: analytic
  (`tfp_deepgen.stick_breaking.kumaraswamy_beta_kl`);
- `sum_k E_q(v)[KL(Bernoulli(p_k) || Bernoulli(pi_k))]`: the Bernoulli KL is
  exact given `pi`, the expectation over `v` a one-sample Monte-Carlo estimate
  through a reparameterized Kumaraswamy draw.

Both posteriors start at the prior: `q(v_k) = Kumaraswamy(alpha, 1)`, which is
`Beta(alpha, 1)`, and `p_k = E[pi_k] = (alpha / (1 + alpha))^(k + 1)`, so the
first units start open and the later ones nearly closed. Units then open in
the prior's order as the data needs them. Started all open, the network
spreads its function over units at random indices, and one useful unit at
index 40 makes the stick keep every unit before it: measured in
`benchmarks/ibp_width.py`, this start is what lets the width be learned.

Outside training the gates are hard: a Bernoulli(`p_k`) draw per example, or
under `sampling="mean"` the unit is on exactly when `p_k > threshold`, which is
what `tdg.structure.shrink` keeps. The default threshold 0.99 counts the units
the data holds open (their `p_k` ends above 0.995); a unit the next layer does
not read has no data term and drifts at its prior's level, which for the first
units of a well-used stick is 0.93-0.98. The default `alpha=10` keeps enough
units near the start that a wide teacher is fitted rather than stuck in a
narrow network's local minimum; the stick still closes the unneeded ones.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((8,)),
...     tdg.layers.IBPDense(50, alpha=5.0, activation="relu", kl_weight=1e-3),
...     keras.layers.Dense(1),
... ])
>>> model(keras.ops.ones((2, 8))).shape
TensorShape([2, 1])
>>> model.layers[0].active_units()  # none before training: every gate starts at the prior
0
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation, stick_breaking
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.layers.base import VariationalLayer
from tfp_deepgen.layers.dense import DenseLocalReparameterization

__all__ = ["IBPGate", "IBPDense"]

# Keeps the Kumaraswamy parameters away from 0, where its sampler and KL blow up.
_MIN_PARAMETER = 1e-3
# Keeps the prior-ordered start's last gate logits finite and trainable.
_MIN_INITIAL_PROBABILITY = 1e-4


def _uniform(shape, seed):
    return tf.random.stateless_uniform(shape, seed, minval=1e-6, maxval=1.0 - 1e-6, alg="philox")


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class IBPGate(VariationalLayer):
    """Learned on/off gates over the units (last axis) of its input, IBP prior.

    Place it after any layer to learn that layer's width: it gates the last
    axis, so after a `Dense` its units, after a channels-last `Conv2D` its
    channels (one gate per channel, shared over positions). Cascading gates
    over several layers learns each width; the prior's `alpha` is the
    expected number of active units per gated layer.

    Args:
        alpha: IBP concentration, > 0: the prior expects about `alpha` active
            units (unit `k`, counted from 0, is active with prior mean
            `(alpha / (1 + alpha))^(k + 1)`).
        temperature: Binary Concrete temperature in training, > 0; lower is
            closer to hard gates, with noisier gradients.
        initial_probability: `"prior"` (default): each gate starts at the
            prior's `E[pi_k] = (alpha / (1 + alpha))^(k + 1)`, so units open
            in order; or a number in (0, 1), the start of every gate.
        threshold: `p_k` above which a unit counts as active, in (0, 1).
        kl_weight: Multiplier of the KL; use `1 / num_training_examples`.
        sampling: `"sample"` (default) or `"mean"` (deterministic gates:
            `p_k` in training, `p_k > threshold` outside).
        seed: Integer seed of the gates' noise.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> gate = tdg.layers.IBPGate(alpha=3.0)
    >>> gate(keras.ops.ones((2, 5, 5, 8)), training=True).shape
    TensorShape([2, 5, 5, 8])
    >>> [round(float(p), 2) for p in gate.unit_probabilities()[:3]]
    [0.75, 0.56, 0.42]
    """

    def __init__(
        self,
        alpha=10.0,
        temperature=0.5,
        initial_probability="prior",
        threshold=0.99,
        kl_weight=1.0,
        sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, sampling=sampling, seed=seed, **kwargs)
        self.alpha = _validation.positive_float("alpha", alpha)
        self.temperature = _validation.positive_float("temperature", temperature)
        if initial_probability != "prior":
            initial_probability = _validation.open_unit_float(
                "initial_probability", initial_probability
            )
        self.initial_probability = initial_probability
        self.threshold = _validation.open_unit_float("threshold", threshold)
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError(
                f"IBPGate needs a known last dimension. Received input_shape={tuple(input_shape)}"
            )
        self.units = int(units)

        def weight(name, value):
            return self.add_weight(
                name=name,
                shape=(self.units,),
                initializer=keras.initializers.Constant(value),
                dtype="float32",
                autocast=False,
            )

        # q(v_k) = Kumaraswamy(a, b) starts at the prior: Kumaraswamy(alpha, 1) is Beta(alpha, 1).
        self.untransformed_a = weight("untransformed_a", softplus_inverse(self.alpha))
        self.untransformed_b = weight("untransformed_b", softplus_inverse(1.0))
        self.gate_logits = weight("gate_logits", self._initial_logits())

    def _initial_logits(self):
        if self.initial_probability == "prior":
            ratio = self.alpha / (1.0 + self.alpha)
            p = np.maximum(ratio ** np.arange(1, self.units + 1), _MIN_INITIAL_PROBABILITY)
        else:
            p = np.full(self.units, self.initial_probability)
        return np.log(p / (1.0 - p)).astype("float32")

    def kumaraswamy_parameters(self):
        """`(a, b)` of `q(v)`, each of shape `(units,)`."""
        a = tf.math.softplus(self.untransformed_a) + _MIN_PARAMETER
        b = tf.math.softplus(self.untransformed_b) + _MIN_PARAMETER
        return a, b

    def unit_probabilities(self):
        """Posterior probabilities `p_k` that each unit is active (NumPy array)."""
        return tf.sigmoid(self.gate_logits).numpy()

    def active_units(self, threshold=None):
        """Number of units with `p_k > threshold` (default: the layer's `threshold`)."""
        threshold = self.threshold if threshold is None else threshold
        threshold = _validation.open_unit_float("threshold", threshold)
        return int((self.unit_probabilities() > threshold).sum())

    def active_mask(self, threshold=None):
        """Boolean NumPy mask of the active units."""
        threshold = self.threshold if threshold is None else threshold
        threshold = _validation.open_unit_float("threshold", threshold)
        return self.unit_probabilities() > threshold

    def kl_divergence(self, seed):
        """The gate's KL (see the module docstring), float32 scalar."""
        a, b = self.kumaraswamy_parameters()
        kl_v = stick_breaking.kumaraswamy_beta_kl(a, b, self.alpha)
        log_v = stick_breaking.kumaraswamy_log_sample(a, b, _uniform((self.units,), seed))
        pi = stick_breaking.stick_probabilities(log_v)
        kl_z = stick_breaking.bernoulli_kl(tf.sigmoid(self.gate_logits), pi)
        return tf.reduce_sum(kl_v) + tf.reduce_sum(kl_z)

    def _gate_shape(self, inputs):
        # One gate per example and unit, shared over any middle (spatial) axes.
        shape = tf.shape(inputs)
        middle = tf.ones([inputs.shape.rank - 2], tf.int32)
        return tf.concat([shape[:1], middle, shape[-1:]], axis=0)

    def call(self, inputs, training=None):
        return self._gate(inputs, training, checked=inputs)

    def _gate(self, inputs, training, checked):
        """Gates `inputs`; the loss is NaN when `checked` is not all finite."""
        dtype = self.compute_dtype
        probabilities = tf.sigmoid(self.gate_logits)
        # With deterministic gates the only noise is the KL's v sample, which
        # replicas share so the loss equals one device's.
        monte_carlo = self.inference_state.monte_carlo_samples is not None
        noisy = self.sampling_enabled
        seeds = tf.random.experimental.stateless_split(self.next_seed(per_replica=noisy), 2)
        if not monte_carlo:
            self.add_kl(self.kl_divergence(seeds[0]), training, checked)
        if training is True:
            if noisy:
                uniform = _uniform(self._gate_shape(inputs), seeds[1])
                gates = stick_breaking.binary_concrete(self.gate_logits, self.temperature, uniform)
            else:
                gates = probabilities
        elif noisy:
            gates = tf.cast(_uniform(self._gate_shape(inputs), seeds[1]) < probabilities, "float32")
        else:
            gates = tf.cast(probabilities > self.threshold, "float32")
        return inputs * tf.cast(gates, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "temperature": self.temperature,
                "initial_probability": self.initial_probability,
                "threshold": self.threshold,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class IBPDense(IBPGate):
    """`Dense(units)` whose units are switched on or off by an IBP gate.

    Computes `activation(x W + b) * z`: a unit that is off outputs zero.
    `units` is an upper bound; `active_units()` is what the posterior uses.
    The weights are point estimates (`kernel_prior=None`) or, with a
    `tfp_deepgen.priors` prior, a mean-field Normal posterior sampled by
    local reparameterization (`tdg.layers.DenseLocalReparameterization`),
    whose KL joins the gate's.

    Args:
        units: Largest number of units, a positive integer.
        activation, use_bias, kernel_initializer, bias_initializer: As for
            `keras.layers.Dense`.
        kernel_prior: None for point-estimated weights, or a prior for
            variational ones.
        alpha, temperature, initial_probability, threshold: As for `IBPGate`.
        kl_weight, sampling, seed: As for `IBPGate`.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> layer = tdg.layers.IBPDense(10, kernel_prior=tdg.priors.Normal(0.0, 1.0))
    >>> layer(keras.ops.ones((3, 4))).shape
    TensorShape([3, 10])
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_prior=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _validation.positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        common = {
            "use_bias": use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype_policy,
            "name": "dense",
        }
        if kernel_prior is None:
            self.dense = keras.layers.Dense(self.units, **common)
        else:
            self.dense = DenseLocalReparameterization(
                self.units,
                kernel_prior=kernel_prior,
                kl_weight=self.kl_weight,
                sampling=self.sampling,
                seed=None if self.seed is None else self.seed + 1,
                **common,
            )

    @property
    def kernel_prior(self):
        return getattr(self.dense, "kernel_prior", None)

    def build(self, input_shape):
        self.dense.build(input_shape)
        super().build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, inputs, training=None):
        # The raw inputs are checked: a fused ReLU can zero a NaN before the gate.
        outputs = self.activation(self.dense(inputs, training=training))
        return self._gate(outputs, training, checked=inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_prior": keras.saving.serialize_keras_object(self.kernel_prior),
            }
        )
        return config
