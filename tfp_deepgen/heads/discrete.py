"""Heads for binary, categorical and count targets."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen.heads.base import DistributionHead, positive

tfd = tfp.distributions


def _is_integer(y):
    # inf equals its rounding: without the finiteness check an infinite count
    # passed the label check and made the loss NaN.
    return tf.math.is_finite(y) & tf.equal(y, tf.round(y))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class IndependentBernoulli(DistributionHead):
    """`y ~ Bernoulli(sigmoid(logit))` independently over `event_size` outputs.

    Parameters: one logit per output. Labels are in [0, 1]: 0/1, or soft
    labels, for which the loss is the binary cross-entropy.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentBernoulli()
    >>> float(head.loss(np.array([1.0]), np.array([[0.0]])))  # -log(1/2)
    0.6931...
    """

    kind = "classifier"
    support = "values in [0, 1]"

    @staticmethod
    def params_size(event_size=1):
        return event_size

    @property
    def _param_count(self):
        return self.event_size

    def _in_support(self, y):
        return (y >= 0) & (y <= 1)

    def marginal(self, params):
        # float32 samples: the predictive averages them with the other heads'.
        return tfd.Bernoulli(logits=params, dtype=tf.float32)

    def probabilities(self, params):
        """P(y = 1) per output."""
        return tf.sigmoid(tf.convert_to_tensor(params, "float32"))


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Categorical(DistributionHead):
    """`y ~ Categorical(softmax(logits))` over `num_classes` classes.

    Parameters: `num_classes` logits. Labels are class ids in
    `[0, num_classes)`, shape `(batch,)` or `(batch, 1)`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.Categorical(4)
    >>> float(head.loss(np.array([2]), np.zeros((1, 4))))  # -log(1/4)
    1.3862...
    """

    kind = "classifier"
    integer_labels = True

    def __init__(self, num_classes, **kwargs):
        kwargs.pop("event_size", None)
        super().__init__(1, **kwargs)
        self.num_classes = _validation.positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2. Received: num_classes={num_classes}")
        self.support = f"class ids 0, 1, ..., {self.num_classes - 1}"

    @staticmethod
    def params_size(num_classes):
        return num_classes

    @property
    def _param_count(self):
        return self.num_classes

    def _in_support(self, y):
        return (y >= 0) & (y < self.num_classes) & _is_integer(y)

    def _distribution(self, params):
        return tfd.Categorical(logits=params, dtype=tf.float32)

    def probabilities(self, params):
        """Class probabilities, shape `(..., num_classes)`."""
        return tf.nn.softmax(tf.convert_to_tensor(params, "float32"))

    def get_config(self):
        config = super().get_config()
        del config["event_size"]
        return {**config, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class OneHotCategorical(DistributionHead):
    """`y ~ OneHotCategorical(softmax(logits))`: `Categorical` with one-hot labels.

    Parameters: `num_classes` logits. Labels are one-hot rows, shape
    `(batch, num_classes)`: what `tfp.layers.OneHotCategorical` and
    `keras.losses.CategoricalCrossentropy` take. Samples are one-hot rows too.
    Probabilities, entropies, ECE and accuracy are those of `Categorical`
    with the same logits.

    Args:
        num_classes: Number of classes K >= 2.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.OneHotCategorical(4)
    >>> float(head.loss(np.array([[0.0, 0.0, 1.0, 0.0]]), np.zeros((1, 4))))  # -log(1/4)
    1.3862...
    """

    kind = "classifier"
    one_hot_labels = True

    def __init__(self, num_classes, **kwargs):
        kwargs.pop("event_size", None)
        num_classes = _validation.positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2. Received: num_classes={num_classes}")
        super().__init__(num_classes, **kwargs)
        self.num_classes = num_classes
        self.support = f"one-hot rows of length {num_classes} (one 1, the rest 0)"

    @staticmethod
    def params_size(num_classes):
        return num_classes

    @property
    def _param_count(self):
        return self.num_classes

    def _in_support(self, y):
        binary = (y == 0) | (y == 1)
        one_one = tf.equal(tf.reduce_sum(tf.where(binary, y, 0.0), -1, keepdims=True), 1.0)
        return binary & one_one

    def _distribution(self, params):
        return tfd.OneHotCategorical(logits=params, dtype=tf.float32)

    def probabilities(self, params):
        """Class probabilities, shape `(..., num_classes)`."""
        return tf.nn.softmax(tf.convert_to_tensor(params, "float32"))

    def get_config(self):
        config = super().get_config()
        del config["event_size"]
        return {**config, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Poisson(DistributionHead):
    """`y ~ Poisson(exp(log_rate))` independently over `event_size` outputs.

    Parameters: one log-rate per output. Labels are non-negative counts.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.Poisson()
    >>> float(head.loss(np.array([0.0]), np.array([[0.0]])))  # rate 1: -log(e^-1)
    1.0
    """

    kind = "count"
    support = "non-negative integer counts"

    @staticmethod
    def params_size(event_size=1):
        return event_size

    @property
    def _param_count(self):
        return self.event_size

    def _in_support(self, y):
        return (y >= 0) & _is_integer(y)

    def marginal(self, params):
        return tfd.Poisson(log_rate=params)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class NegativeBinomial(DistributionHead):
    """Over-dispersed counts: `y ~ NegativeBinomial(total_count, logits)`.

    Parameters: unconstrained total count (`softplus(.) + min_count`) then the
    logit of the success probability, per output; the mean is
    `total_count * exp(logits)`. Labels are non-negative counts.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.heads.NegativeBinomial.params_size(2)
    4
    """

    kind = "count"
    support = "non-negative integer counts"

    def __init__(self, event_size=1, min_count=1e-6, **kwargs):
        super().__init__(event_size, **kwargs)
        self.min_count = _validation.positive_float("min_count", min_count)

    @staticmethod
    def params_size(event_size=1):
        return 2 * event_size

    @property
    def _param_count(self):
        return 2 * self.event_size

    def _in_support(self, y):
        return (y >= 0) & _is_integer(y)

    def marginal(self, params):
        total_count, logits = self._split(params, [self.event_size] * 2)
        return tfd.NegativeBinomial(positive(total_count, self.min_count), logits=logits)

    def get_config(self):
        return {**super().get_config(), "min_count": self.min_count}
