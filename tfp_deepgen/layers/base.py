"""What every stochastic layer shares: seeds, sampling mode, KL bookkeeping.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([keras.Input((4,)), tdg.layers.DenseFlipout(2)])
>>> with tdg.layers.sampling_mode(model, "mean"):
...     y = model(keras.ops.ones((1, 4)))
"""

import contextlib

import keras
import tensorflow as tf

from tfp_deepgen import _validation

__all__ = [
    "StochasticLayer",
    "VariationalLayer",
    "monte_carlo_mode",
    "sampling_mode",
    "stochastic_layers",
]

SAMPLING_MODES = ("sample", "mean")


class _LastValue(keras.metrics.Metric):
    """Holds the last value a layer reported, outside `layer.weights`.

    Its `result()` is an empty dict so it does not clutter `fit` logs; read it
    through the owning layer. Replicas each hold their own value and reading
    in cross-replica context averages them.
    """

    def __init__(self, name):
        super().__init__(name=name)
        self.value = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="mean", name="value"
        )

    def update_state(self, value):
        self.value.assign(tf.cast(value, "float32"))

    def result(self):
        return {}

    def reset_state(self):
        self.value.assign(0.0)


def int32_seed(seed):
    """Maps a Keras (int64) seed to the int32 range TFP and `tf.random` want."""
    return tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)


class StochasticLayer(keras.layers.Layer):
    """Base of every layer that draws random numbers.

    Owns a `keras.random.SeedGenerator`; every draw goes through
    `self.next_seed()` into a stateless op, so the same seed gives the same
    numbers, successive calls give new ones, and under `tf.distribute` each
    replica draws different noise.

    Args:
        sampling: `"sample"` (draw noise in training and inference) or
            `"mean"` (use posterior means; deterministic).
        seed: Integer seed of the layer's random stream, or None for a random
            one.
    """

    def __init__(self, sampling="sample", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.sampling = _validation.one_of("sampling", sampling, SAMPLING_MODES)
        self.seed = _validation.seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # Set by `monte_carlo_mode`: the batch holds this many stacked copies.
        self.monte_carlo_samples = None

    def next_seed(self, per_replica=True):
        """A fresh int32 seed of shape `[2]` for `tf.random.stateless_*`.

        Args:
            per_replica: Fold the replica id in, because the seed variable is
                mirrored and would otherwise hand every replica the same
                numbers. Pass False for noise that must agree across replicas
                (e.g. a Monte-Carlo KL sample when outputs use posterior means).
        """
        seed = int32_seed(self.seed_generator.next())
        replica = tf.distribute.get_replica_context()
        if per_replica and replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(
                seed, tf.cast(replica.replica_id_in_sync_group, tf.int32)
            )
        return seed

    # Keras does not save a SeedGenerator's state; without it a reloaded model
    # would replay the noise stream from the start instead of continuing it.
    _SEED_STATE_KEY = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_STATE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self._SEED_STATE_KEY in keys:
            self.seed_generator.state.assign(store[self._SEED_STATE_KEY])
            store = {key: store[key] for key in keys if key != self._SEED_STATE_KEY}
        super().load_own_variables(store)

    @property
    def sampling_enabled(self):
        return self.sampling == "sample"

    def get_config(self):
        config = super().get_config()
        config.update({"sampling": self.sampling, "seed": self.seed})
        return config


class VariationalLayer(StochasticLayer):
    """Base of layers that add a KL term to the loss.

    Each call adds `kl_weight * KL(q || p)` with `add_loss` and, unless called
    with `training=False`, records the unweighted KL, readable as
    `layer.last_kl`.

    Args:
        kl_weight: Multiplier of the KL term, >= 0. Set it to
            `1 / num_training_examples` so the training loss is the negative
            ELBO per example.
        sampling, seed: See `StochasticLayer`.
    """

    def __init__(self, kl_weight=1.0, sampling="sample", seed=None, **kwargs):
        super().__init__(sampling=sampling, seed=seed, **kwargs)
        self.kl_weight = _validation.non_negative_float("kl_weight", kl_weight)
        self._kl_tracker = _LastValue(name="kl")

    @property
    def last_kl(self):
        """Unweighted `KL(q || p)` of the most recent call (float32 scalar)."""
        # Under tf.distribute this reads a sync-on-read variable: the mean over
        # replicas in cross-replica context, the replica's own value inside.
        return tf.convert_to_tensor(self._kl_tracker.value.value)

    def add_kl(self, kl, training=None, inputs=None):
        """Adds `kl_weight * kl` as a loss and records `kl` as `last_kl`.

        With `training=False` (`predict`, `evaluate`, serving) the KL is not
        recorded: the record is a variable update, which would keep the KL's
        computation alive in graphs whose outputs never use it, such as
        `predict` and exported signatures.

        Args:
            kl: Float32 scalar, the unweighted KL.
            training: The call's `training` argument.
            inputs: The layer's inputs, or None. When given, the loss is NaN
                whenever they hold a NaN or an infinity (see
                `not_finite_flag`); `last_kl` is left as it is.
        """
        if training is not False:
            self._kl_tracker.update_state(kl)
        loss = self.kl_weight * kl
        if inputs is not None:
            loss += not_finite_flag(inputs)
        self.add_loss(loss)

    def get_config(self):
        config = super().get_config()
        config["kl_weight"] = self.kl_weight
        return config


def not_finite_flag(inputs):
    """Float32 scalar: 0 when every value of `inputs` is finite, else NaN.

    Added to a layer's loss so that `fit` logs NaN (and
    `keras.callbacks.TerminateOnNaN` stops) in the very step where a NaN or
    infinite input reaches the layer. The outputs alone do not show it:
    TensorFlow's fused matmul + bias + ReLU kernel (graph mode, no XLA) maps
    a NaN pre-activation to 0, so the loss stays finite while the kernel's
    gradient `x^T g`, and after the update every weight, is NaN.
    """
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        return tf.constant(0.0)
    finite = tf.reduce_all(tf.math.is_finite(inputs))
    return tf.where(finite, tf.constant(0.0), tf.constant(float("nan")))


def stochastic_layers(model):
    """Every `StochasticLayer` inside `model` (itself and nested ones included), depth first."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True)
        if isinstance(layer, StochasticLayer)
    ]


@contextlib.contextmanager
def sampling_mode(model, mode="mean"):
    """Temporarily switches every stochastic layer of `model` to `mode`.

    Compiled `fit`/`evaluate`/`predict` functions are dropped on entry and on
    exit, because the mode is fixed when a function is traced.

    Args:
        model: A Keras model or layer.
        mode: `"mean"` (posterior means, deterministic) or `"sample"`.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(1)])
    >>> with tdg.layers.sampling_mode(model, "mean"):
    ...     a = model.predict(keras.ops.ones((2, 3)), verbose=0)
    """
    mode = _validation.one_of("mode", mode, SAMPLING_MODES)
    layers = stochastic_layers(model)
    previous = [layer.sampling for layer in layers]

    def reset_compiled():
        for attr in ("train_function", "test_function", "predict_function"):
            if hasattr(model, attr):
                setattr(model, attr, None)

    for layer in layers:
        layer.sampling = mode
    reset_compiled()
    try:
        yield model
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.sampling = old
        reset_compiled()


@contextlib.contextmanager
def monte_carlo_mode(model, num_samples):
    """Makes `model` draw independent posterior samples for stacked copies.

    Inside the context every stochastic layer samples (whatever its
    `sampling`), skips its KL term, and treats its batch as `num_samples`
    stacked copies of the real batch (copy-major, as `tf.tile` makes them):
    the outputs of copy `s` come from posterior sample `s`, independent of the
    other copies. Trace the model inside the context; `tfp_deepgen.predictive`
    does this for you.

    Args:
        model: A Keras model or layer.
        num_samples: Number of stacked copies, a positive integer.
    """
    num_samples = _validation.positive_int("num_samples", num_samples)
    layers = stochastic_layers(model)
    previous = [(layer.sampling, layer.monte_carlo_samples) for layer in layers]
    for layer in layers:
        layer.sampling = "sample"
        layer.monte_carlo_samples = num_samples
    try:
        yield model
    finally:
        for layer, (sampling, samples) in zip(layers, previous, strict=True):
            layer.sampling = sampling
            layer.monte_carlo_samples = samples
