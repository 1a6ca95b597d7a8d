"""Heads that read a plain model's output: probabilities or a point prediction.

A model that ends in `Dense(k, activation="softmax")`, a sigmoid, or no
activation at all has no head, yet its Monte-Carlo predictive (over MC
dropout masks, variational weights or a `tdg.inference` posterior) is still
useful. `output_head(model)` returns the head the predictive then reads the
output with:

- a softmax output is class probabilities: `CategoricalProbabilities`, the
  classifier summaries (averaged probabilities, entropies, mutual
  information);
- a sigmoid output is `P(y = 1)` per output: `BernoulliProbabilities`;
- anything else is a point prediction: `PointPrediction`, a point mass at the
  output. Its predictive mean and stddev are those of the output over
  posterior samples: the variance is all epistemic, because the model states
  no noise (`aleatoric_variance` is 0), and its quantiles are those of the
  outputs over samples, not of `y`.

These heads read outputs that are already probabilities or values, so they
are not layers to put in a model: a model that should state its noise ends
in a distribution head (`IndependentNormal`, `Categorical`, ...).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen.heads.base import DistributionHead, final_layer
from tfp_deepgen.heads.discrete import Categorical, IndependentBernoulli

tfd = tfp.distributions

__all__ = ["BernoulliProbabilities", "CategoricalProbabilities", "PointPrediction", "output_head"]

# A probability of exactly 0 for the observed class makes an infinite loss.
_PROBABILITY_FLOOR = 1e-7


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class PointPrediction(DistributionHead):
    """A point mass at the model's output: `y = output`, with no noise.

    Args:
        event_size: Number of outputs per example.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.PointPrediction(1)
    >>> head.mean(np.full((1, 1), 2.0, "float32")).numpy(), head.variance(np.ones((1, 1))).numpy()
    (array([[2.]], dtype=float32), array([[0.]], dtype=float32))
    """

    @property
    def _param_count(self):
        return self.event_size

    def marginal(self, params):
        return tfd.Deterministic(params)

    def variance(self, params):
        return tf.zeros_like(tf.convert_to_tensor(params, "float32"))

    def stddev(self, params):
        return self.variance(params)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class CategoricalProbabilities(Categorical):
    """`Categorical` read from class probabilities (a softmax output) instead of logits.

    Labels are class ids, as for `tdg.heads.Categorical`.

    Args:
        num_classes: Number of classes, the size of the output.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.CategoricalProbabilities(2)
    >>> head.probabilities(np.array([[0.25, 0.75]], "float32")).numpy()
    array([[0.25, 0.75]], dtype=float32)
    """

    def _distribution(self, params):
        return tfd.Categorical(probs=_floored(params), dtype=tf.float32)

    def probabilities(self, params):
        return tf.convert_to_tensor(params, "float32")


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class BernoulliProbabilities(IndependentBernoulli):
    """`IndependentBernoulli` read from `P(y = 1)` per output (a sigmoid output).

    Args:
        event_size: Number of binary outputs per example.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.BernoulliProbabilities(1)
    >>> float(head.log_prob(np.ones((1, 1)), np.full((1, 1), 0.5, "float32"))[0])  # log 0.5
    -0.6931471824645996
    """

    def marginal(self, params):
        return tfd.Bernoulli(probs=_floored(params), dtype=tf.float32)

    def probabilities(self, params):
        return tf.convert_to_tensor(params, "float32")


def _floored(probabilities):
    return tf.clip_by_value(probabilities, _PROBABILITY_FLOOR, 1.0)


def output_head(model, argument="model"):
    """The head that reads `model`'s output: its own head, else one for its activation.

    A model ending in a `tfp_deepgen.heads` head gets that head. Otherwise the
    last layer's activation decides (see the module docstring): softmax
    (`activation="softmax"` or a `keras.layers.Softmax` layer) gives
    `CategoricalProbabilities`, sigmoid `BernoulliProbabilities`, anything
    else `PointPrediction`, sized by the model's output.

    Args:
        model: A built Keras model with one output.
        argument: The caller's name for `model`, used in errors.

    Raises:
        ValueError: naming `argument` when `model` has several outputs or no
            known output size.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> type(tdg.heads.output_head(model)).__name__
    'CategoricalProbabilities'
    """
    layer = final_layer(model, argument)
    if isinstance(layer, DistributionHead):
        return layer
    size = _output_size(model, argument)
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax) or activation is keras.activations.softmax:
        return CategoricalProbabilities(size, name="softmax_output")
    if activation is keras.activations.sigmoid:
        return BernoulliProbabilities(size, name="sigmoid_output")
    return PointPrediction(size, name="point_output")


def _output_size(model, argument):
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        shape = None
    if not shape or shape[-1] is None:
        raise ValueError(
            f"`{argument}` has no head and no known output size: build it first (start it "
            "with keras.Input(shape) or call it on a batch), or end it in a tfp_deepgen head."
        )
    return shape[-1]
