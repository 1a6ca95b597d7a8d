"""What every distribution-output head shares.

A head is the last layer of a model. Keras graphs carry tensors, so the head
outputs one float32 tensor of *unconstrained* distribution parameters;
`head.distribution(params)` maps them through numerically safe transforms
(softplus scales, logits, log-rates) into a TFP distribution, and `head.loss`
is the negative log-likelihood of the labels under it.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen.losses import NegativeLogLikelihood

tfd = tfp.distributions


class DistributionHead(keras.layers.Layer):
    """Base class of the heads in `tfp_deepgen.heads`.

    Subclasses define `params_size` (a static method), `_param_count` (the
    size of the tensor the head emits), `_distribution` (unconstrained
    parameters to a TFP distribution over one example) and, where labels are
    restricted, `_in_support`.

    The head always computes in float32, whatever the dtype policy of the
    layers before it: distributions and their log-likelihoods need it.
    """

    #: Human-readable support, used in error messages about labels.
    support = "finite real numbers"
    #: A label inside the support, substituted for invalid ones so that the
    #: log-likelihood (and its gradient) stays finite before it is masked.
    _safe_label = 0.0
    #: Whether the labels are class ids (one per example, no event axis).
    _integer_labels = False

    def __init__(self, event_size=1, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.event_size = _validation.positive_int("event_size", event_size)

    # -- sizes ---------------------------------------------------------------

    @property
    def input_size(self):
        """Size of the last axis this head expects from the layer before it."""
        return self._param_count

    @property
    def output_size(self):
        """Size of the last axis of the parameter tensor the head emits."""
        return self._param_count

    @property
    def _param_count(self):
        raise NotImplementedError

    def marginal(self, params):
        """The per-output distribution (batch shape `(..., event_size)`)."""
        raise NotImplementedError

    def _distribution(self, params):
        # Most heads are independent over their outputs; others override.
        return tfd.Independent(self.marginal(params), 1)

    # -- the Keras layer -----------------------------------------------------

    def build(self, input_shape):
        self._check_last_dim("inputs", input_shape[-1], self.input_size)

    def call(self, inputs):
        return tf.cast(inputs, "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_size)

    # -- distributions -------------------------------------------------------

    def distribution(self, params):
        """The TFP distribution of one example per row of `params`.

        Args:
            params: The head's output, shape `(..., output_size)`.
        """
        params = tf.convert_to_tensor(params, "float32")
        self._check_last_dim("params", params.shape[-1], self.output_size)
        return self._distribution(params)

    def log_prob(self, y, params):
        """Log-likelihood of each example's label, shape `params.shape[:-1]`."""
        y, params = self._prepare(y, params)
        return self.distribution(params).log_prob(y)

    def mean(self, params):
        """The predictive mean `E[y | params]`, shape `(..., event_size)`, float32.

        The loc of a Normal, `exp(log_rate)` of a Poisson, `P(y = 1)` of a
        Bernoulli. A `Categorical` head has no mean over its class ids: it
        raises `NotImplementedError`; use its `probabilities(params)`.

        Args:
            params: The head's output, shape `(..., output_size)`.
        """
        if self._integer_labels:
            raise NotImplementedError(
                f"{type(self).__name__} head {self.name!r} has no mean: its labels are "
                "class ids. Use `head.probabilities(params)` for the class probabilities."
            )
        return self.distribution(params).mean()

    @property
    def loss(self):
        """The Keras loss `-log p(y_true | params)` for `model.compile`."""
        if getattr(self, "_loss", None) is None:
            object.__setattr__(self, "_loss", NegativeLogLikelihood(self))
        return self._loss

    # -- labels --------------------------------------------------------------

    def _prepare(self, y, params):
        params = tf.convert_to_tensor(params, "float32")
        self._check_last_dim("params", params.shape[-1], self.output_size)
        y = tf.convert_to_tensor(y)
        y = tf.cast(y, "float32")
        rank = params.shape.rank
        shape = tuple(y.shape)
        if self._integer_labels:
            if y.shape.rank == rank and y.shape[-1] == 1:
                y = tf.squeeze(y, -1)
            if y.shape.rank == rank and y.shape[-1] is not None:
                # Else one-hot labels would broadcast into a wrong, finite loss.
                raise ValueError(
                    f"{type(self).__name__} head {self.name!r} expects `y_true` holding "
                    f"one class id per example, shape (batch,) or (batch, 1), but got "
                    f"shape {shape}. For one-hot labels pass their argmax."
                )
        else:
            if y.shape.rank == rank - 1:
                y = y[..., None]
            if y.shape.rank and y.shape[-1] is not None and y.shape[-1] != self.event_size:
                # Else the labels would broadcast into a wrong, finite loss.
                raise ValueError(
                    f"{type(self).__name__} head {self.name!r} expects `y_true` with "
                    f"last dimension {self.event_size} (its event_size), but got shape "
                    f"{shape}."
                )
        return y, params

    def _in_support(self, y):
        return tf.math.is_finite(y)

    def check_in_support(self, y, argument="y_true"):
        """Raises `ValueError` naming `argument` if any value of `y` lies outside the support.

        Eager only: call it on concrete data before a traced computation, in
        which invalid labels would only give an infinite loss.
        """
        y = tf.cast(tf.convert_to_tensor(y), "float32")
        self._raise_outside_support(y, self._in_support(y), argument)

    def _raise_outside_support(self, y, valid, argument):
        if not bool(tf.reduce_all(valid)):
            bad = tf.boolean_mask(y, tf.logical_not(valid)).numpy()
            raise ValueError(
                f"{type(self).__name__} head {self.name!r}: `{argument}` must hold "
                f"{self.support}; {bad.size} value(s) are not, e.g. "
                f"{np.unique(bad)[:5].tolist()}."
            )

    def checked_nll(self, y, params):
        """Per-example negative log-likelihood with the labels checked.

        Eagerly, labels outside the support raise `ValueError`; in a graph
        they give an infinite loss for their example (never NaN), and their
        gradient is zero, so `keras.callbacks.TerminateOnNaN` stops training.
        """
        y, params = self._prepare(y, params)
        valid = self._in_support(y)
        if tf.executing_eagerly():
            self._raise_outside_support(y, valid, "y_true")
        safe_y = tf.where(valid, y, tf.cast(self._safe_label, y.dtype))
        nll = -self.distribution(params).log_prob(safe_y)
        if not self._integer_labels:
            valid = tf.reduce_all(valid, axis=-1)
        return tf.where(valid, nll, tf.constant(np.inf, nll.dtype))

    # -- shared helpers ------------------------------------------------------

    def _check_last_dim(self, argument, actual, expected):
        if actual is not None and actual != expected:
            raise ValueError(
                f"{type(self).__name__} head {self.name!r} expects `{argument}` "
                f"with last dimension {expected} (its params_size), but got "
                f"{actual}. Put `keras.layers.Dense({self.input_size})` before it."
            )

    def _split(self, params, sizes):
        return tf.split(params, sizes, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["event_size"] = self.event_size
        return config


def resolve_head(head, argument="head"):
    """`head` itself, or the head its serialized config describes.

    Raises:
        ValueError: naming `argument` when `head` is neither.
    """
    if isinstance(head, dict):
        head = keras.saving.deserialize_keras_object(head)
    if not isinstance(head, DistributionHead):
        raise ValueError(
            f"`{argument}` must be a tfp_deepgen.heads head (e.g. "
            f"tdg.heads.IndependentNormal()). Received: {argument}={head!r}"
        )
    return head


_ADD_A_HEAD = (
    "Add a head as the model's last layer, after a layer of size `head.input_size`: "
    "e.g. `head = tdg.heads.IndependentNormal(event_size)` after "
    "`keras.layers.Dense(head.input_size)` (or a variational layer such as "
    "`tdg.layers.DenseFlipout(head.input_size)`); for classes "
    "`tdg.heads.Categorical(num_classes)`."
)


def final_head(model, argument="model", allowed=DistributionHead):
    """The head that computes `model`'s output, looking through nested models.

    A functional model's output layer is followed, else the last layer (a
    Sequential or subclassed model), into nested models until a layer that is
    not a model is reached.

    Args:
        model: A Keras model.
        argument: The caller's name for `model`, used in errors.
        allowed: The head class (or tuple of classes) the caller accepts.

    Raises:
        ValueError: naming `argument` when `model` has several outputs or does
            not end in an `allowed` head.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> head = tdg.heads.Poisson()
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), head])
    >>> tdg.heads.final_head(model) is head
    True
    """
    layer = model
    while isinstance(layer, keras.Model):
        outputs = None if isinstance(layer, keras.Sequential) else getattr(layer, "outputs", None)
        if outputs and len(outputs) > 1:
            raise ValueError(
                f"`{argument}` must have one output, the head's parameters; {layer.name!r} "
                f"has {len(outputs)}. Use a model that ends in a single tfp_deepgen head."
            )
        if outputs and hasattr(outputs[0], "_keras_history"):
            layer = outputs[0]._keras_history.operation
        else:
            layer = layer.layers[-1] if layer.layers else None
    if isinstance(layer, allowed):
        return layer
    names = (
        " or ".join(f"tdg.heads.{cls.__name__}" for cls in allowed)
        if isinstance(allowed, tuple)
        else "a tfp_deepgen.heads head"
    )
    last = "no layers" if layer is None else f"a {type(layer).__name__} ({layer.name!r})"
    raise ValueError(
        f"`{argument}` must be a Keras model whose last layer is {names}: it must end in a "
        "tfp_deepgen.heads head, which turns the last layer's output into a distribution; "
        f"its last layer is {last}. {_ADD_A_HEAD}"
    )


#: Default `scale_slope` of the heads with a learned scale:
#: `scale = softplus(scale_slope * s) + min_scale`. At 1, a network's scale
#: output swings over orders of magnitude at initialisation; a few examples
#: then get scales near `min_scale` and losses of 1e5-1e7, whose gradients
#: fill Adam's second-moment estimate and freeze the scale's weights for
#: thousands of steps (measured on a linear VAE over PPCA data, where the
#: ELBO stayed 1-9000 nats below the exact likelihood). See the CHANGELOG
#: entry of the defaults issue for the sweep that chose the value.
DEFAULT_SCALE_SLOPE = 0.3


def positive(x, minimum, slope=1.0):
    """`softplus(slope * x) + minimum`: a smooth, overflow-free positive transform."""
    if slope != 1.0:
        x = slope * x
    return tf.math.softplus(x) + minimum
