"""Calibration and scoring metrics for a classifier's predicted probabilities.

Each score exists as a plain function (numpy arrays or tensors in, a float32
scalar tensor out; eager, `tf.function` and XLA alike) and as a streaming
`keras.metrics.Metric` whose state after several batches gives exactly the
plain function on the concatenated data.

`probs` of shape `(..., K)` with `K >= 2` are class probabilities scored
against integer labels `y_true` of shape `(...)` or `(..., 1)` in `[0, K)`;
`probs` of shape `(..., 1)` are binary `P(y = 1)` against labels in `{0, 1}`.
Optional `sample_weight` broadcasts against the labels (aligned from the left,
as in Keras) and turns every mean into a weighted mean.

Example:

>>> import numpy as np
>>> from tfp_deepgen import metrics
>>> probs = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
>>> labels = np.array([0, 1])
>>> round(float(metrics.negative_log_likelihood(labels, probs)), 4)  # 1.5 log 2
1.0397
>>> round(float(metrics.expected_calibration_error(labels, probs)), 4)
0.0
"""

import keras
import tensorflow as tf

from tfp_deepgen._validation import positive_int

__all__ = [
    "BrierScore",
    "CategoricalNegativeLogLikelihood",
    "ExpectedCalibrationError",
    "brier_score",
    "expected_calibration_error",
    "interval_coverage",
    "negative_log_likelihood",
]

#: Probabilities are clipped below at this value before the log, so a zero
#: probability costs `-log(1e-12) ~= 27.63` nats instead of inf.
EPSILON = 1e-12


def _prepare(y_true, probs, sample_weight=None):
    """Flattened `(labels, probs, weights)`: shapes `(N,)`, `(N, K)`, `(N,)`."""
    probs = tf.cast(tf.convert_to_tensor(probs), tf.float32)
    labels = tf.convert_to_tensor(y_true)
    rank = probs.shape.rank
    if rank is None or rank == 0 or not probs.shape[-1]:
        raise ValueError(
            "`probs` must have a known, non-zero last (class) dimension. "
            f"Received: probs.shape={tuple(probs.shape)}"
        )
    if labels.shape.rank == rank and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if not labels.shape.is_compatible_with(probs.shape[:-1]):
        raise ValueError(
            f"`y_true` of shape {tuple(tf.convert_to_tensor(y_true).shape)} does not match "
            f"`probs` of shape {tuple(probs.shape)}: labels must have shape "
            f"{tuple(probs.shape[:-1])} or {tuple(probs.shape[:-1]) + (1,)} (class ids; "
            "for one-hot rows pass their argmax)."
        )
    if labels.dtype.is_floating:
        labels = tf.round(labels)
    if sample_weight is None:
        weights = tf.ones_like(labels, tf.float32)
    else:
        weights = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
        if weights.shape.rank > labels.shape.rank and weights.shape[-1] == 1:
            weights = tf.squeeze(weights, -1)
        while weights.shape.rank < labels.shape.rank:
            weights = tf.expand_dims(weights, -1)
        weights = tf.broadcast_to(weights, tf.shape(labels))
    num_classes = probs.shape[-1]
    return (
        tf.reshape(tf.cast(labels, tf.int32), [-1]),
        tf.reshape(probs, [-1, num_classes]),
        tf.reshape(weights, [-1]),
    )


def _confidence_correct(labels, probs):
    """Per-example confidence of the predicted class and 1.0 where it is right."""
    if probs.shape[-1] == 1:
        p = probs[:, 0]
        confidence = tf.maximum(p, 1.0 - p)
        predicted = tf.cast(p >= 0.5, tf.int32)
    else:
        confidence = tf.reduce_max(probs, -1)
        predicted = tf.argmax(probs, -1, output_type=tf.int32)
    return confidence, tf.cast(tf.equal(predicted, labels), tf.float32)


def _nll(labels, probs):
    if probs.shape[-1] == 1:
        y = tf.cast(labels, tf.float32)
        p_true = y * probs[:, 0] + (1.0 - y) * (1.0 - probs[:, 0])
    else:
        p_true = tf.reduce_sum(probs * tf.one_hot(labels, probs.shape[-1]), -1)
    return -tf.math.log(tf.maximum(p_true, EPSILON))


def _brier(labels, probs):
    if probs.shape[-1] == 1:
        return tf.square(probs[:, 0] - tf.cast(labels, tf.float32))
    return tf.reduce_sum(tf.square(probs - tf.one_hot(labels, probs.shape[-1])), -1)


def _bin_sums(labels, probs, weights, num_bins):
    """Per-bin `(weight, weighted confidence, weighted correct)` sums."""
    confidence, correct = _confidence_correct(labels, probs)
    bins = tf.cast(tf.floor(confidence * num_bins), tf.int32)
    bins = tf.clip_by_value(bins, 0, num_bins - 1)
    sums = tf.stack([weights, weights * confidence, weights * correct], -1)
    sums = tf.math.unsorted_segment_sum(sums, bins, num_bins)
    return sums[:, 0], sums[:, 1], sums[:, 2]


def _ece(counts, confidence_sums, correct_sums):
    # sum_b (n_b / n) |acc_b - conf_b| == sum_b |correct_b - confidence_b| / n
    gaps = tf.reduce_sum(tf.abs(correct_sums - confidence_sums))
    return tf.math.divide_no_nan(gaps, tf.reduce_sum(counts))


def expected_calibration_error(y_true, probs, num_bins=15, sample_weight=None):
    """Expected calibration error over equal-width confidence bins.

    The confidence of an example is its largest class probability
    (`max(p, 1 - p)` in the binary case, predicting 1 when `p >= 0.5`). Bins
    split `[0, 1]` into `num_bins` intervals `[b / num_bins, (b + 1) / num_bins)`,
    the last one closed. The score is `sum_b (n_b / n) |accuracy_b - confidence_b|`
    with `n_b` the (weighted) number of examples in bin `b`; empty bins add 0.

    Args:
        y_true: Integer labels, shape `(...)` or `(..., 1)`.
        probs: Probabilities, shape `(..., K)`; `K = 1` means binary `P(y = 1)`.
        num_bins: Positive number of bins.
        sample_weight: Optional weights, broadcast against the labels.

    Returns:
        A float32 scalar tensor in `[0, 1]`.

    >>> import numpy as np
    >>> probs = np.array([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1]])
    >>> round(float(expected_calibration_error([0, 1, 0], probs, num_bins=2)), 4)
    0.1333
    """
    num_bins = positive_int("num_bins", num_bins)
    return _ece(*_bin_sums(*_prepare(y_true, probs, sample_weight), num_bins))


def _weighted_mean(values, weights):
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def negative_log_likelihood(y_true, probs, sample_weight=None):
    """Mean negative log-probability of the true labels, in nats.

    Probabilities are clipped below at `EPSILON = 1e-12`, so a zero probability
    on the true class gives `-log(1e-12) ~= 27.63`, never inf or NaN.

    Args:
        y_true: Integer labels, shape `(...)` or `(..., 1)`.
        probs: Probabilities, shape `(..., K)`; `K = 1` means binary `P(y = 1)`.
        sample_weight: Optional weights, broadcast against the labels.

    Returns:
        A float32 scalar tensor.

    >>> round(float(negative_log_likelihood([1, 0], [[0.0], [0.5]])), 3)  # (27.631 + log 2) / 2
    14.162
    """
    labels, probs, weights = _prepare(y_true, probs, sample_weight)
    return _weighted_mean(_nll(labels, probs), weights)


def brier_score(y_true, probs, sample_weight=None):
    """Mean Brier score (squared error of the probabilities).

    For `K >= 2` classes each example scores `sum_k (p_k - onehot(y)_k)^2`, in
    `[0, 2]`. For binary `probs` of shape `(..., 1)` it scores the standard
    `(p - y)^2`, in `[0, 1]`: half the two-class sum. This is scikit-learn's
    `brier_score_loss` convention (`scale_by_half="auto"`).

    Args:
        y_true: Integer labels, shape `(...)` or `(..., 1)`.
        probs: Probabilities, shape `(..., K)`; `K = 1` means binary `P(y = 1)`.
        sample_weight: Optional weights, broadcast against the labels.

    Returns:
        A float32 scalar tensor.

    >>> round(float(brier_score([0, 1], [[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])), 4)
    0.1875
    >>> round(float(brier_score([1], [[0.8]])), 4)
    0.04
    """
    labels, probs, weights = _prepare(y_true, probs, sample_weight)
    return _weighted_mean(_brier(labels, probs), weights)


def interval_coverage(y_true, lower, upper):
    """Fraction of the entries of `y_true` with `lower <= y_true <= upper`.

    `lower` and `upper` broadcast against `y_true`; every entry counts once.

    >>> float(interval_coverage([0.0, 1.0, 2.0, 3.0], 0.5, [1.0, 1.0, 2.5, 2.5]))
    0.5
    """
    y = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
    lower = tf.cast(tf.convert_to_tensor(lower), tf.float32)
    upper = tf.cast(tf.convert_to_tensor(upper), tf.float32)
    inside = tf.logical_and(lower <= y, y <= upper)
    return tf.reduce_mean(tf.cast(inside, tf.float32))


class _StreamingMean(keras.metrics.Metric):
    """Weighted mean of a per-example score, accumulated over batches."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), "zeros", name="total")
        self.count = self.add_variable((), "zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, probs, weights = _prepare(y_true, y_pred, sample_weight)
        values = self._score(labels, probs)
        self.total.assign_add(tf.cast(tf.reduce_sum(values * weights), self.total.dtype))
        self.count.assign_add(tf.cast(tf.reduce_sum(weights), self.count.dtype))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class CategoricalNegativeLogLikelihood(_StreamingMean):
    """Streaming `negative_log_likelihood` of predicted probabilities.

    >>> m = CategoricalNegativeLogLikelihood()
    >>> m.update_state([0], [[0.5, 0.5]]); m.update_state([1], [[0.75, 0.25]])
    >>> round(float(m.result()), 4)  # (log 2 + log 4) / 2
    1.0397
    """

    def __init__(self, name="nll", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def _score(self, labels, probs):
        return _nll(labels, probs)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class BrierScore(_StreamingMean):
    """Streaming `brier_score` (binary `(p - y)^2`, multiclass sum over classes).

    >>> m = BrierScore()
    >>> m.update_state([1, 0], [[0.8], [0.2]])
    >>> round(float(m.result()), 4)
    0.04
    """

    def __init__(self, name="brier", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def _score(self, labels, probs):
        return _brier(labels, probs)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Streaming `expected_calibration_error`.

    Accumulates per-bin weights, confidence sums and correct-prediction sums,
    so the result over many batches is the ECE of all of them together.

    Args:
        num_bins: Positive number of equal-width confidence bins.
        name: Metric name.
        dtype: Dtype of the state and result.

    >>> m = ExpectedCalibrationError(num_bins=2)
    >>> m.update_state([0, 1], [[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    >>> m.update_state([0], [[0.8, 0.1, 0.1]])
    >>> round(float(m.result()), 4)
    0.1333
    """

    def __init__(self, num_bins=15, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_bins = positive_int("num_bins", num_bins)
        shape = (self.num_bins,)
        self.counts = self.add_variable(shape, "zeros", name="counts")
        self.confidence_sums = self.add_variable(shape, "zeros", name="confidence_sums")
        self.correct_sums = self.add_variable(shape, "zeros", name="correct_sums")

    def update_state(self, y_true, y_pred, sample_weight=None):
        sums = _bin_sums(*_prepare(y_true, y_pred, sample_weight), self.num_bins)
        for variable, value in zip(
            (self.counts, self.confidence_sums, self.correct_sums), sums, strict=True
        ):
            variable.assign_add(tf.cast(value, variable.dtype))

    def result(self):
        return _ece(self.counts, self.confidence_sums, self.correct_sums)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
