"""The TF Serving export, checked the way TF Serving uses it.

A fresh Python process that cannot import tfp_deepgen or TFP loads the
export, answers a request body in TF Serving's REST "instances" format on
every signature, and the answers must equal the in-process predictive drawn
from the same seed state; `saved_model_cli` must show and run it.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import serve_signatures

import tfp_deepgen as tdg

NUM_SAMPLES = 16
QUANTILES = (0.1, 0.5, 0.9)

_SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tfp_deepgen", "tensorflow_probability"):
                raise ImportError("blocked in the serving check: " + name)

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensorflow as tf

    export_dir, request_path, order_path, out_path = sys.argv[1:5]
    loaded = tf.saved_model.load(export_dir)
    body = json.load(open(request_path))
    results = {}
    for i, name in enumerate(json.load(open(order_path))):
        signature = loaded.signatures[name]
        (key, spec), = signature.structured_input_signature[1].items()
        inputs = tf.constant(np.asarray(body["instances"], spec.dtype.as_numpy_dtype))
        for output, value in signature(**{key: inputs}).items():
            results[f"{i}:{name}/{output}"] = value.numpy()
    np.savez(out_path, **results)
    """
)


def _regression_model():
    head = tdg.heads.IndependentNormal(2)
    return keras.Sequential(
        [
            keras.Input((4,), name="features"),
            tdg.layers.DenseReparameterization(8, activation="relu", seed=1),
            tdg.layers.DenseFlipout(8, activation="relu", seed=2),
            tdg.layers.DenseLocalReparameterization(head.input_size, seed=3),
            head,
        ]
    )


def _classifier_model():
    head = tdg.heads.Categorical(3)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1), name="image"),
            tdg.layers.Conv2DReparameterization(2, 3, activation="relu", seed=4),
            keras.layers.Flatten(),
            tdg.layers.DenseFlipout(head.input_size, seed=5),
            head,
        ]
    )


MODELS = {"regression": _regression_model, "classifier": _classifier_model}


def _trained(make_model):
    # Posterior scales well above their 1e-3 start, so the samples differ visibly.
    model = make_model()
    rng = np.random.RandomState(0)
    model.set_weights([w + rng.uniform(0.2, 0.6, w.shape) for w in model.get_weights()])
    return model


def _in_process_answers(model, x, order, **units):
    """What the export must answer, drawn from the same seed states."""
    predictive = tdg.predictive.MonteCarloPredictive(model, NUM_SAMPLES, QUANTILES, seed=7, **units)
    signatures = tdg.export.signature_outputs(model)
    answers = {}
    for i, name in enumerate(order):
        run = tf.function(lambda batch, outputs=signatures[name]: predictive(batch, outputs))
        for output, value in run(tf.constant(x)).items():
            answers[f"{i}:{name}/{output}"] = value.numpy()
    return answers


def _serve(export_dir, x, order, tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": x.tolist()}))
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(order))
    out = tmp_path / "served.npz"
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, export_dir, request, order_path, out],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("kind", MODELS)
def test_every_signature_serves_the_in_process_predictive(kind, tmp_path):
    model = _trained(MODELS[kind])
    x = np.random.RandomState(1).randn(3, *model.inputs[0].shape[1:]).astype("float32")
    # The regression model serves in the units of targets it saw standardised.
    units = (
        {"target_mean": (10.0, -5.0), "target_stddev": (2.0, 3.0)} if kind == "regression" else {}
    )
    export_dir = tdg.export.export_saved_model(
        model, tmp_path / kind, num_samples=NUM_SAMPLES, quantiles=QUANTILES, seed=7, **units
    )
    assert export_dir == os.path.join(tmp_path / kind, "1")
    signatures = tdg.export.signature_outputs(model)
    # Each signature twice: the second request must draw new samples.
    order = [name for name in signatures for _ in range(2)]
    served = _serve(export_dir, x, order, tmp_path)
    expected = _in_process_answers(model, x, order, **units)
    assert sorted(served) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(served[key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    # Successive requests draw new posterior samples.
    for i, name in enumerate(order[::2]):
        for output in signatures[name]:
            first, second = (
                served[f"{2 * i}:{name}/{output}"],
                served[f"{2 * i + 1}:{name}/{output}"],
            )
            assert first.shape[0] == 3
            assert not np.array_equal(first, second), f"{name}/{output} repeated itself"


def test_signature_shapes_and_dynamic_batch(tmp_path):
    model = _trained(_regression_model)
    export_dir = tdg.export.export_saved_model(
        model, tmp_path, num_samples=NUM_SAMPLES, quantiles=QUANTILES
    )
    loaded = tf.saved_model.load(export_dir)
    for batch in (1, 5):
        x = tf.ones((batch, 4))
        assert loaded.signatures["serving_default"](features=x)["mean"].shape == (batch, 2)
        assert loaded.signatures["predict_stddev"](features=x)["stddev"].shape == (batch, 2)
        samples = loaded.signatures["predict_samples"](features=x)["samples"]
        assert samples.shape == (batch, NUM_SAMPLES, 2)
        quantiles = loaded.signatures["predict_quantiles"](features=x)["quantiles"].numpy()
        assert quantiles.shape == (batch, len(QUANTILES), 2)
        assert np.all(np.diff(quantiles, axis=1) > 0)
        split = loaded.signatures["predict_uncertainty"](features=x)
        np.testing.assert_allclose(
            split["aleatoric_variance"] + split["epistemic_variance"], split["variance"], rtol=1e-6
        )
    a = loaded.signatures["serving_default"](features=tf.ones((2, 4)))["mean"]
    b = loaded.signatures["serving_default"](features=tf.ones((2, 4)))["mean"]
    assert not np.array_equal(a, b), "successive requests must draw new posterior samples"


def test_versions_follow_tf_serving_layout(tmp_path):
    model = _trained(_regression_model)
    first = tdg.export.export_saved_model(model, tmp_path, num_samples=2)
    second = tdg.export.export_saved_model(model, tmp_path, num_samples=2)
    assert (first, second) == (str(tmp_path / "1"), str(tmp_path / "2"))
    assert tdg.export.export_saved_model(model, tmp_path, num_samples=2, version=7).endswith("7")
    with pytest.raises(ValueError, match="`version` 2 already exists"):
        tdg.export.export_saved_model(model, tmp_path, num_samples=2, version=2)
    with pytest.raises(ValueError, match="`version`"):
        tdg.export.export_saved_model(model, tmp_path, num_samples=2, version=0)


def test_bad_models_are_refused(tmp_path):
    # A model without a head exports as point predictions (test_plain_outputs.py);
    # one with two outputs has no single predictive.
    inputs = keras.Input((3,))
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)]
    )
    with pytest.raises(ValueError, match="`model` must have one output"):
        tdg.export.export_saved_model(two_outputs, tmp_path)
    with pytest.raises(ValueError, match="`num_samples`"):
        tdg.export.export_saved_model(_regression_model(), tmp_path, num_samples=0)


def test_saved_model_cli_shows_and_runs_the_export(tmp_path):
    model = _trained(_regression_model)
    export_dir = tdg.export.export_saved_model(model, tmp_path / "model", num_samples=4)
    np.save(tmp_path / "x.npy", np.ones((2, 4), "float32"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", export_dir, "--all"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in tdg.export.signature_outputs(model):
        assert f"signature_def['{name}']" in shown.stdout
    ran = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            export_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            "predict_quantiles",
            "--inputs",
            f"features={tmp_path / 'x.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Result for output key quantiles" in ran.stdout


# --------------------------------------------------------------------------
# Bad requests get errors in the request's terms, from the graph alone
# --------------------------------------------------------------------------


def _refused(export_dir, requests, message, tmp_path):
    """The TensorFlow-only serving process refuses `requests` with `message`."""
    with pytest.raises(AssertionError, match=re.escape(message)):
        serve_signatures(export_dir, requests, tmp_path)


@pytest.mark.parametrize(
    "shape, shown", [((3, 10), "(3, 10)"), ((3,), "(3,)"), ((3, 4, 1), "(3, 4, 1)")]
)
def test_predictive_signatures_refuse_wrong_shapes_naming_them(shape, shown, tmp_path):
    export_dir = tdg.export.export_saved_model(_regression_model(), tmp_path / "m", num_samples=2)
    for name in ("serving_default", "predict_quantiles"):
        _refused(
            export_dir,
            {name: {"features": np.ones(shape, "float32")}},
            f"`features` must have shape (batch, 4); received shape {shown}.",
            tmp_path,
        )
    # The image classifier: every dimension after the batch is checked.
    export_dir = tdg.export.export_saved_model(_classifier_model(), tmp_path / "c", num_samples=2)
    _refused(
        export_dir,
        {"serving_default": {"image": np.ones((2, 6, 5, 1), "float32")}},
        "`image` must have shape (batch, 6, 6, 1); received shape (2, 6, 5, 1).",
        tmp_path,
    )


def _vae(data_dim):
    encoder_head = tdg.heads.IndependentNormal(2)
    encoder = keras.Sequential(
        [keras.Input((data_dim,)), keras.layers.Dense(encoder_head.input_size), encoder_head]
    )
    decoder_head = tdg.heads.IndependentBernoulli(data_dim)
    decoder = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(decoder_head.input_size), decoder_head]
    )
    return tdg.models.VAE(encoder, decoder, seed=0)


def test_vae_signatures_refuse_bad_counts_and_shapes(tmp_path):
    export_dir = tdg.export.export_saved_model(_vae(63), tmp_path / "vae", num_samples=2)
    served = serve_signatures(export_dir, {"generate": {"count": np.int32(0)}}, tmp_path)
    assert served["generate/samples"].shape == (0, 63)
    assert tdg.export.MAX_COUNT == 2**20
    for count in (-4, 2**20 + 1, 2**31 - 1):
        _refused(
            export_dir,
            {"generate": {"count": np.int32(count)}},
            f"`count` must be in [0, 1048576]; received {count}.",
            tmp_path,
        )
    _refused(
        export_dir,
        {"encode": {"x": np.ones((4, 10), "float32")}},
        "`x` must have shape (batch, 63); received shape (4, 10).",
        tmp_path,
    )
    _refused(
        export_dir,
        {"decode": {"z": np.ones((4,), "float32")}},
        "`z` must have shape (batch, 2); received shape (4,).",
        tmp_path,
    )
    # Examples of 4096 numbers: count * 4096 must stay within int32.
    export_dir = tdg.export.export_saved_model(_vae(4096), tmp_path / "big", num_samples=2)
    limit = (2**31 - 1) // 4096
    served = serve_signatures(export_dir, {"generate": {"count": np.int32(2)}}, tmp_path)
    assert served["generate/samples"].shape == (2, 4096)
    _refused(
        export_dir,
        {"generate": {"count": np.int32(limit + 1)}},
        f"`count` must be in [0, {limit}]; received {limit + 1}.",
        tmp_path,
    )


def _conditional_gan():
    z, y = keras.Input((2,)), keras.Input((2,))
    generator = keras.Model([z, y], keras.layers.Dense(1)(keras.layers.Concatenate()([z, y])))
    x, y = keras.Input((1,)), keras.Input((2,))
    discriminator = keras.Model([x, y], keras.layers.Dense(1)(keras.layers.Concatenate()([x, y])))
    return tdg.models.GAN(generator, discriminator, 2, num_classes=2, seed=0)


def test_gan_signatures_refuse_bad_counts_labels_and_batches(tmp_path):
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    discriminator = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    gan = tdg.models.GAN(generator, discriminator, 2, seed=0)
    export_dir = tdg.export.export_saved_model(gan, tmp_path / "gan")
    _refused(
        export_dir,
        {"generate": {"count": np.int32(-4)}},
        "`count` must be in [0, 1048576]; received -4.",
        tmp_path,
    )
    export_dir = tdg.export.export_saved_model(_conditional_gan(), tmp_path / "cgan")
    _refused(
        export_dir,
        {"generate": {"labels": np.array([0, 5, 1], "int32")}},
        "`labels` must be class ids in [0, 1]; received 5.",
        tmp_path,
    )
    _refused(
        export_dir,
        {
            "generate_from_z": {
                "z": np.ones((3, 2), "float32"),
                "labels": np.array([0, 1], "int32"),
            }
        },
        "`z` and `labels` must hold the same number of examples; received 3 and 2.",
        tmp_path,
    )
