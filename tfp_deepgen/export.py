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

import os
import re

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.layers.linear import PosteriorScaleSnapshot
from tfp_deepgen.predictive import DEFAULT_QUANTILES, MonteCarloPredictive

__all__ = ["export_saved_model", "signature_outputs"]

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
            archive.add_endpoint(name, function, input_signature=input_signature)
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
