"""Any TFP distribution as a head, from a registered make-distribution function.

The counterpart of `tfp.layers.DistributionLambda(make_distribution_fn)`:
the function maps the head's parameters to a TFP distribution. It must be
registered with `keras.saving.register_keras_serializable`, so that the head
saves to `.keras` files and loads with `safe_mode=True` (a lambda cannot).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen.heads.base import DistributionHead

tfd = tfp.distributions

__all__ = ["DistributionLambda"]

KINDS = ("continuous", "count", "classifier")


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DistributionLambda(DistributionHead):
    """A head whose distribution is `make_distribution(params)`.

    `make_distribution` takes the head's float32 parameters, shape
    `(..., params_size)`, and returns a TFP distribution with batch shape
    `(...)` and event shape `(event_size,)`; per-output distributions are
    wrapped in `tfd.Independent(..., 1)`, as tfp.layers' own heads do. A
    classifier over class ids (`kind="classifier", integer_labels=True`)
    returns a scalar event instead (`tfd.Categorical`).

    The loss, the metrics, the Monte-Carlo predictive and export then work as
    for the built-in heads: means, variances and class probabilities come from
    the distribution's own `mean()`, `variance()` and `probs_parameter()`, and
    predictive quantiles from the `cdf` of its per-output distribution, so a
    distribution without them supports the summaries it has.

    Args:
        make_distribution: A function `params -> tfd.Distribution`, registered
            with `keras.saving.register_keras_serializable` (or the config
            `keras.saving.serialize_keras_object` writes for it).
        params_size: Size of the last axis of the parameters, the output size
            of the layer before the head.
        event_size: Number of outputs per example (1 for class ids).
        kind: `"continuous"` (real labels), `"count"` (non-negative integer
            labels, integer quantiles) or `"classifier"`.
        integer_labels: For a classifier: whether a label is one class id per
            example (else `event_size` binary outputs, or one-hot rows with
            `one_hot_labels`).
        one_hot_labels: For a classifier: whether a label is a one-hot row.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Raises:
        ValueError: When `make_distribution` is not a registered function, or
            an argument is out of range.

    Example:

    >>> import keras, numpy as np, tensorflow as tf, tfp_deepgen as tdg
    >>> import tensorflow_probability as tfp
    >>> @keras.saving.register_keras_serializable(package="docs")
    ... def laplace(params):
    ...     loc, scale = tf.split(params, 2, axis=-1)
    ...     return tfp.distributions.Independent(
    ...         tfp.distributions.Laplace(loc, 1e-3 + tf.nn.softplus(scale)), 1)
    >>> head = tdg.heads.DistributionLambda(laplace, params_size=2)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
    >>> model.compile("adam", loss=head.loss)
    >>> head.distribution(np.zeros((4, 2), "float32")).event_shape
    TensorShape([1])
    """

    def __init__(
        self,
        make_distribution,
        params_size,
        event_size=1,
        kind="continuous",
        integer_labels=False,
        one_hot_labels=False,
        **kwargs,
    ):
        super().__init__(event_size, **kwargs)
        self.make_distribution = registered_function(make_distribution)
        self.num_params = _validation.positive_int("params_size", params_size)
        self.kind = _validation.one_of("kind", kind, KINDS)
        self.integer_labels = _validation.boolean("integer_labels", integer_labels)
        self.one_hot_labels = _validation.boolean("one_hot_labels", one_hot_labels)
        if (self.integer_labels or self.one_hot_labels) and self.kind != "classifier":
            raise ValueError(
                "`integer_labels` and `one_hot_labels` describe class labels: pass them with "
                f"kind='classifier'. Received: kind={kind!r}"
            )
        if self.integer_labels and self.one_hot_labels:
            raise ValueError("Pass at most one of `integer_labels` and `one_hot_labels`.")
        if self.integer_labels and self.event_size != 1:
            raise ValueError(
                "A head with one class id per example has `event_size=1`. "
                f"Received: event_size={event_size}"
            )
        self.support = {
            "continuous": "finite real numbers",
            "count": "non-negative integers",
            "classifier": "class labels",
        }[self.kind]
        if self.integer_labels:
            self.support = "non-negative integer class ids"

    @property
    def _param_count(self):
        return self.num_params

    def _distribution(self, params):
        distribution = self.make_distribution(params)
        if not isinstance(distribution, tfd.Distribution):
            raise TypeError(
                f"`make_distribution` ({self.make_distribution.__name__}) must return a "
                f"tfp.distributions.Distribution; it returned {type(distribution).__name__}."
            )
        expected = () if self.integer_labels else (self.event_size,)
        if tuple(distribution.event_shape) != expected:
            raise ValueError(
                f"`make_distribution` ({self.make_distribution.__name__}) returned a "
                f"distribution with event shape {tuple(distribution.event_shape)}; head "
                f"{self.name!r} expects {expected} (from its event_size). Wrap per-output "
                "distributions in `tfd.Independent(distribution, reinterpreted_batch_ndims=1)`."
            )
        return distribution

    def marginal(self, params):
        """The per-output distribution, batch shape `(..., event_size)`.

        The distribution inside `make_distribution`'s `tfd.Independent`; the
        predictive's quantiles take its `cdf`.

        Raises:
            NotImplementedError: When the distribution is not `Independent`
                over its outputs (e.g. a multivariate one).
        """
        distribution = self.distribution(params)
        if (
            isinstance(distribution, tfd.Independent)
            and tf.get_static_value(distribution.reinterpreted_batch_ndims) == 1
        ):
            return distribution.distribution
        raise NotImplementedError(
            f"Head {self.name!r}: `make_distribution` returned a "
            f"{type(distribution).__name__}, which is not `tfd.Independent` over the outputs, "
            "so it has no per-output marginal (predictive quantiles need one). Ask the "
            "predictive for other outputs, e.g. outputs=('mean', 'stddev')."
        )

    def _in_support(self, y):
        valid = tf.math.is_finite(y)
        if self.kind == "count" or self.integer_labels:
            valid = valid & (y >= 0) & tf.equal(y, tf.round(y))
        return valid

    def get_config(self):
        return {
            **super().get_config(),
            "make_distribution": keras.saving.serialize_keras_object(self.make_distribution),
            "params_size": self.num_params,
            "kind": self.kind,
            "integer_labels": self.integer_labels,
            "one_hot_labels": self.one_hot_labels,
        }


def registered_function(function):
    """`function` (or the function its config names), checked to be registered with Keras.

    Raises:
        ValueError: naming `make_distribution` when it is not callable or not
            registered, with how to register it.
    """
    if isinstance(function, dict):
        function = keras.saving.deserialize_keras_object(function)
    if not callable(function):
        raise ValueError(
            "`make_distribution` must be a function `params -> tfd.Distribution`. "
            f"Received: make_distribution={function!r}"
        )
    name = keras.saving.get_registered_name(function)
    if keras.saving.get_registered_object(name) is not function:
        raise ValueError(
            "`make_distribution` must be registered so the head can be saved and loaded: "
            "define it with `def` at module level and decorate it with "
            '`@keras.saving.register_keras_serializable(package="your_package")`. '
            f"Received the unregistered {getattr(function, '__qualname__', function)!r}."
        )
    return function
