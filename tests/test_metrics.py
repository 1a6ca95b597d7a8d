"""Calibration and scoring metrics against independent references.

Each plain function is checked against numpy / scikit-learn on random data and
against small hand-computed cases; each Keras metric must stream to exactly the
plain function on the concatenated batches, also inside a compiled XLA model.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import brier_score_loss, log_loss

from tfp_deepgen import metrics

FUNCTIONS = {
    "ece": metrics.expected_calibration_error,
    "nll": metrics.negative_log_likelihood,
    "brier": metrics.brier_score,
}
CLASSES = {
    "ece": metrics.ExpectedCalibrationError,
    "nll": metrics.CategoricalNegativeLogLikelihood,
    "brier": metrics.BrierScore,
}


def _data(num_classes, n=200, seed=0):
    """Random labels, probabilities (binary as `(n, 1)`) and positive weights."""
    rng = np.random.default_rng(seed)
    if num_classes == 1:
        probs = rng.uniform(size=(n, 1))
        labels = (rng.uniform(size=n) < probs[:, 0]).astype(np.int64)
    else:
        logits = 2.0 * rng.normal(size=(n, num_classes))
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        labels = rng.integers(0, num_classes, size=n)
    return labels, probs, rng.uniform(0.1, 2.0, size=n)


def _ece_reference(labels, probs, num_bins, weights=None):
    """Loop over bins `[lo, hi)`, the last one closed, as in Guo et al. (2017)."""
    weights = np.ones(len(labels)) if weights is None else weights
    if probs.shape[-1] == 1:
        p = probs[:, 0]
        confidence, predicted = np.maximum(p, 1 - p), (p >= 0.5).astype(int)
    else:
        confidence, predicted = probs.max(-1), probs.argmax(-1)
    correct = (predicted == labels).astype(float)
    ece = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        inside = (confidence >= lo) & ((confidence < hi) | (b == num_bins - 1))
        if inside.any():
            w = weights[inside]
            accuracy = np.average(correct[inside], weights=w)
            mean_confidence = np.average(confidence[inside], weights=w)
            ece += w.sum() / weights.sum() * abs(accuracy - mean_confidence)
    return ece


# --------------------------------------------------------------------------
# Plain functions against references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_bins", [1, 10, 15])
@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_ece_matches_loop_reference(num_classes, num_bins, weighted):
    labels, probs, weights = _data(num_classes)
    weights = weights if weighted else None
    got = metrics.expected_calibration_error(labels, probs, num_bins, sample_weight=weights)
    assert got.dtype == tf.float32 and got.shape == ()
    want = _ece_reference(labels, probs, num_bins, weights)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_nll_matches_sklearn_log_loss(num_classes, weighted):
    labels, probs, weights = _data(num_classes)
    weights = weights if weighted else None
    got = metrics.negative_log_likelihood(labels, probs, sample_weight=weights)
    classes = range(max(num_classes, 2))
    sk_probs = probs[:, 0] if num_classes == 1 else probs
    want = log_loss(labels, sk_probs, labels=list(classes), sample_weight=weights)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_brier_matches_sklearn(num_classes, weighted):
    labels, probs, weights = _data(num_classes)
    weights = weights if weighted else None
    got = metrics.brier_score(labels, probs, sample_weight=weights)
    if num_classes == 1:  # binary: the standard (p - y)^2
        want = brier_score_loss(labels, probs[:, 0], sample_weight=weights)
        np.testing.assert_allclose(
            float(got), np.average((probs[:, 0] - labels) ** 2, weights=weights), rtol=1e-5
        )
    else:  # sum over classes, unscaled
        classes = list(range(num_classes))
        want = brier_score_loss(
            labels, probs, labels=classes, scale_by_half=False, sample_weight=weights
        )
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_binary_brier_is_half_the_two_class_brier():
    labels, probs, _ = _data(1)
    two_class = np.concatenate([1 - probs, probs], -1)
    binary = float(metrics.brier_score(labels, probs))
    np.testing.assert_allclose(2 * binary, float(metrics.brier_score(labels, two_class)), 1e-5)


def test_interval_coverage_matches_numpy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(50, 3))
    lower, upper = rng.normal(size=(50, 3)) - 1.0, rng.normal(size=(50, 3)) + 1.0
    want = np.mean((lower <= y) & (y <= upper))
    got = metrics.interval_coverage(y, lower, upper)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # Broadcast bounds; endpoints count as covered.
    assert float(metrics.interval_coverage([[-1.0, 0.0, 1.0, 2.0]], -1.0, 1.0)) == 0.75


# --------------------------------------------------------------------------
# Exact small cases
# --------------------------------------------------------------------------


def test_perfectly_calibrated_bins_give_zero_ece():
    probs = [[0.25, 0.75]] * 4 + [[0.9, 0.1]] * 10
    labels = [1, 1, 1, 0] + [0] * 9 + [1]
    assert float(metrics.expected_calibration_error(labels, probs, num_bins=10)) < 1e-7
    # Binary form of the same predictions: P(y = 1) = 0.75 and 0.1.
    binary = [[0.75]] * 4 + [[0.1]] * 10
    assert float(metrics.expected_calibration_error(labels, binary, num_bins=10)) < 1e-7


def test_two_bin_ece_exact_value():
    # Bin [0, .5): confidence .4, accuracy 1/2 -> gap .1, fraction 2/5.
    # Bin [.5, 1]: confidence .8, accuracy 1 -> gap .2, fraction 3/5.
    probs = [[0.4, 0.3, 0.3]] * 2 + [[0.1, 0.8, 0.1]] * 3
    labels = [0, 2, 1, 1, 1]
    got = metrics.expected_calibration_error(labels, probs, num_bins=2)
    assert float(got) == pytest.approx(0.4 * 0.1 + 0.6 * 0.2, abs=1e-6)
    # An overconfident classifier that is always wrong: ECE is its confidence.
    assert float(metrics.expected_calibration_error([1, 1], [[0.9, 0.1]] * 2)) == pytest.approx(
        0.9, abs=1e-6
    )


def test_nll_and_brier_exact_values():
    probs = [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]
    assert float(metrics.negative_log_likelihood([0, 1], probs)) == pytest.approx(
        1.5 * math.log(2), rel=1e-6
    )
    assert float(metrics.brier_score([0, 1], probs)) == pytest.approx((0.375 + 0.875) / 2, rel=1e-6)
    assert float(metrics.brier_score([1, 0], [[0.8], [0.8]])) == pytest.approx(
        (0.04 + 0.64) / 2, rel=1e-6
    )


def test_zero_probability_gives_large_finite_nll():
    for labels, probs in [([1], [[1.0, 0.0]]), ([1], [[0.0]]), ([0], [[1.0]])]:
        got = float(metrics.negative_log_likelihood(labels, probs))
        assert got == pytest.approx(-math.log(1e-12), rel=1e-5)  # 27.63
    assert float(metrics.negative_log_likelihood([0], [[1.0, 0.0]])) == 0.0


def test_label_shapes_dtypes_and_leading_dims_agree():
    labels, probs, weights = _data(4, n=24)
    for name, fn in FUNCTIONS.items():
        want = float(fn(labels, probs, sample_weight=weights))
        variants = [
            (labels[:, None], probs, weights[:, None]),
            (labels.astype(np.float32), probs.astype(np.float32), weights),
            (labels.reshape(4, 6), probs.reshape(4, 6, 4), weights.reshape(4, 6)),
            (labels.reshape(4, 6, 1), probs.reshape(4, 6, 4), weights.reshape(4, 6)),
        ]
        for args in variants:
            assert float(fn(args[0], args[1], sample_weight=args[2])) == pytest.approx(
                want, rel=1e-5
            ), name


def test_functions_under_xla_match_eager():
    labels, probs, weights = _data(3, n=40)
    args = (tf.constant(labels), tf.constant(probs, tf.float32), tf.constant(weights))
    for name, fn in FUNCTIONS.items():
        compiled = tf.function(lambda y, p, w, fn=fn: fn(y, p, sample_weight=w), jit_compile=True)
        eager = float(fn(*args[:2], sample_weight=args[2]))
        np.testing.assert_allclose(float(compiled(*args)), eager, rtol=1e-5, err_msg=name)


# --------------------------------------------------------------------------
# Streaming Keras metrics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_streaming_equals_one_shot(name, num_classes, weighted):
    labels, probs, weights = _data(num_classes, n=90, seed=2)
    weights = weights if weighted else None
    metric = CLASSES[name]()
    batches = np.split(np.arange(90), [7, 40, 41, 80])
    for batch in batches:
        w = None if weights is None else weights[batch]
        metric.update_state(labels[batch], probs[batch], sample_weight=w)
    want = float(FUNCTIONS[name](labels, probs, sample_weight=weights))
    np.testing.assert_allclose(float(metric.result()), want, rtol=1e-5, atol=1e-7)
    if name == "ece" and not weighted:  # the data tell streaming from averaging batch ECEs
        per_batch = [metrics.expected_calibration_error(labels[b], probs[b]) for b in batches]
        assert abs(np.mean(per_batch) - want) > 1e-2
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize("num_classes", [1, 3])
def test_compiled_model_with_xla_matches_functions(num_classes):
    # The Dense initialisation draws from Keras's global stream: seed it, or the
    # weights (and whether the weights change ECE) depend on the xdist order.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    labels, _, weights = _data(num_classes, n=50, seed=4)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(num_classes, activation)])

    def instances(prefix):
        return [
            metrics.ExpectedCalibrationError(num_bins=5, name=prefix + "ece"),
            metrics.CategoricalNegativeLogLikelihood(name=prefix + "nll"),
            metrics.BrierScore(name=prefix + "brier"),
        ]

    model.compile(
        loss="binary_crossentropy" if num_classes == 1 else "sparse_categorical_crossentropy",
        metrics=instances(""),
        weighted_metrics=instances("weighted_"),  # Keras hands sample_weight only to these
        jit_compile=True,
    )
    probs = model.predict(x, batch_size=50, verbose=0)
    # 50 examples in batches of 16: the metrics stream over 4 batches, the last partial.
    logs = model.evaluate(
        x, labels, sample_weight=weights, batch_size=16, verbose=0, return_dict=True
    )
    for name in ("ece", "nll", "brier"):
        kwargs = {"num_bins": 5} if name == "ece" else {}
        for prefix, w in (("", None), ("weighted_", weights)):
            want = float(FUNCTIONS[name](labels, probs, sample_weight=w, **kwargs))
            got = logs[prefix + name]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=prefix + name)
        assert abs(logs[name] - logs["weighted_" + name]) > 1e-4, name


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_config_round_trip(name):
    kwargs = {"num_bins": 7} if name == "ece" else {}
    metric = CLASSES[name](name="custom", **kwargs)
    config = metric.get_config()
    assert config["name"] == "custom"
    if name == "ece":
        assert config["num_bins"] == 7
    for clone in (
        CLASSES[name].from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric)),
    ):
        assert type(clone) is CLASSES[name] and clone.get_config() == config
        labels, probs, _ = _data(3, n=30)
        metric.reset_state()
        metric.update_state(labels, probs)
        clone.update_state(labels, probs)
        assert float(clone.result()) == float(metric.result())


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True, "10", None])
def test_bad_num_bins_names_the_argument(num_bins):
    with pytest.raises(ValueError, match="`num_bins` must be a positive integer"):
        metrics.ExpectedCalibrationError(num_bins=num_bins)
    with pytest.raises(ValueError, match="`num_bins` must be a positive integer"):
        metrics.expected_calibration_error([0], [[0.5, 0.5]], num_bins=num_bins)


@pytest.mark.parametrize(
    "labels_shape, probs_shape",
    [((5,), (4, 3)), ((4, 2), (4, 3)), ((4, 3), (4, 3)), ((4,), (4, 2, 3))],
)
def test_shape_mismatch_reports_both_shapes(labels_shape, probs_shape):
    labels, probs = np.zeros(labels_shape, int), np.full(probs_shape, 1 / 3)
    message = rf"`y_true` of shape \({labels_shape[0]},.*`probs` of shape \({probs_shape[0]},"
    for name, fn in FUNCTIONS.items():
        with pytest.raises(ValueError, match=message) as info:
            fn(labels, probs)
        assert str(labels_shape) in str(info.value) and str(probs_shape) in str(info.value), name
        with pytest.raises(ValueError, match=message):
            CLASSES[name]().update_state(labels, probs)


def test_missing_class_dimension_is_rejected():
    with pytest.raises(ValueError, match="last .*dimension"):
        metrics.brier_score(1, 0.2)
    with pytest.raises(ValueError, match="last .*dimension"):
        metrics.negative_log_likelihood(np.zeros((2,)), np.zeros((2, 0)))
