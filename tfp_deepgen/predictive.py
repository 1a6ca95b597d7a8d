"""Monte-Carlo predictive distribution of a model that ends in a head.

`p(y | x) ~= 1/S sum_s p(y | NN(x; W_s))` with `W_s` independent posterior
samples, computed in one graph: the batch is stacked `S` times and run once
under `tfp_deepgen.layers.monte_carlo_mode`.

`MonteCarloPredictive(model, ...)` is the predictive as an object: call it
inside your own `tf.function`, or use its `predict` method, which compiles
and keeps one function per set of outputs. The function `predict` does the
same with a predictive it keeps per model and settings (held weakly: it goes
away with the model).

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal()
>>> model = keras.Sequential(
...     [keras.Input((3,)), tdg.layers.DenseFlipout(head.input_size, seed=0), head]
... )
>>> out = tdg.predictive.predict(model, np.ones((5, 3), "float32"), num_samples=8)
>>> out["mean"].shape, out["quantiles"].shape, out["samples"].shape
((5, 1), (5, 3, 1), (5, 8, 1))
"""

import random as python_random
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import final_head
from tfp_deepgen.layers.base import StackedBatch, inference_state, int32_seed
from tfp_deepgen.layers.scale_snapshot import PosteriorScaleSnapshot

__all__ = ["MonteCarloPredictive", "predict"]

DEFAULT_QUANTILES = (0.05, 0.5, 0.95)
# Bracket width / 2^28: far below Monte-Carlo error, and below 1 for counts
# (so `floor(hi)` is the integer quantile) whenever the first bracket is under 2^28.
_BISECTION_STEPS = 28
_BRACKET_DOUBLINGS = 12
_CLASSIFIER_OUTPUTS = (
    "probabilities",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "samples",
)
_CONTINUOUS_OUTPUTS = (
    "mean",
    "stddev",
    "variance",
    "aleatoric_variance",
    "epistemic_variance",
    "quantiles",
    "samples",
)


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
        model: A Keras model whose last layer is a `tfp_deepgen.heads` head.
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
            inside each call only where the weights changed. Saves the
            softplus of every scale per call (most of the cost of a small
            batch) for twice the memory of the scale variables.

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
        self.is_classifier = _is_classifier(self.head)
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
        x = _checked_inputs(self.model, x, tf.convert_to_tensor)
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
        return _output_names(self.head)

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
            summaries = _classifier_summaries(self.head, params, outputs, seed)
        else:
            summaries = _continuous_summaries(self.head, params, self.quantiles, outputs, seed)
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
        x = _checked_inputs(self.model, x, np.asarray)  # builds an unbuilt model
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
        return _checked_outputs(outputs, self.head)

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
    head = final_head(model)
    num_samples = _validation.positive_int("num_samples", num_samples)
    quantiles = tuple(_validation.open_unit_float("quantiles", q) for q in quantiles)
    if not quantiles:
        raise ValueError("`quantiles` must hold at least one level in (0, 1).")
    target_mean = _per_output("target_mean", target_mean, head, positive=False)
    target_stddev = _per_output("target_stddev", target_stddev, head, positive=True)
    if _is_classifier(head) and _rescales(target_mean, target_stddev):
        raise ValueError(
            "`target_mean` and `target_stddev` rescale continuous outputs; a "
            f"{type(head).__name__} head predicts labels. Leave them at 0 and 1."
        )
    return head, num_samples, quantiles, target_mean, target_stddev


def _is_array(value):
    return isinstance(value, (np.ndarray, np.generic)) or keras.ops.is_tensor(value)


def _expected_inputs(model):
    """The structure of `keras.Input`s `model` takes, or None while unknown."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            return None
        inputs = model.inputs
        return inputs[0] if inputs and len(inputs) == 1 else None
    try:  # a functional model, or a subclassed one called symbolically
        return model.input
    except (AttributeError, ValueError):
        return None


def _converted(x, convert, single):
    """`x` with `convert` applied to each input: the whole of `x` when `single`."""
    if single:
        if isinstance(x, (list, tuple)) and len(x) == 1 and _is_array(x[0]):
            x = x[0]  # model([x]) on a one-input model
        return convert(x)
    if isinstance(x, dict):
        return {key: convert(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(convert(value) for value in x)
    return convert(x)


def _checked_inputs(model, x, convert):
    """`x` as the structure of inputs `model` takes, each input converted.

    Builds an unbuilt `model` from the shapes of `x` (symbolically: no weight
    is drawn, no seed moves), as `model(x)` would, and checks every input
    against the model's: rank, every known dimension after the batch, and
    one batch size across inputs. Only static shapes are compared, so inside
    a traced function this costs nothing per call.

    Args:
        model: A Keras model.
        x: An array or tensor (or nested lists of numbers), or a dict, list
            or tuple of them (one level) for a model with several inputs.
        convert: Maps one input to an array or tensor (`np.asarray`,
            `tf.convert_to_tensor`).

    Returns:
        `x` with every input converted; one array for a one-input model.

    Raises:
        ValueError: Naming the input, the shape received and the shape
            expected.
    """
    expected = _expected_inputs(model)
    if expected is None:  # unbuilt or subclassed: guess from `x` as Keras does
        single = not (
            isinstance(x, dict)
            or (isinstance(x, (list, tuple)) and x and all(_is_array(v) for v in x))
        )
    else:
        single = not tf.nest.is_nested(expected)
    x = _converted(x, convert, single)
    named = [(_path_name(path), leaf) for path, leaf in _flatten_with_paths(x)]
    shapes = {name: _static_shape(leaf) for name, leaf in named}
    for name, shape in shapes.items():
        if shape == ():
            raise ValueError(
                f"`{name}` must be a batch, with the examples along its first axis; "
                "received a scalar."
            )
    sizes = {name: shape[0] for name, shape in shapes.items() if shape and shape[0] is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "Every input in `x` must hold the same number of examples (its first axis); "
            f"received batch sizes {sizes}."
        )
    if expected is None:
        if not model.built:
            model(tf.nest.map_structure(_symbolic_batch, x))
        return x
    try:
        tf.nest.assert_same_structure(expected, x, check_types=False)
    except (ValueError, TypeError):
        return x  # e.g. a list for a dict of inputs: left to Keras to reconcile
    for (name, _), spec in zip(named, tf.nest.flatten(expected), strict=True):
        _check_shape(name, shapes[name], tuple(spec.shape))
    return x


def _static_shape(leaf):
    """`leaf`'s static shape as a tuple, or None for an unknown rank."""
    shape = leaf.shape
    if isinstance(shape, tf.TensorShape):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def _check_shape(name, shape, expected):
    if shape is None:
        return
    fits = len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape[1:], expected[1:], strict=True)
    )
    if not fits:
        raise ValueError(
            f"`{name}` must have shape {_shape_text(('batch', *expected[1:]))}; "
            f"received shape {_shape_text(shape)}."
        )


def _shape_text(shape):
    """`(4, 10)`, `(4,)`, `(batch, 63)`: a shape as Python writes a tuple."""
    dims = ["batch" if i == 0 and d is None else str(d) for i, d in enumerate(shape)]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _flatten_with_paths(x):
    """`[(key or index, input)]` in `tf.nest.flatten`'s order (dict keys sorted)."""
    if isinstance(x, dict):
        return [((key,), x[key]) for key in sorted(x)]
    if isinstance(x, (list, tuple)):
        return [((i,), value) for i, value in enumerate(x)]
    return [((), x)]


def _path_name(path):
    return "x" + "".join(f"[{key!r}]" for key in path)


def _symbolic_batch(leaf):
    dtype = keras.backend.standardize_dtype(leaf.dtype)
    return keras.KerasTensor((None, *leaf.shape[1:]), dtype=dtype)


def _rescales(target_mean, target_stddev):
    """Whether summaries move from standardised units to the targets' own."""
    return set(target_mean) != {0.0} or set(target_stddev) != {1.0}


def _is_classifier(head):
    return head.kind == "classifier"


def _output_names(head):
    if _is_classifier(head):
        return _CLASSIFIER_OUTPUTS
    return _CONTINUOUS_OUTPUTS


def _checked_outputs(outputs, head):
    """`outputs` as a tuple of known names (default: all of them)."""
    names = _output_names(head)
    outputs = tuple(outputs or names)
    for name in outputs:
        _validation.one_of("outputs", name, names)
    return outputs


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
    outputs = _checked_outputs(outputs, head)
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


def _batch_first(t):
    return tf.experimental.numpy.moveaxis(t, 0, 1)


def _classifier_summaries(head, params, outputs, seed):
    # Averages over samples in float64: in float32 the rounding of the means
    # alone gives a deterministic model a mutual information of ~1e-5.
    per_sample = tf.cast(head.probabilities(params), "float64")  # (S, B, K) or (S, B, d)
    probabilities = tf.reduce_mean(per_sample, 0)
    predictive_entropy = head.label_entropy(probabilities)
    expected_entropy = tf.reduce_mean(head.label_entropy(per_sample), 0)
    summaries = {
        "probabilities": probabilities,
        "predictive_entropy": predictive_entropy,
        "expected_entropy": expected_entropy,
        # Jensen's gap; float rounding can make it a hair negative.
        "mutual_information": tf.maximum(predictive_entropy - expected_entropy, 0.0),
    }
    summaries = {name: tf.cast(value, "float32") for name, value in summaries.items()}
    if "samples" in outputs:
        summaries["samples"] = _batch_first(head.distribution(params).sample(seed=seed))
    return summaries


def _continuous_summaries(head, params, quantiles, outputs, seed):
    distribution = head.distribution(params)
    means = distribution.mean()  # (S, B, d)
    variances = distribution.variance()
    # Moments over samples in float64 (see `_classifier_summaries`).
    means64, variances64 = tf.cast(means, "float64"), tf.cast(variances, "float64")
    mean = tf.reduce_mean(means64, 0)
    aleatoric = tf.reduce_mean(variances64, 0)
    epistemic = tf.reduce_mean(tf.square(means64 - mean), 0)
    variance = aleatoric + epistemic
    summaries = {
        "mean": mean,
        "stddev": tf.sqrt(variance),
        "variance": variance,
        "aleatoric_variance": aleatoric,
        "epistemic_variance": epistemic,
    }
    summaries = {name: tf.cast(value, "float32") for name, value in summaries.items()}
    if "quantiles" in outputs:
        levels = tf.constant(quantiles, "float32")
        counts = head.kind == "count"
        q = _mixture_quantiles(head.marginal(params), levels, means, variances, counts)
        if counts:
            q = tf.floor(q)
        summaries["quantiles"] = _batch_first(q)
    if "samples" in outputs:
        summaries["samples"] = _batch_first(distribution.sample(seed=seed))
    return summaries


def _mixture_quantiles(marginal, levels, means, variances, counts=False):
    """Quantiles of the equal-weight mixture over samples of each output.

    Bisection on the mixture CDF `F(y) = 1/S sum_s F_s(y)`, vectorised over
    levels, examples and outputs; returns shape `(Q, B, d)`. The invariant is
    `F(lo) < q <= F(hi)`, so for count heads `floor(hi)` is the quantile.
    """
    shape = tf.concat([tf.shape(levels), tf.shape(means)[1:]], 0)
    q = tf.reshape(levels, [-1, 1, 1])

    def cdf(y):  # y: (Q, B, d) -> (Q, B, d)
        if counts:  # TFP's count CDFs interpolate between integers
            y = tf.floor(y)
        return tf.reduce_mean(marginal.cdf(y[:, None]), 1)

    # Heavy tails (StudentT with df <= 2) have no finite moments; the
    # doublings below then find the bracket from a unit start.
    means = tf.where(tf.math.is_finite(means), means, 0.0)
    stddevs = tf.sqrt(variances)
    stddevs = tf.where(tf.math.is_finite(stddevs), stddevs, 1.0)
    spread = tf.reduce_max(stddevs, 0) + 1e-6
    lo = tf.broadcast_to(tf.reduce_min(means, 0) - 4.0 * spread, shape)
    hi = tf.broadcast_to(tf.reduce_max(means, 0) + 4.0 * spread, shape)

    def widen(i, lo, hi, cdf_lo, cdf_hi):  # heavy tails: widen until bracketed
        step = 4.0 * spread * tf.pow(2.0, tf.cast(i, "float32"))
        lo = tf.where(cdf_lo >= q, lo - step, lo)
        hi = tf.where(cdf_hi < q, hi + step, hi)
        return i + 1, lo, hi, cdf(lo), cdf(hi)

    def unbracketed(i, lo, hi, cdf_lo, cdf_hi):
        missing = tf.reduce_any(cdf_lo >= q) | tf.reduce_any(cdf_hi < q)
        return (i < _BRACKET_DOUBLINGS) & missing

    # A loop, not unrolled: XLA compiles each unrolled CDF evaluation anew.
    doublings, lo, hi, _, _ = tf.while_loop(unbracketed, widen, (0, lo, hi, cdf(lo), cdf(hi)))

    def bisect(_, lo, hi):
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < q
        return _ + 1, tf.where(below, mid, lo), tf.where(below, hi, mid)

    # Each doubling at most doubled the bracket, so one more step per doubling
    # ends every search within 2^-28 of the first bracket's width.
    steps = _BISECTION_STEPS + doublings
    _, lo, hi = tf.while_loop(lambda i, *_: i < steps, bisect, (0, lo, hi))
    return hi
