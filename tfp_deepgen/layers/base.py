"""What every stochastic layer shares: seeds, inference state, KL bookkeeping.

How a stochastic layer computes outside its own settings (posterior means,
Monte-Carlo copies, a snapshot of the posterior scales) is one
`InferenceState`, set for every layer of a model by one context,
`inference_state`; `sampling_mode` and `monte_carlo_mode` are that context
with one field each. A layer reads it as `layer.inference_state`.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([keras.Input((4,)), tdg.layers.DenseFlipout(2)])
>>> with tdg.layers.sampling_mode(model, "mean"):
...     y = model(keras.ops.ones((1, 4)))
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from tfp_deepgen import _validation

__all__ = [
    "InferenceState",
    "StackedBatch",
    "StochasticLayer",
    "VariationalLayer",
    "inference_state",
    "monte_carlo_mode",
    "sampling_mode",
    "stochastic_layers",
]

SAMPLING_MODES = ("sample", "mean")


class StackedBatch:
    """`num_samples` copies of a batch stacked along the batch axis, with the batch itself.

    A Monte-Carlo pass runs the model once on `copies` (copy-major, as
    `tf.tile` makes them). A layer that receives one of the `copies` tensors
    itself (not a tensor computed from it) may compute on `original(inputs)`
    once and stack its result, since every copy of an example is the same
    input. That only saves time; a layer that does not do it gets the same
    distribution.

    Args:
        batch: A tensor, or a dict, list or tuple of them (one per model
            input), examples along the first axis.
        num_samples: Number of copies, a positive integer.

    Example:

    >>> import tensorflow as tf, tfp_deepgen as tdg
    >>> stacked = tdg.layers.StackedBatch(tf.ones((2, 3)), 4)
    >>> stacked.copies.shape
    TensorShape([8, 3])
    >>> stacked.original(stacked.copies) is stacked.batch
    True
    """

    def __init__(self, batch, num_samples):
        self.num_samples = _validation.positive_int("num_samples", num_samples)
        self.batch = tf.nest.map_structure(tf.convert_to_tensor, batch)
        self.copies = tf.nest.map_structure(self.stack, self.batch)
        self._pairs = tuple(
            zip(tf.nest.flatten(self.copies), tf.nest.flatten(self.batch), strict=True)
        )

    def stack(self, tensor):
        """`num_samples` copies of `tensor` along axis 0."""
        return tf.tile(tensor, [self.num_samples] + [1] * (tensor.shape.rank - 1))

    def original(self, tensor):
        """The batch `tensor` stacks when it is one of `copies` itself, else None."""
        for copy, original in self._pairs:
            if tensor is copy:
                return original
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class InferenceState:
    """What stochastic layers do beyond their own settings; see `inference_state`.

    Attributes:
        sampling: None (each layer follows its own `sampling`), `"sample"`
            or `"mean"` (overrides it).
        monte_carlo_samples: None, or S: the batch holds S stacked copies of
            the real batch, each to be computed under its own posterior sample,
            with no KL term.
        stacked_batch: None, or the `StackedBatch` the caller feeds the model
            (S copies), which lets the layers it reaches directly compute once
            per example. Only with `monte_carlo_samples`.
        posterior_scales: None, or a `PosteriorScaleSnapshot` whose copies of
            the posterior scales the variational layers read instead of
            computing them.
    """

    sampling: str | None = None
    monte_carlo_samples: int | None = None
    stacked_batch: StackedBatch | None = None
    posterior_scales: object = None

    def __post_init__(self):
        if self.sampling is not None:
            _validation.one_of("sampling", self.sampling, SAMPLING_MODES)
        if self.monte_carlo_samples is not None:
            _validation.positive_int("monte_carlo_samples", self.monte_carlo_samples)
        if self.stacked_batch is not None:
            if not isinstance(self.stacked_batch, StackedBatch):
                raise ValueError(
                    "`stacked_batch` must be a tdg.layers.StackedBatch or None; "
                    f"received {self.stacked_batch!r}."
                )
            if self.stacked_batch.num_samples != self.monte_carlo_samples:
                raise ValueError(
                    f"`stacked_batch` holds {self.stacked_batch.num_samples} copies but "
                    f"monte_carlo_samples={self.monte_carlo_samples!r}; they must agree."
                )


_DEFAULT_STATE = InferenceState()


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
        # Written only by the `inference_state` context.
        self._inference_state = _DEFAULT_STATE

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
    def inference_state(self):
        """The `InferenceState` in effect: set by `tdg.layers.inference_state`."""
        return self._inference_state

    @property
    def sampling_enabled(self):
        """Whether calls draw noise: the inference state's `sampling`, else the layer's own."""
        state = self._inference_state
        if state.monte_carlo_samples is not None:
            return True
        return (state.sampling or self.sampling) == "sample"

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


def _sublayers(layer):
    """The layers `layer` holds directly, in the order it holds them."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    # A plain layer has no public list of its sub-layers: read its attributes
    # (and lists, tuples and dicts in them) as Keras's own saving does.
    found = []
    for value in vars(layer).values():
        if isinstance(value, dict):
            values = list(value.values())
        elif isinstance(value, (list, tuple)):
            values = list(value)
        else:
            values = [value]
        found.extend(v for v in values if isinstance(v, keras.layers.Layer))
    return found


def stochastic_layers(model):
    """Every `StochasticLayer` inside `model` (itself and nested ones included), depth first.

    Nested models are walked through their `layers`, other layers through the
    layers they hold as attributes (e.g. the `dense` of an `IBPDense`).

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> inner = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(2)])
    >>> outer = keras.Sequential([keras.Input((3,)), inner, tdg.layers.MCDropout(0.1)])
    >>> [type(layer).__name__ for layer in tdg.layers.stochastic_layers(outer)]
    ['DenseFlipout', 'MCDropout']
    """
    seen, found, pending = set(), [], [model]
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, StochasticLayer):
            found.append(layer)
        pending.extend(reversed(_sublayers(layer)))
    return found


def sampling_states(model):
    """Whether each stochastic layer in `model` samples, as a hashable key.

    A traced function fixes each layer's `sampling_enabled` when it traces,
    so a cache of traced functions keys on this to retrace when it changes.

    Example:

    >>> import tfp_deepgen as tdg
    >>> from tfp_deepgen.layers.base import sampling_states
    >>> layer = tdg.layers.DenseFlipout(2)
    >>> with tdg.layers.sampling_mode(layer, "mean"):
    ...     inside = sampling_states(layer)
    >>> inside, sampling_states(layer)
    ((False,), (True,))
    """
    return tuple(layer.sampling_enabled for layer in stochastic_layers(model))


_UNSET = object()


@contextlib.contextmanager
def inference_state(
    model,
    sampling=_UNSET,
    monte_carlo_samples=_UNSET,
    stacked_batch=_UNSET,
    posterior_scales=_UNSET,
):
    """Sets fields of the `InferenceState` of every stochastic layer in `model`.

    Fields not given keep the value each layer has (contexts nest); every
    layer gets its previous state back on exit, also when the body raises.
    A `tf.function` reads the state when it traces: enter the context inside
    the traced function, or trace inside the context. When `sampling`
    changes, the compiled `fit`/`evaluate`/`predict` functions of `model` are
    dropped on entry and on exit (Keras retraces them on their next use).

    Args:
        model: A Keras model or layer, or a list of them.
        sampling, monte_carlo_samples, stacked_batch, posterior_scales: See
            `InferenceState`.

    Yields:
        `model`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> layer = tdg.layers.DenseFlipout(2, seed=0)
    >>> x = np.ones((1, 3), "float32")
    >>> with tdg.layers.inference_state(layer, sampling="mean"):
    ...     same = bool(np.all(layer(x) == layer(x)))
    >>> same, layer.sampling, layer.inference_state.sampling
    (True, 'sample', None)
    """
    given = {
        "sampling": sampling,
        "monte_carlo_samples": monte_carlo_samples,
        "stacked_batch": stacked_batch,
        "posterior_scales": posterior_scales,
    }
    changes = {name: value for name, value in given.items() if value is not _UNSET}
    models = model if isinstance(model, (list, tuple)) else [model]
    layers = list({id(layer): layer for m in models for layer in stochastic_layers(m)}.values())
    previous = [layer._inference_state for layer in layers]
    # Validates before any layer changes.
    states = [dataclasses.replace(state, **changes) for state in previous]
    # Inside a trace the compiled functions may be running: leave them be.
    retrace = tf.executing_eagerly() and any(
        old.sampling != new.sampling for old, new in zip(previous, states, strict=True)
    )
    for layer, state in zip(layers, states, strict=True):
        layer._inference_state = state
    if retrace:
        _drop_compiled_functions(models)
    try:
        yield model
    finally:
        for layer, state in zip(layers, previous, strict=True):
            layer._inference_state = state
        if retrace:
            _drop_compiled_functions(models)


def _drop_compiled_functions(models):
    for model in models:
        for attr in ("train_function", "test_function", "predict_function"):
            if hasattr(model, attr):
                setattr(model, attr, None)


@contextlib.contextmanager
def sampling_mode(model, mode="mean"):
    """Temporarily switches every stochastic layer of `model` to `mode`.

    The layers' own `sampling` is left as it is; the context overrides it.
    A `tf.function` fixes the mode when it traces, so the compiled
    `fit`/`evaluate`/`predict` functions of `model` are dropped on entry and
    on exit (Keras retraces them on their next use).

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
    with inference_state(model, sampling=mode) as entered:
        yield entered


@contextlib.contextmanager
def monte_carlo_mode(model, num_samples, stacked_batch=None):
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
        stacked_batch: Optionally the `StackedBatch` of `num_samples` copies
            that will be fed to `model` (`model(stacked_batch.copies)`): the
            layers that receive it directly then compute once per example.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(2)])
    >>> stacked = tdg.layers.StackedBatch(keras.ops.ones((5, 3)), 4)
    >>> with tdg.layers.monte_carlo_mode(model, 4, stacked):
    ...     outputs = model(stacked.copies)
    >>> outputs.shape
    TensorShape([20, 2])
    """
    num_samples = _validation.positive_int("num_samples", num_samples)
    with inference_state(
        model, monte_carlo_samples=num_samples, stacked_batch=stacked_batch
    ) as entered:
        yield entered
