"""SavedModel export of a model's Monte-Carlo predictive for TF Serving.

The export holds only TensorFlow ops (TFP is pure Python over them), so it
loads with `tf.saved_model.load` or `tensorflow_model_server`, without
tfp_deepgen or TFP installed.

Example:

>>> import keras, tempfile, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal()
>>> model = keras.Sequential(
...     [keras.Input((3,)), tdg.layers.DenseFlipout(head.input_size), head]
... )
>>> path = tdg.export.export_saved_model(model, tempfile.mkdtemp(), num_samples=8)
>>> path.endswith("/1")
True
"""

import functools
import math
import os
import re

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.layers.scale_snapshot import PosteriorScaleSnapshot
from tfp_deepgen.predictive import DEFAULT_QUANTILES, MonteCarloPredictive

__all__ = ["MAX_COUNT", "export_saved_model", "signature_outputs"]

# The most examples one request may ask a `count` signature to generate. A
# model whose outputs hold more than (2**31 - 1) / MAX_COUNT numbers per
# example gets a lower cap, so that `count * numbers per example` never
# overflows the int32 shape arithmetic of TensorFlow's ops.
MAX_COUNT = 2**20
_INT32_MAX = 2**31 - 1

_CONTINUOUS_SIGNATURES = {
    "serving_default": ("mean",),
    "predict_stddev": ("stddev",),
    "predict_samples": ("samples",),
    "predict_quantiles": ("quantiles",),
    "predict_uncertainty": ("aleatoric_variance", "epistemic_variance", "variance"),
}
_CLASSIFIER_SIGNATURES = {
    "serving_default": ("probabilities",),
    "predict_samples": ("samples",),
    "predict_uncertainty": ("predictive_entropy", "expected_entropy", "mutual_information"),
}


def signature_outputs(model):
    """`{signature name: output names}` that `export_saved_model` writes for `model`."""
    if hasattr(model, "serving_endpoints"):
        return {name: outputs for name, (_, _, outputs) in model.serving_endpoints(1).items()}
    predictive = MonteCarloPredictive(model, num_samples=1)
    signatures = _CLASSIFIER_SIGNATURES if predictive.is_classifier else _CONTINUOUS_SIGNATURES
    return dict(signatures)


def export_saved_model(
    model,
    path,
    num_samples=32,
    quantiles=DEFAULT_QUANTILES,
    version=None,
    seed=None,
    target_mean=0.0,
    target_stddev=1.0,
):
    """Writes the Monte-Carlo predictive of `model` as a versioned SavedModel.

    TF Serving's layout: the SavedModel goes to `path/<version>/`. Every
    signature takes one input, named after the model's input, with a dynamic
    batch size, and draws `num_samples` fresh posterior samples per request.

    Continuous heads get `serving_default` (`mean`), `predict_stddev`,
    `predict_samples` (`samples`, shape `(batch, num_samples, ...)`),
    `predict_quantiles` (`quantiles`, shape `(batch, len(quantiles), ...)`)
    and `predict_uncertainty` (`aleatoric_variance`, `epistemic_variance`,
    `variance`). Classifier heads (`Categorical`, `IndependentBernoulli`) get
    `serving_default` (`probabilities`), `predict_samples` and
    `predict_uncertainty` (`predictive_entropy`, `expected_entropy`,
    `mutual_information`).

    Generative models (`tdg.models`) define their own signatures instead,
    e.g. a VAE's `encode` (also `serving_default`), `decode`, `generate`,
    `reconstruct` and `log_likelihood`; see their `serving_endpoints`. For
    them `num_samples` is the number of importance samples of
    `log_likelihood` and the predictive options below do not apply.

    Every signature checks its inputs inside the graph, so that TF Serving
    answers a bad request with an error in the request's terms: an input of
    the wrong rank or size gets "`x` must have shape (batch, 63); received
    shape (4, 10)."; a `count` outside `[0, cap]` (`cap` is `MAX_COUNT`, or
    lower for large examples: see `MAX_COUNT`) gets "`count` must be in
    [0, cap]; received -4."; integer `labels` outside the model's classes
    and inputs of different batch sizes are refused likewise.

    Args:
        model: A built Keras model whose last layer is a `tfp_deepgen.heads`
            head, or a built `tdg.models` model.
        path: The model's base directory (TF Serving's `base_path`).
        num_samples: Posterior samples per request.
        quantiles: Levels of `predict_quantiles`.
        version: Integer version; default one above the highest existing one.
        seed: Seed of the label draws of `predict_samples`.
        target_mean, target_stddev: Serve summaries in the units of targets
            the model was trained on standardised (see
            `tfp_deepgen.predictive.MonteCarloPredictive`). For inputs, put a
            `keras.layers.Normalization` layer first in the model.

    Returns:
        The directory written, `path/<version>`.
    """
    path = os.fspath(path)
    if version is None:
        existing = os.listdir(path) if os.path.isdir(path) else []
        version = 1 + max((int(v) for v in existing if re.fullmatch(r"\d+", v)), default=0)
    version = _validation.positive_int("version", version)
    export_dir = os.path.join(path, str(version))
    if os.path.exists(export_dir):
        raise ValueError(
            f"`version` {version} already exists at {export_dir}; TF Serving never "
            "reloads a version in place. Pass a new version or version=None."
        )

    archive = keras.export.ExportArchive()
    if hasattr(model, "serving_endpoints"):
        _check_predictive_options_unused(quantiles, seed, target_mean, target_stddev)
        endpoints = model.serving_endpoints(num_samples)  # builds the model if needed
        archive.track(model)
    else:
        archive.track(model)
        predictive = MonteCarloPredictive(
            model, num_samples, quantiles, seed, target_mean, target_stddev
        )
        # The label-sampling seed is state too: each request draws new samples.
        archive.track(_SeedHolder(predictive.seed_generator))
        signatures = _CLASSIFIER_SIGNATURES if predictive.is_classifier else _CONTINUOUS_SIGNATURES
        spec = _input_spec(model)
        endpoints = {
            name: (_endpoint(predictive, outputs), [spec], outputs)
            for name, outputs in signatures.items()
        }
    # A SavedModel's weights never change: compute the posterior scales once.
    snapshot = PosteriorScaleSnapshot(model, name="posterior_scales")
    archive.track(snapshot)
    with snapshot.active():
        for name, (function, input_signature, _) in endpoints.items():
            checked = _checking_inputs(function, input_signature, model)
            archive.add_endpoint(name, checked, input_signature=input_signature)
        # Inside the context: the archive may trace the endpoints only here.
        archive.write_out(export_dir, verbose=False)
    return export_dir


def _check_predictive_options_unused(quantiles, seed, target_mean, target_stddev):
    given = {
        "quantiles": quantiles != DEFAULT_QUANTILES,
        "seed": seed is not None,
        "target_mean": target_mean != 0.0,
        "target_stddev": target_stddev != 1.0,
    }
    for name, was_given in given.items():
        if was_given:
            raise ValueError(
                f"`{name}` configures the Monte-Carlo predictive of a model ending in "
                "a head; a generative model (tdg.models) defines its own signatures "
                f"and takes only `num_samples`. Leave `{name}` at its default."
            )


def _checking_inputs(function, input_signature, model):
    """`function`, first checking its inputs against `input_signature` in-graph.

    The checks are graph ops (`tf.debugging.Assert` on the runtime shapes and
    values), so they hold in the SavedModel with no Python behind it, as TF
    Serving runs it. A shape is compared as text ("(4, 10)" against
    "(\\d+, 63)") built from the runtime `tf.shape`: `tf.rank` or `tf.size`
    of it would be folded to the signature's static rank when traced, and a
    request of the wrong rank would pass.
    """
    specs = list(input_signature)
    cap = _count_cap(function, specs) if any(_is_count(s) for s in specs) else None
    num_classes = getattr(model, "num_classes", None)

    @functools.wraps(function)
    def checked(*args):
        checks = []
        for spec, value in zip(specs, args, strict=True):
            if spec.shape.rank:
                checks.append(_shape_check(spec, value))
            elif _is_count(spec):
                checks.append(_range_check(spec.name, value, 0, cap))
            if spec.name == "labels" and spec.dtype.is_integer and num_classes:
                checks.append(_range_check("labels", value, 0, num_classes - 1, "class ids"))
        batched = [(s.name, v) for s, v in zip(specs, args, strict=True) if s.shape.rank]
        if len(batched) > 1:
            with tf.control_dependencies(checks):  # shapes first: the ranks are right
                checks.append(_same_batch_check(batched))
        with tf.control_dependencies(checks):
            args = [tf.identity(value) for value in args]
        return function(*args)

    return checked


def _is_count(spec):
    return spec.shape.rank == 0 and spec.dtype.is_integer


def _count_cap(function, specs):
    """`MAX_COUNT`, or less where `count` times an output's size per example overflows int32."""
    outputs = tf.function(function).get_concrete_function(*specs).structured_outputs
    per_example = 1
    for output in tf.nest.flatten(outputs):
        dims = output.shape.as_list()[1:] if output.shape.rank else []
        if all(d is not None for d in dims):
            per_example = max(per_example, math.prod(dims))
    return min(MAX_COUNT, _INT32_MAX // per_example)


def _runtime_shape_text(shape):
    """A runtime shape as Python writes a tuple: `(4, 10)`, `(4,)`, `()`."""
    joined = tf.strings.reduce_join(tf.strings.as_string(shape), separator=", ")
    comma = tf.where(tf.strings.regex_full_match(joined, r"\d+"), ",", "")
    return tf.strings.join(["(", joined, comma, ")"])


def _shape_check(spec, value):
    dims = spec.shape.as_list()
    pattern = ", ".join(r"\d+" if d is None else str(d) for d in dims)
    wanted = ", ".join(["batch"] + ["None" if d is None else str(d) for d in dims[1:]])
    if len(dims) == 1:
        pattern, wanted = pattern + ",", wanted + ","
    shown = _runtime_shape_text(tf.shape(value))
    message = tf.strings.join(
        [f"`{spec.name}` must have shape ({wanted}); received shape ", shown, "."]
    )
    return tf.debugging.Assert(tf.strings.regex_full_match(shown, rf"\({pattern}\)"), [message])


def _range_check(name, value, low, high, what=None):
    inside = tf.reduce_all((value >= low) & (value <= high))
    allowed = f"{what} in [{low}, {high}]" if what else f"in [{low}, {high}]"
    if value.shape.rank:  # report the first value outside
        outside = tf.boolean_mask(value, (value < low) | (value > high))
        shown = tf.strings.as_string(tf.concat([outside, [0]], 0)[0])
    else:
        shown = tf.strings.as_string(value)
    message = tf.strings.join([f"`{name}` must be {allowed}; received ", shown, "."])
    return tf.debugging.Assert(inside, [message])


def _same_batch_check(batched):
    sizes = [tf.shape(value)[0] for _, value in batched]
    names = " and ".join(f"`{name}`" for name, _ in batched)
    shown = tf.strings.reduce_join(tf.strings.as_string(tf.stack(sizes)), separator=" and ")
    message = tf.strings.join(
        [f"{names} must hold the same number of examples; received ", shown, "."]
    )
    return tf.debugging.Assert(tf.reduce_all(tf.equal(sizes, sizes[0])), [message])


def _endpoint(predictive, outputs):
    def serve(inputs):
        return predictive(inputs, outputs)

    return serve


def _input_spec(model):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "`model` must be a built Keras model with exactly one input (a "
            "Sequential or functional model); got "
            f"{0 if not inputs else len(inputs)} inputs."
        )
    tensor = inputs[0]
    name = re.sub(r"[^A-Za-z0-9_]", "_", tensor.name.split(":")[0]) or "inputs"
    return tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=name)


class _SeedHolder(keras.layers.Layer):
    """Lets the export archive track a bare `SeedGenerator`."""

    def __init__(self, seed_generator):
        super().__init__(name="seed_holder")
        self.seed_generator = seed_generator
        self.built = True
