"""`MonteCarloPredictive`, and the function `predict` that keeps one per model.

`MonteCarloPredictive(model, ...)` is the predictive as an object: call it
inside your own `tf.function`, or use its `predict` method, which compiles
and keeps one function per set of outputs. The function `predict` does the
same with a predictive it keeps per model and settings (held weakly: it goes
away with the model).

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.Categorical(3)
>>> model = keras.Sequential(
...     [keras.Input((4,)), tdg.layers.DenseFlipout(head.input_size, seed=0), head]
... )
>>> tdg.predictive.predict(model, np.ones((2, 4), "float32"), num_samples=4)["probabilities"].shape
(2, 3)
"""

import random as python_random
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import output_head
from tfp_deepgen.layers.base import StackedBatch, inference_state, int32_seed
from tfp_deepgen.layers.scale_snapshot import PosteriorScaleSnapshot
from tfp_deepgen.predictive.inputs import checked_inputs
from tfp_deepgen.predictive.summaries import (
    checked_outputs,
    classifier_summaries,
    continuous_summaries,
    output_names,
)

__all__ = ["DEFAULT_QUANTILES", "MonteCarloPredictive", "predict"]

DEFAULT_QUANTILES = (0.05, 0.5, 0.95)


class MonteCarloPredictive:
    """The Monte-Carlo predictive of `model` as a TF-traceable callable.

    Calling it on a batch returns a dict of tensors, batch dimension first.
    For classifier heads (`head.kind == "classifier"`: `Categorical`,
    `IndependentBernoulli`, or one's own): `probabilities`,
    `predictive_entropy` (H of the mean prediction),
    `expected_entropy` (aleatoric: mean of the per-sample entropies),
    `mutual_information` (epistemic, BALD: their difference) and `samples`
    (one label drawn per posterior sample). For the other heads: `mean`,
    `stddev` and `variance` of the predictive, its split into
    `aleatoric_variance` (E_s[Var(y | W_s)]) and `epistemic_variance`
    (Var_s[E(y | W_s)]), `quantiles` (shape `(batch, len(quantiles), ...)`)
    and `samples` (shape `(batch, num_samples, ...)`).

    Args:
        model: A Keras model with one output, ending in a
            `tfp_deepgen.heads` head. A model without one is read by
            `tdg.heads.output_head`: a softmax output as class probabilities,
            a sigmoid as binary ones, anything else as a point prediction
            (then the predictive variance is the outputs' spread over
            posterior samples, all epistemic; `aleatoric_variance` is 0).
        num_samples: Number of posterior samples S.
        quantiles: Levels in (0, 1) of the predictive quantiles.
        seed: Seed of the label draws in `samples` (the layers' weight draws
            use their own seeds).
        target_mean, target_stddev: For a model trained on standardised
            targets `(y - target_mean) / target_stddev`: report every summary
            in the units of `y` (means, quantiles and samples mapped back;
            stddevs times `target_stddev`, variances times its square). A
            number, or one per output (length `event_size`). Continuous
            heads only.
        cache_scales: Keep the posterior scales of the model's variational
            layers in a `tfp_deepgen.layers.PosteriorScaleSnapshot`, refreshed
            inside each call only where the weights changed, for twice the
            memory of the scale variables. Since the scales are stored as
            logs (one `exp` each), the change check costs more than it saves
            on the benchmarked MLP (`benchmarks/RESULTS.md`); it pays only
            for layers whose scale transform is dearer.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.Categorical(3)
    >>> model = keras.Sequential(
    ...     [keras.Input((4,)), tdg.layers.DenseFlipout(head.input_size, seed=0), head]
    ... )
    >>> predictive = tdg.predictive.MonteCarloPredictive(model, num_samples=16, seed=0)
    >>> out = predictive.predict(np.ones((10, 4), "float32"), outputs=["probabilities"])
    >>> out["probabilities"].shape
    (10, 3)
    """

    def __init__(
        self,
        model,
        num_samples=32,
        quantiles=DEFAULT_QUANTILES,
        seed=None,
        target_mean=0.0,
        target_stddev=1.0,
        cache_scales=False,
    ):
        settings = _settings(model, num_samples, quantiles, target_mean, target_stddev)
        self._model = model
        self.head, self.num_samples, self.quantiles, self.target_mean, self.target_stddev = settings
        self.is_classifier = self.head.kind == "classifier"
        self.seed_generator = keras.random.SeedGenerator(_validation.seed("seed", seed))
        _validation.boolean("cache_scales", cache_scales)
        self.scale_cache = None
        if cache_scales:
            if not model.built:
                raise ValueError(
                    "`cache_scales=True` copies the posterior scales now, so `model` must be "
                    "built first: start it with keras.Input(shape), or call it once on a "
                    "batch, or leave cache_scales=False."
                )
            self.scale_cache = PosteriorScaleSnapshot(model, track_changes=True)
        self._rescales = _rescales(self.target_mean, self.target_stddev)
        # Of `predict`: {(outputs, jit_compile): tf.function}, and a snapshot
        # of the posterior scales refreshed once per call (with its refresh).
        self._functions = {}
        self._snapshot = None

    @property
    def model(self):
        """The Keras model whose predictive this is."""
        return self._model

    def parameter_samples(self, x):
        """Head parameters under S posterior samples, shape `(S, batch, P)`.

        Args:
            x: A batch of inputs: what `model(x)` takes (a tensor, or a dict,
                list or tuple of them for a model with several inputs).

        Raises:
            ValueError: When `x` does not fit the model's inputs; the message
                names the shape passed and the shape expected.
        """
        x = checked_inputs(self.model, x, tf.convert_to_tensor)
        stacked = StackedBatch(x, self.num_samples)
        state = {"monte_carlo_samples": self.num_samples, "stacked_batch": stacked}
        if self.scale_cache is not None:
            self.scale_cache.refresh_if_stale()
            state["posterior_scales"] = self.scale_cache
        with inference_state(self.model, **state):
            params = self.model(stacked.copies, training=False)
        return tf.reshape(params, [self.num_samples, -1, self.head.output_size])

    @property
    def output_names(self):
        """The keys `__call__` returns, in order."""
        return output_names(self.head)

    def __call__(self, x, outputs=None):
        """Summaries of the predictive at `x`.

        Args:
            x: A batch of inputs, as `model(x)` takes them. An unbuilt model
                is built from it.
            outputs: Names of the summaries to compute (default: all of
                `output_names`); the others are not computed.
        """
        outputs = self._checked_outputs(outputs)
        params = self.parameter_samples(x)
        seed = None
        if "samples" in outputs:
            seed = int32_seed(self.seed_generator.next())
        if self.is_classifier:
            summaries = classifier_summaries(self.head, params, outputs, seed)
        else:
            summaries = continuous_summaries(self.head, params, self.quantiles, outputs, seed)
            summaries = self._in_target_units(summaries)
        return {name: summaries[name] for name in outputs}

    def predict(self, x, batch_size=256, outputs=None, jit_compile=False):
        """Summaries of the predictive on `x`, as numpy arrays (batch first).

        Runs `x` in batches through a compiled `__call__`: one `tf.function`
        per `outputs` and `jit_compile`, traced once for any number of
        examples and reused by later calls. The posterior scales are computed
        once per call into a `tdg.layers.PosteriorScaleSnapshot` (the memory of
        the scale variables), so weights changed between calls are seen.

        Args:
            x: Inputs, as `model(x)` takes them: an array or tensor, or a
                dict, list or tuple of them for a model with several inputs.
                An unbuilt model is built from them.
            batch_size: Examples per compiled call.
            outputs: Names of the summaries to compute (default: all of
                `output_names`).
            jit_compile: Whether to compile with XLA (one compilation per
                batch size).

        Returns:
            A dict of numpy arrays; see the class docstring for the keys.
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        jit_compile = _validation.boolean("jit_compile", jit_compile)
        outputs = self._checked_outputs(outputs)
        x = checked_inputs(self.model, x, np.asarray)  # builds an unbuilt model
        num_examples = tf.nest.flatten(x)[0].shape[0]
        # The weights cannot change during the call: their scales are computed
        # once here instead of once per batch.
        scales = self._refreshed_snapshot()
        with scales.active():
            run = self._compiled(outputs, jit_compile, x)  # traced reading the snapshot
            chunks = [
                run(tf.nest.map_structure(lambda a, i=i: tf.constant(a[i : i + batch_size]), x))
                for i in range(0, max(num_examples, 1), batch_size)
            ]
        return {key: np.concatenate([c[key].numpy() for c in chunks]) for key in chunks[0]}

    def _compiled(self, outputs, jit_compile, x):
        """The concrete function of `__call__` for `outputs` on batches shaped like `x`'s.

        Traced for any batch size: a concrete function, called directly, is
        never retraced, and later calls with the same settings reuse it.
        """
        key = (outputs, jit_compile)
        if key not in self._functions:

            def summaries(batch):
                return self(batch, outputs)

            self._functions[key] = tf.function(summaries, jit_compile=jit_compile)
        spec = tf.nest.map_structure(
            lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), x
        )
        return self._functions[key].get_concrete_function(spec)

    def _refreshed_snapshot(self):
        """The snapshot of the posterior scales `predict` reads, up to date."""
        if self.scale_cache is not None:
            return self.scale_cache  # refreshed inside each call where stale
        if self._snapshot is None:
            snapshot = PosteriorScaleSnapshot(self.model)
            self._snapshot = snapshot, tf.function(snapshot.refresh).get_concrete_function()
        snapshot, refresh = self._snapshot
        refresh()
        return snapshot

    def _checked_outputs(self, outputs):
        return checked_outputs(outputs, self.head)

    def _in_target_units(self, summaries):
        if not self._rescales:
            return summaries
        shift = tf.constant(self.target_mean, "float32")
        factor = tf.constant(self.target_stddev, "float32")
        moved = {}
        for name, value in summaries.items():
            if name in ("mean", "quantiles", "samples"):
                moved[name] = shift + factor * value
            elif name == "stddev":
                moved[name] = factor * value
            else:  # variances
                moved[name] = tf.square(factor) * value
        return moved


def _settings(model, num_samples, quantiles, target_mean, target_stddev):
    """Validated `(head, num_samples, quantiles, target_mean, target_stddev)`."""
    head = output_head(model)
    num_samples = _validation.positive_int("num_samples", num_samples)
    quantiles = tuple(_validation.open_unit_float("quantiles", q) for q in quantiles)
    if not quantiles:
        raise ValueError("`quantiles` must hold at least one level in (0, 1).")
    target_mean = _per_output("target_mean", target_mean, head, positive=False)
    target_stddev = _per_output("target_stddev", target_stddev, head, positive=True)
    if head.kind == "classifier" and _rescales(target_mean, target_stddev):
        raise ValueError(
            "`target_mean` and `target_stddev` rescale continuous outputs; a "
            f"{type(head).__name__} head predicts labels. Leave them at 0 and 1."
        )
    return head, num_samples, quantiles, target_mean, target_stddev


def _rescales(target_mean, target_stddev):
    """Whether summaries move from standardised units to the targets' own."""
    return set(target_mean) != {0.0} or set(target_stddev) != {1.0}


def _initial_seed_state(seed):
    """The state `keras.random.SeedGenerator(seed)` starts in, without making one.

    Making a generator creates a variable, about 2 ms: most of a small `predict`.
    """
    seed = _validation.seed("seed", seed)
    if seed is None:
        seed = python_random.randint(1, int(1e9))  # Keras's default seed
    return np.array([seed, 0], "int64")


def predict(
    model,
    x,
    num_samples=32,
    quantiles=DEFAULT_QUANTILES,
    batch_size=256,
    seed=None,
    outputs=None,
    target_mean=0.0,
    target_stddev=1.0,
    jit_compile=False,
):
    """Monte-Carlo predictive of `model` on `x`, as numpy arrays.

    Args:
        model: A Keras model whose last layer is a `tfp_deepgen.heads` head.
        x: Inputs, as `model(x)` takes them: an array or tensor, or a dict,
            list or tuple of them for a model with several inputs. An
            unbuilt model is built from them.
        num_samples: Number of independent posterior samples S.
        quantiles: Levels of the predictive quantiles (continuous heads).
        batch_size: Examples per compiled call.
        seed: Seed of the label draws in `samples`.
        outputs: Names of the summaries to compute (default: all).
        target_mean, target_stddev: Report summaries in the units of targets
            the model saw standardised; see `MonteCarloPredictive`.
        jit_compile: Whether to compile the predictive with XLA (one
            compilation per batch size). Measured on 2 CPU cores, 784-400-400
            MLP, S = 32: 4.9 against 5.4 ms per call for one example, but
            slower for large batches (753 against 674 ms for 2048).

    Returns:
        A dict of numpy arrays; see `MonteCarloPredictive` for the keys.

    Raises:
        ValueError: For a bad argument, a model that does not end in a head,
            or inputs that do not fit the model (naming their shape and the
            shape expected).
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    jit_compile = _validation.boolean("jit_compile", jit_compile)
    head, num_samples, quantiles, target_mean, target_stddev = _settings(
        model, num_samples, quantiles, target_mean, target_stddev
    )
    outputs = checked_outputs(outputs, head)
    seed_state = _initial_seed_state(seed)
    # One predictive per model and settings, with its compiled functions,
    # reused across calls and reseeded for each.
    predictives = _PREDICTIVES.setdefault(model, {})
    key = (num_samples, quantiles, target_mean, target_stddev)
    if key not in predictives:
        predictives[key] = _WeaklyHeldPredictive(
            model, num_samples, quantiles, int(seed_state[0]), target_mean, target_stddev
        )
    predictive = predictives[key]
    predictive.seed_generator.state.assign(seed_state)
    return predictive.predict(x, batch_size, outputs, jit_compile)


class _WeaklyHeldPredictive(MonteCarloPredictive):
    """A `MonteCarloPredictive` holding its model weakly, for `_PREDICTIVES`.

    The cache is keyed weakly by the model; a value holding the model
    strongly would keep it, and itself, alive forever.
    """

    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        self._model = weakref.ref(model)

    @property
    def model(self):
        return self._model()


# `predict`'s predictives: {model: {settings: _WeaklyHeldPredictive}}.
_PREDICTIVES = weakref.WeakKeyDictionary()


def _per_output(name, value, head, positive):
    """A number or one per output, as a tuple of floats."""
    check = _validation.positive_float if positive else _validation.finite_float
    values = np.ravel(np.asarray(value, dtype=object)) if np.ndim(value) else [value]
    if np.ndim(value) > 1 or len(values) not in (1, head.event_size):
        raise ValueError(
            f"`{name}` must be a number or a sequence of {head.event_size} numbers (one "
            f"per output of the head); received {value!r}."
        )
    return tuple(check(name, v) for v in values)
