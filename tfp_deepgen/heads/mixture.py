"""A mixture of any head: `y ~ sum_k pi_k p_k(y)`, each `p_k` of one family."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen.heads.base import DistributionHead

tfd = tfp.distributions

__all__ = ["MixtureSameFamily", "PerOutputMixture"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class MixtureSameFamily(DistributionHead):
    """A mixture of `num_components` distributions of one head's family.

    The counterpart of `tfp.layers.MixtureSameFamily(num_components,
    component_layer)`: `component` is any of our heads (`IndependentNormal`,
    `StudentT`, `Poisson`, `Categorical`, ...), and this head mixes
    `num_components` of them with learned weights. Its labels, support and
    kind are the component's. Parameters: `num_components` mixture logits,
    then each component's parameters in turn (`component.input_size` each).

    Args:
        component: The component head (or its serialized config).
        num_components: Number of components K >= 2.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.MixtureSameFamily(tdg.heads.Poisson(), num_components=3)
    >>> head.input_size  # 3 logits + 3 log-rates
    6
    >>> float(head.mean(np.zeros((1, 6), "float32"))[0, 0])  # rates exp(0) = 1
    1.0
    """

    def __init__(self, component, num_components, **kwargs):
        kwargs.pop("event_size", None)
        if isinstance(component, dict):
            component = keras.saving.deserialize_keras_object(component)
        if not isinstance(component, DistributionHead):
            raise ValueError(
                "`component` must be a tfp_deepgen.heads head (e.g. "
                "tdg.heads.IndependentNormal(1)), the family of every component. "
                f"Received: component={component!r}"
            )
        if isinstance(component, MixtureSameFamily):
            raise ValueError("`component` must not itself be a MixtureSameFamily head.")
        num_components = _validation.positive_int("num_components", num_components)
        if num_components < 2:
            raise ValueError(
                f"`num_components` must be >= 2. Received: num_components={num_components}"
            )
        super().__init__(component.event_size, **kwargs)
        self.component = component
        self.num_components = num_components
        self.kind = component.kind
        self.integer_labels = component.integer_labels
        self.one_hot_labels = component.one_hot_labels
        self.support = component.support
        self._safe_label = component._safe_label

    @staticmethod
    def params_size(component, num_components):
        """Size of the parameters of `num_components` components of head `component`."""
        return num_components * (1 + component.input_size)

    @property
    def _param_count(self):
        return self.params_size(self.component, self.num_components)

    def _parts(self, params):
        """Mixture logits `(..., K)` and component parameters `(..., K, P)`."""
        k = self.num_components
        logits, rest = tf.split(params, [k, k * self.component.input_size], axis=-1)
        shape = tf.concat([tf.shape(params)[:-1], [k, self.component.input_size]], 0)
        return logits, tf.reshape(rest, shape)

    def _distribution(self, params):
        logits, components = self._parts(params)
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=logits), self.component.distribution(components)
        )

    def marginal(self, params):
        """Per-output mixtures (batch shape `(..., event_size)`), for their `cdf`.

        TFP mixes over the rightmost batch axis, where the component marginals
        hold the outputs, so this is a `PerOutputMixture`: it has the `cdf`
        the predictive's quantiles need.
        """
        logits, components = self._parts(tf.convert_to_tensor(params, "float32"))
        return PerOutputMixture(tf.nn.softmax(logits), self.component.marginal(components))

    def _in_support(self, y):
        return self.component._in_support(y)

    def probabilities(self, params):
        """Class probabilities of a classifier mixture: `sum_k pi_k p_k`."""
        logits, components = self._parts(tf.convert_to_tensor(params, "float32"))
        weights = tf.nn.softmax(logits)[..., None]  # (..., K, 1)
        return tf.reduce_sum(weights * self.component.probabilities(components), axis=-2)

    def get_config(self):
        config = super().get_config()
        del config["event_size"]
        return {
            **config,
            "component": keras.saving.serialize_keras_object(self.component),
            "num_components": self.num_components,
        }


class PerOutputMixture:
    """The marginal of each output of a mixture: `F(y) = sum_k pi_k F_k(y)`.

    Args:
        weights: Mixture weights, shape `(..., K)`.
        components: The components' per-output distributions, batch shape
            `(..., K, d)`.
    """

    def __init__(self, weights, components):
        self.weights = weights
        self.components = components

    def cdf(self, y):
        """`sum_k pi_k F_k(y)` for `y` broadcasting against `(..., d)`."""
        per_component = self.components.cdf(tf.expand_dims(y, -2))  # (..., K, d)
        return tf.reduce_sum(self.weights[..., None] * per_component, axis=-2)
