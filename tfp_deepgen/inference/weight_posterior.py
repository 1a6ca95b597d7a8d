"""`WeightPosterior`: a posterior over the weights of an ordinary trained model.

Every method of `tfp_deepgen.inference` (SWAG, SGLD, Laplace, HMC) ends in a
`WeightPosterior`: a `keras.Model` that wraps the user's deterministic model
(plain Keras layers ending in a `tfp_deepgen.heads` head) and draws weights
for it. Because it is a Keras model ending in that head, everything that takes
a model takes it too:

- `tdg.predictive.predict(posterior, x)`: the Monte-Carlo predictive, with S
  weight draws computed in one vectorised graph (`tf.vectorized_map` over
  `model.stateless_call`, no Python loop over samples);
- `tdg.metrics` on the predictive's probabilities or moments;
- `tdg.export.export_saved_model(posterior, path)`: a SavedModel holding the
  posterior's state (samples or factors) that TensorFlow loads alone;
- `posterior.save("p.keras")` and `keras.saving.load_model(..., safe_mode=True)`.

Called outside a Monte-Carlo pass, a posterior returns the head parameters
under one weight draw, or under the trained weights inside
`tdg.layers.sampling_mode(posterior, "mean")`.

A subclass says which variables it is over (`random_variables`) and how to
draw them (`weight_samples`).

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal()
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
>>> kernel, bias = model.trainable_variables
>>> posterior = tdg.inference.SampleSet.from_samples(
...     model, [np.ones((4, 3, 2), "float32"), np.zeros((4, 2), "float32")]
... )
>>> tdg.predictive.predict(posterior, np.ones((5, 3), "float32"), num_samples=4)["mean"].shape
(5, 1)
"""

import copy

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import final_head
from tfp_deepgen.layers.base import StochasticLayer

__all__ = [
    "PosteriorDraws",
    "WeightPosterior",
    "check_mixable",
    "checked_variable_indices",
    "flat_values",
    "split_flat",
]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class PosteriorDraws(StochasticLayer):
    """The random stream of a `WeightPosterior`, and the inference state it reads.

    A weightless layer: `tdg.layers.inference_state` (which the predictive
    uses) reaches a posterior through it, and each weight draw takes a seed
    from its `keras.random.SeedGenerator`.

    Args:
        seed: Integer seed of the draws, or None for a random one.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.pop("sampling", None)
        super().__init__(sampling="sample", seed=seed, **kwargs)
        self.built = True

    def call(self, inputs):
        return inputs


def checked_variable_indices(model, variable_indices=None):
    """Positions in `model.weights` of the variables a posterior draws, checked.

    Args:
        model: A built Keras model.
        variable_indices: Positions in `model.weights`, or None for the
            trainable variables.

    Raises:
        ValueError: For an empty list or a position outside `model.weights`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> checked_variable_indices(model)
    [0, 1]
    """
    weights = model.weights
    if variable_indices is None:
        trainable = {id(v) for v in model.trainable_variables}
        return [i for i, v in enumerate(weights) if id(v) in trainable]
    indices = [int(i) for i in variable_indices]
    if not indices or any(i < 0 or i >= len(weights) for i in indices):
        raise ValueError(
            f"`variable_indices` must be positions in model.weights (0..{len(weights) - 1}); "
            f"received {variable_indices!r}."
        )
    return indices


def check_mixable(posteriors, argument="posteriors"):
    """Checks that `posteriors` can form one mixture over the first one's model.

    A mixture draws only the variables each component draws and takes every
    other weight from the first component's model. So the components must
    draw the same positions of models of one architecture, and the floating
    weights they do not draw (a body under a last-layer posterior, batch-norm
    statistics) must be equal in every component's model.

    Raises:
        ValueError: Naming `argument`, when they cannot.
    """
    first = posteriors[0]
    weights = first.model.weights
    drawn = set(first.variable_indices)
    for other in posteriors[1:]:
        others = other.model.weights
        if other.variable_indices != first.variable_indices or [tuple(v.shape) for v in others] != [
            tuple(v.shape) for v in weights
        ]:
            raise ValueError(
                f"`{argument}` must draw the same variables of models of one architecture; "
                f"{other.name!r} differs from {first.name!r}."
            )
        for i, (mine, theirs) in enumerate(zip(weights, others, strict=True)):
            if i in drawn or other.model is first.model:
                continue
            if not keras.backend.is_float_dtype(mine.dtype):
                continue  # seed-generator state, step counters
            if not np.array_equal(
                keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
            ):
                raise ValueError(
                    f"`{argument}` must agree on the weights they do not draw, which the mixture "
                    f"takes from the first model; {mine.path!r} differs between {first.name!r} "
                    f"and {other.name!r} (a last-layer posterior of separate runs, or batch-norm "
                    "statistics). Draw every weight that differs (subset='all', batch-norm "
                    "statistics refreshed per sample)."
                )


def flat_values(variables):
    """The values of `variables` concatenated into one float32 vector.

    Example:

    >>> import keras
    >>> flat_values([keras.Variable([[1.0, 2.0]]), keras.Variable([3.0])]).numpy()
    array([1., 2., 3.], dtype=float32)
    """
    return tf.concat([tf.reshape(tf.cast(v.value, "float32"), [-1]) for v in variables], 0)


def split_flat(flat, variables):
    """`flat` of shape `(..., n)` split into one tensor per variable, `(..., *shape)`.

    The inverse of `flat_values` along the last axis, batch axes kept.

    Example:

    >>> import keras, tensorflow as tf
    >>> parts = split_flat(tf.ones((5, 3)), [keras.Variable([[1.0, 2.0]]), keras.Variable([3.0])])
    >>> [tuple(p.shape) for p in parts]
    [(5, 1, 2), (5, 1)]
    """
    sizes = [int(np.prod(v.shape)) for v in variables]
    pieces = tf.split(flat, sizes, axis=-1)
    batch = tf.shape(flat)[:-1]
    return [
        tf.cast(tf.reshape(p, tf.concat([batch, list(v.shape)], 0)), v.dtype)
        for p, v in zip(pieces, variables, strict=True)
    ]


class WeightPosterior(keras.Model):
    """Base of the weight posteriors of `tfp_deepgen.inference`.

    A subclass defines `random_variables` (the variables of `model` it draws,
    any others keep their values) and `weight_samples(num_samples, seed)`,
    and adds its own arguments to `get_config`.

    Args:
        model: A built Keras model whose last layer is a `tfp_deepgen.heads`
            head. Its weights are read at each call, never changed.
        seed: Integer seed of the weight draws, or None for a random one.
        **kwargs: `name` and the other arguments of `keras.Model`.
    """

    def __init__(self, model, seed=None, **kwargs):
        # Under a mixed policy Keras would autocast the posterior's own state
        # (moments, factors, samples) to float16 inside `call`; it stays
        # float32, and the wrapped model computes in its own policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model) or not model.built:
            raise ValueError(
                "`model` must be a built Keras model ending in a tfp_deepgen head (start "
                f"it with keras.Input(shape)); received {model!r}."
            )
        final_head(model)  # raises, naming `model`, if it does not end in a head
        self.seed = _validation.seed("seed", seed)
        self.draws = PosteriorDraws(seed=self.seed, name="draws")
        self.model = model  # last: `final_head(posterior)` follows the last layer
        self.built = True

    @property
    def head(self):
        """The head of the wrapped model."""
        return final_head(self.model)

    @property
    def inputs(self):
        """The wrapped model's inputs (what exports and predictives check `x` against)."""
        return self.model.inputs

    @property
    def random_variables(self):
        """The variables of `model` the posterior draws; subclasses define it."""
        raise NotImplementedError

    def weight_samples(self, num_samples, seed):
        """`num_samples` draws of `random_variables`: one `(S, *shape)` tensor each.

        Args:
            num_samples: S, a Python integer.
            seed: An int32 tensor of shape `[2]` for `tf.random.stateless_*`.
        """
        raise NotImplementedError

    def sampled_outputs(self, inputs, num_samples):
        """Head parameters under `num_samples` weight draws, shape `(S, batch, P)`."""
        draws = self.weight_samples(num_samples, self.draws.next_seed())
        drawn = {id(v): d for v, d in zip(self.random_variables, draws, strict=True)}
        trainable = self.model.trainable_variables
        non_trainable = self.model.non_trainable_variables
        order = [v for v in trainable + non_trainable if id(v) in drawn]

        def one_draw(values):
            values = dict(zip([id(v) for v in order], values, strict=True))
            outputs, _ = self.model.stateless_call(
                [values.get(id(v), v.value) for v in trainable],
                [values.get(id(v), v.value) for v in non_trainable],
                inputs,
                training=False,
            )
            return outputs

        # Variables not drawn are loop-invariant: pfor computes what depends
        # only on them (the features under a last-layer posterior) once.
        return tf.vectorized_map(
            one_draw, [drawn[id(v)] for v in order], fallback_to_while_loop=True
        )

    def call(self, inputs, training=False):
        state = self.draws.inference_state
        copies = state.monte_carlo_samples
        if copies is None:
            if not self.draws.sampling_enabled:
                return self.model(inputs, training=False)
            return self.sampled_outputs(inputs, 1)[0]
        batch = tf.nest.map_structure(lambda t: _original(t, state.stacked_batch, copies), inputs)
        outputs = self.sampled_outputs(batch, copies)
        return tf.reshape(outputs, tf.concat([[-1], tf.shape(outputs)[2:]], 0))

    def compute_output_spec(self, inputs, training=False):
        return self.model.compute_output_spec(inputs)

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        # Keras's deserialization empties the nested configs it is given.
        config = copy.deepcopy(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def _original(tensor, stacked_batch, copies):
    """The real batch that `tensor` holds `copies` stacked copies of."""
    if stacked_batch is not None:
        original = stacked_batch.original(tensor)
        if original is not None:
            return original
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[copies, shape[0] // copies], shape[1:]], 0))[0]
