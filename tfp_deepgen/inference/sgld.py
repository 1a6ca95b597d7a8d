"""Stochastic-gradient Langevin dynamics as Keras 3 optimizers: `SGLD`, `pSGLD`.

SGLD (Welling & Teh 2011) samples the posterior `p(theta | D)` of N examples
by noisy gradient steps of size eps:

    theta <- theta + eps / 2 * grad log p(theta | D) + Normal(0, eps).

Keras minimises the mean per-example loss `L` (the head's negative
log-likelihood averaged over the batch), so with a Gaussian prior of
precision `prior_precision` on every weight,
`grad log p(theta | D) ~= -N * grad L - prior_precision * theta`. These
optimizers take `learning_rate = eps * N / 2`, so that the drift is SGD on
`L` plus the prior as weight decay `prior_precision / N`:

    theta <- theta - learning_rate * (grad L + prior_precision / N * theta)
                   + Normal(0, 2 * learning_rate / N * temperature).

A learning rate that suits SGD on the model suits SGLD; `data_size` (N, the
number of training examples, not the batch size) must be given, since it
sets the noise. `temperature` scales the noise variance (T < 1: a "cold"
posterior `p(theta | D)^(1/T)`; T = 0: plain SGD to the MAP estimate).

pSGLD (Li et al. 2016) preconditions with RMSprop's
`G = 1 / (epsilon + sqrt(V))`, `V <- rho * V + (1 - rho) * g**2`:
`theta <- theta - learning_rate * G * g + Normal(0, 2 * learning_rate / N * T * G)`.

Noise is seeded state: each draw is `tf.random.stateless_normal` (Philox)
keyed by the optimizer's `noise_seed` variable, the update count
`iterations` and the variable's position, all of them optimizer variables,
so the stream is checkpointed with the optimizer (`BackupAndRestore`,
`.keras` files) and reproducible under `jit_compile=True`. Under a
`tf.distribute` strategy Keras applies the update once per variable on the
all-reduced gradient, running it on every replica's copy of a mirrored
variable; each copy reads the same (mirrored) seed and count, so every
replica adds the *same* noise and the copies stay equal. The replica id is
deliberately not folded in (unlike the layers' noise, which must differ
per replica).

With a `tdg.inference.CyclicalStepSize` learning rate (cSGLD, Zhang et al.
2020) the noise is off in each cycle's exploration stage.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(1, scale=1.0)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> optimizer = tdg.inference.SGLD(learning_rate=1e-2, data_size=16, seed=0)
>>> model.compile(optimizer, head.loss, jit_compile=True)
>>> x, y = np.ones((16, 2), "float32"), np.ones((16, 1), "float32")
>>> model.fit(x, y, batch_size=16, epochs=3, verbose=0).history["loss"][0] > 0
True
>>> int(optimizer.iterations)
3
"""

import numbers
import random

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.inference.step_size import CyclicalStepSize
from tfp_deepgen.layers.base import int32_seed

__all__ = ["SGLD", "pSGLD"]


def _data_size(value):
    if value is None:
        raise ValueError(
            "`data_size` must be a positive integer: N, the number of training examples "
            "(not the batch size), which scales the Langevin noise. Received: data_size=None"
        )
    return _validation.positive_int("data_size", value)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class SGLD(keras.optimizers.Optimizer):
    """Stochastic-gradient Langevin dynamics (Welling & Teh 2011).

    Each step is SGD on the mean loss with the Gaussian prior as weight decay
    plus Langevin noise:
    `theta <- theta - lr * (g + prior_precision / N * theta) + sqrt(2 * lr * T / N) * xi`,
    `xi ~ Normal(0, I)`. This is Welling & Teh's update with step size
    `eps = 2 * lr / N`. Collect the iterates with
    `tdg.inference.CollectSamples`.

    Args:
        learning_rate: `lr = eps * N / 2` (a float, or a Keras
            `LearningRateSchedule` such as `tdg.inference.CyclicalStepSize`).
            The sampler's discretisation error grows with it.
        data_size: N, the number of training examples (required).
        prior_precision: Precision of the zero-mean Gaussian prior on every
            weight the optimizer updates, biases included, >= 0 (0: a flat
            prior). Default 1.0: a standard normal prior. Put no other
            weight decay or regularizer on the model, or the prior counts
            twice.
        temperature: T >= 0, the factor on the noise variance. Default 1.0
            (the posterior itself).
        seed: Integer seed of the noise, or None for a random one (drawn from
            Python's `random`, which `keras.utils.set_random_seed` seeds).
        name: The optimizer's name.
        **kwargs: The other arguments of `keras.optimizers.Optimizer`
            (`clipnorm`, `gradient_accumulation_steps`, ...).

    Example:

    >>> import tfp_deepgen as tdg
    >>> optimizer = tdg.inference.SGLD(learning_rate=1e-3, data_size=50_000, seed=1)
    >>> optimizer.get_config()["data_size"], optimizer.get_config()["prior_precision"]
    (50000, 1.0)
    """

    def __init__(
        self,
        learning_rate=1e-3,
        data_size=None,
        prior_precision=1.0,
        temperature=1.0,
        seed=None,
        name="SGLD",
        **kwargs,
    ):
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
            learning_rate = _validation.positive_float("learning_rate", learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.data_size = _data_size(data_size)
        self.prior_precision = _validation.non_negative_float("prior_precision", prior_precision)
        self.temperature = _validation.non_negative_float("temperature", temperature)
        self.seed = _validation.seed("seed", seed)
        initial_seed = random.randint(1, int(1e9)) if self.seed is None else self.seed
        self.noise_seed = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(initial_seed),
            dtype="int64",
            aggregation="only_first_replica",
            name="noise_seed",
        )

    @property
    def schedule(self):
        """The learning-rate schedule, or None for a constant learning rate."""
        rate = self._learning_rate
        return rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None

    def is_sampling_step(self, step):
        """Whether 0-based step `step` adds noise (False in a cSGLD exploration stage)."""
        if isinstance(self.schedule, CyclicalStepSize):
            return self.schedule.is_sampling_step(step)
        return True

    def noise_variance(self, learning_rate):
        """`2 * learning_rate / N * T` at this step, 0 in an exploration stage (float32)."""
        variance = 2.0 * tf.cast(learning_rate, tf.float32) * self.temperature / self.data_size
        if isinstance(self.schedule, CyclicalStepSize):
            variance *= tf.cast(self.schedule.sampling(self.iterations), tf.float32)
        return variance

    def noise(self, variable):
        """Standard normal noise for `variable` at this step, a pure function of the state.

        Keyed by (`noise_seed`, `iterations`, the variable's position in the
        optimizer); the same on every replica.
        """
        index = self._get_variable_index(variable)
        step = tf.cast(tf.math.floormod(tf.cast(self.iterations, tf.int64), tf.int32.max), tf.int32)
        key = tf.stack([int32_seed(self.noise_seed.value), tf.constant(index, tf.int32)])
        key = tf.random.experimental.stateless_fold_in(key, step, alg="philox")
        return tf.random.stateless_normal(variable.shape, key, dtype=variable.dtype, alg="philox")

    def posterior_gradient(self, gradient, variable):
        """`grad L + prior_precision / N * theta`: the gradient of U / N, U = -log posterior."""
        gradient = tf.cast(tf.convert_to_tensor(gradient), variable.dtype)
        if self.prior_precision == 0:
            return gradient
        return gradient + (self.prior_precision / self.data_size) * tf.convert_to_tensor(variable)

    def update_step(self, gradient, variable, learning_rate):
        """`theta <- theta - lr * g + sqrt(2 * lr * T / N) * xi`."""
        learning_rate = tf.cast(learning_rate, variable.dtype)
        drift = learning_rate * self.posterior_gradient(gradient, variable)
        scale = tf.cast(tf.sqrt(self.noise_variance(learning_rate)), variable.dtype)
        self.assign_add(variable, scale * self.noise(variable) - drift)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "data_size": self.data_size,
                "prior_precision": self.prior_precision,
                "temperature": self.temperature,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class pSGLD(SGLD):  # noqa: N801 -- the name of Li et al. 2016
    """RMSprop-preconditioned SGLD (Li, Chen, Carlson and Carin 2016).

    With `g = grad L + prior_precision / N * theta` (the gradient of the
    per-example negative log posterior, prior included, so that weights the
    data do not inform still get a finite preconditioner):

        V <- rho * V + (1 - rho) * g**2,   G = 1 / (epsilon + sqrt(V))
        theta <- theta - lr * G * g + sqrt(2 * lr * T / N * G) * xi.

    This is the practical algorithm of the paper (its Algorithm 1): the
    correction term `Gamma(theta) = sum_j d G_ij / d theta_j` is omitted, as
    the paper does, arguing it is negligible when `rho` is close to 1 (V
    then changes slowly). `V` starts at 0.

    Args:
        learning_rate: As in `SGLD`; the step in RMSprop's units.
        data_size: N, the number of training examples (required).
        rho: Decay of the squared-gradient average, in (0, 1). Default 0.99.
        epsilon: Added to `sqrt(V)`, > 0. Default 1e-5.
        prior_precision, temperature, seed, name, **kwargs: As in `SGLD`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> optimizer = tdg.inference.pSGLD(learning_rate=1e-3, data_size=1000, rho=0.95, seed=0)
    >>> optimizer.get_config()["rho"]
    0.95
    """

    def __init__(
        self,
        learning_rate=1e-3,
        data_size=None,
        rho=0.99,
        epsilon=1e-5,
        prior_precision=1.0,
        temperature=1.0,
        seed=None,
        name="pSGLD",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            data_size=data_size,
            prior_precision=prior_precision,
            temperature=temperature,
            seed=seed,
            name=name,
            **kwargs,
        )
        self.rho = _validation.open_unit_float("rho", rho)
        self.epsilon = _validation.positive_float("epsilon", epsilon)

    def build(self, variables):
        """Creates `V`, one squared-gradient average per variable."""
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        """`V`, then `theta <- theta - lr * G * g + sqrt(2 * lr * T / N * G) * xi`."""
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = self.posterior_gradient(gradient, variable)
        velocity = self.velocities[self._get_variable_index(variable)]
        velocity_value = self.rho * velocity.value + (1.0 - self.rho) * tf.square(gradient)
        self.assign(velocity, velocity_value)
        preconditioner = 1.0 / (self.epsilon + tf.sqrt(velocity_value))
        variance = tf.cast(self.noise_variance(learning_rate), variable.dtype) * preconditioner
        self.assign_add(
            variable,
            tf.sqrt(variance) * self.noise(variable) - learning_rate * preconditioner * gradient,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config
