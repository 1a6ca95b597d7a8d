"""Standard Keras metrics on a distribution head's predictions.

A model ending in a head outputs the head's *parameters* (for
`IndependentNormal(1)`: loc and raw scale, shape `(batch, 2)`), so a plain
`metrics=["root_mean_squared_error"]` compares labels with parameters and
fails on their shapes, or, worse, broadcasts into a wrong number.
`HeadMetric` wraps any Keras metric and feeds it what it expects instead:

- regression and count heads: the predictive mean, `head.mean(params)`
  (the loc of a Normal, `exp(log_rate)` of a Poisson, ...);
- classifier heads (`head.kind == "classifier"`): `head.probabilities(params)`.
  For `IndependentBernoulli`, `P(y = 1)` per output, so `"accuracy"` is
  binary accuracy at 0.5 and `"auc"` works as usual; for `Categorical` (and
  any head with `integer_labels`), the class probabilities, so `"accuracy"`
  is sparse categorical accuracy against the integer labels the head's loss
  takes; for `OneHotCategorical` (`one_hot_labels`), categorical accuracy
  against one-hot rows.

Labels go through the same shape conventions as the head's loss: `(batch,)`
or `(batch, event_size)` (class ids `(batch,)` or `(batch, 1)`).
"""

import keras
import tensorflow as tf

from tfp_deepgen import _validation

__all__ = ["HeadMetric", "for_head"]

#: Metric identifiers that Keras itself resolves by the data (`"accuracy"`
#: becomes binary, sparse categorical or categorical accuracy); here the head
#: decides.
_ACCURACY = ("accuracy", "acc")

#: What a head metric reads of its head; a duck-typed head must have them all.
_HEAD_MEMBERS = ("kind", "integer_labels", "align_labels", "mean", "probabilities")


def _accuracy(head, name):
    if head.kind != "classifier":
        raise ValueError(
            f"`metric`={name!r} needs a classifier head (Categorical or "
            f"IndependentBernoulli), but the head is {type(head).__name__}: its "
            "predictions are means, not classes. Use e.g. 'mean_absolute_error'."
        )
    if head.integer_labels:
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    if getattr(head, "one_hot_labels", False):
        return keras.metrics.CategoricalAccuracy(name=name)
    return keras.metrics.BinaryAccuracy(name=name)


def _resolve(head, metric):
    """`metric` (a name, config dict, `Metric` or function) as a `Metric`."""
    if isinstance(metric, str) and metric.lower() in _ACCURACY:
        return _accuracy(head, metric)
    if isinstance(metric, keras.metrics.Metric):
        resolved = metric
    elif isinstance(metric, (str, dict)) or callable(metric):
        try:
            resolved = keras.metrics.get(metric)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`metric` must name a Keras metric (e.g. 'mean_absolute_error', "
                "'root_mean_squared_error', 'accuracy') or be a keras.metrics.Metric "
                f"or a function fn(y_true, y_pred). Received: metric={metric!r} ({error})"
            ) from None
    else:
        resolved = None
    if isinstance(resolved, keras.metrics.Metric):
        if type(resolved) in (keras.metrics.Metric, keras.metrics.Mean, keras.metrics.Sum):
            raise ValueError(
                "`metric` must compare labels with predictions; "
                f"{type(resolved).__name__} averages one tensor. Received: metric={metric!r}"
            )
        return resolved
    if callable(resolved):
        name = metric if isinstance(metric, str) else getattr(resolved, "__name__", None)
        return keras.metrics.MeanMetricWrapper(resolved, name=name)
    raise ValueError(
        "`metric` must be a metric name, a keras.metrics.Metric or a function "
        f"fn(y_true, y_pred). Received: metric={metric!r}"
    )


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class HeadMetric(keras.metrics.Metric):
    """A Keras metric on a distribution head's predictions instead of its parameters.

    `y_pred` (the head's parameter tensor) becomes the head's predictive mean
    (`head.mean(params)`) or, for a classifier head (`head.kind ==
    "classifier"`: `Categorical`, `IndependentBernoulli`, or one's own), its
    probabilities (`head.probabilities(params)`); `y_true` takes the
    shapes the head's loss takes. The wrapped metric then runs unchanged, and
    its name is this metric's name, so logs read e.g. `"mean_absolute_error"`
    and `"val_mean_absolute_error"`. Everything is float32 (as the head),
    whatever the dtype policy; the metric trains under `jit_compile=True` and
    round-trips through `get_config` and a `.keras` file with `safe_mode=True`
    (string names are stored as given; metric objects by their config).

    Args:
        head: A `tfp_deepgen.heads` head; only its configuration is used, so
            the metric need not hold the model's own instance.
        metric: A Keras metric name (`"root_mean_squared_error"`, `"mae"`,
            `"auc"`, ...), a `keras.metrics.Metric` instance or a function
            `fn(y_true, y_pred)` returning per-example values. `"accuracy"`
            (or `"acc"`) is sparse categorical accuracy for a classifier
            whose labels are class ids (`head.integer_labels`, `Categorical`)
            and binary accuracy for one with 0/1 outputs
            (`IndependentBernoulli`); other heads reject it.
        name: Name in the logs; defaults to the string passed as `metric`,
            else to the wrapped metric's name.
        dtype: Dtype of this metric's result (the wrapped metric keeps its own).

    Attributes:
        wrapped: The wrapped `keras.metrics.Metric` (for `"accuracy"`, the
            accuracy the head chose).

    Raises:
        ValueError: If `head` is not a head or `metric` is not a metric.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentNormal(1)
    >>> rmse = tdg.metrics.HeadMetric(head, "root_mean_squared_error")
    >>> params = np.array([[1.0, 0.0], [3.0, 5.0]])  # locs 1 and 3, raw scales
    >>> rmse.update_state(np.array([2.0, 3.0]), params)
    >>> rmse.name, round(float(rmse.result()), 4)  # sqrt((1 + 0) / 2)
    ('root_mean_squared_error', 0.7071)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
    >>> model.compile("adam", head.loss, metrics=tdg.metrics.for_head(head, "mae", "mse"))
    >>> logs = model.evaluate(np.ones((4, 3)), np.zeros(4), verbose=0, return_dict=True)
    >>> sorted(logs)
    ['loss', 'mae', 'mse']
    """

    def __init__(self, head, metric, name=None, dtype=None):
        head = _validation.head("head", head, members=_HEAD_MEMBERS)
        if name is not None and not isinstance(name, str):
            raise ValueError(f"`name` must be a string or None. Received: name={name!r}")
        wrapped = _resolve(head, metric)
        name = name or (metric if isinstance(metric, str) else wrapped.name)
        super().__init__(name=name, dtype=dtype)
        # A string is stored as given: "accuracy" resolves by the head again.
        self._identifier = metric if isinstance(metric, str) else None
        self._head_config = keras.saving.serialize_keras_object(head)
        # Bound methods, not the head itself: `.keras` saving walks a metric's
        # attributes and would save (and expect back) the head's weights here.
        self._align_labels = head.align_labels
        # Classifiers' metrics see class probabilities; the others' the mean.
        self._predict = head.probabilities if head.kind == "classifier" else head.mean
        self.wrapped = wrapped
        if hasattr(wrapped, "_direction"):
            # Read by EarlyStopping / ModelCheckpoint in mode="auto".
            self._direction = wrapped._direction

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Updates the wrapped metric with the head's predictions for `y_pred`."""
        y_true, params = self._align_labels(y_true, y_pred)
        return self.wrapped.update_state(y_true, self._predict(params), sample_weight=sample_weight)

    def result(self):
        return tf.cast(self.wrapped.result(), self.dtype)

    def reset_state(self):
        self.wrapped.reset_state()

    def get_config(self):
        if self._identifier is not None:
            metric = self._identifier
        else:
            metric = keras.saving.serialize_keras_object(self.wrapped)
        return {
            "head": self._head_config,
            "metric": metric,
            "name": self.name,
            "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        if isinstance(config["metric"], dict):
            config["metric"] = keras.saving.deserialize_keras_object(config["metric"])
        return cls(**config)


def for_head(head, *metrics):
    """One `HeadMetric` per metric, for `model.compile(metrics=...)`.

    Args:
        head: A `tfp_deepgen.heads` head.
        *metrics: Metric names, `keras.metrics.Metric` instances or functions,
            as `HeadMetric` takes them.

    Returns:
        A list of `HeadMetric`s, in the order given.

    Example:

    >>> import tfp_deepgen as tdg
    >>> head = tdg.heads.Categorical(3)
    >>> metrics = tdg.metrics.for_head(head, "accuracy", "sparse_categorical_crossentropy")
    >>> [m.name for m in metrics]
    ['accuracy', 'sparse_categorical_crossentropy']
    """
    head = _validation.head("head", head, members=_HEAD_MEMBERS)
    if len(metrics) == 1 and isinstance(metrics[0], (list, tuple)):
        metrics = tuple(metrics[0])
    if not metrics:
        raise ValueError("`metrics` must name at least one metric. Received: metrics=()")
    return [HeadMetric(head, metric) for metric in metrics]
