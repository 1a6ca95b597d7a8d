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
    size of the tensor the head emits), `marginal` or `_distribution`
    (unconstrained parameters to a TFP distribution over one example) and,
    where labels are restricted, `support`, `_in_support` and `_safe_label`.

    The head always computes in float32, whatever the dtype policy of the
    layers before it: distributions and their log-likelihoods need it.

    Callers never switch on a head's class; they ask the head what it is:
    `kind`, `integer_labels` and `support` describe its labels, and `mean`,
    `stddev`, `variance`, `probabilities`, `label_entropy` and
    `reparameterized_sample` compute from its parameters. Each has a default
    derived from `distribution(params)`, so a subclass that only defines its
    distribution works with the predictive, the metrics and the VAEs; a
    classifier sets `kind = "classifier"` (and `integer_labels = True` for
    one class id per example, `one_hot_labels = True` for one-hot rows), a
    count head `kind = "count"`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> [(h.kind, h.integer_labels) for h in (
    ...     tdg.heads.IndependentNormal(), tdg.heads.Poisson(), tdg.heads.Categorical(3))]
    [('continuous', False), ('count', False), ('classifier', True)]
    """

    #: What the labels are, and so how a prediction is summarised:
    #: `"continuous"` (real values: mean, stddev, quantiles), `"count"`
    #: (non-negative integers: the same, with integer quantiles) or
    #: `"classifier"` (classes: `probabilities` and entropies).
    kind = "continuous"
    #: Human-readable support, used in error messages about labels.
    support = "finite real numbers"
    #: Whether a label is one integer class id per example (`Categorical`):
    #: shape `(batch,)` or `(batch, 1)`, no event axis. False where a label
    #: holds `event_size` values per example (reals, 0/1 outputs, counts).
    integer_labels = False
    #: Whether a label is one class per example as a one-hot row of length
    #: `event_size` (`OneHotCategorical`): probabilities and entropies are
    #: those of one categorical variable, not of `event_size` binary ones.
    one_hot_labels = False
    #: A label inside the support, substituted for invalid ones so that the
    #: log-likelihood (and its gradient) stays finite before it is masked.
    _safe_label = 0.0

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
        y, params = self.align_labels(y, params)
        return self.distribution(params).log_prob(y)

    def mean(self, params):
        """The predictive mean `E[y | params]`, shape `(..., event_size)`, float32.

        The loc of a Normal, `exp(log_rate)` of a Poisson, `P(y = 1)` of a
        Bernoulli: by default `distribution(params).mean()`. A head whose
        labels are class ids (`integer_labels`) has no mean over them: it
        raises `NotImplementedError`; use `probabilities(params)`.

        Args:
            params: The head's output, shape `(..., output_size)`.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> tdg.heads.Poisson().mean(np.zeros((1, 1), "float32")).numpy()  # exp(0)
        array([[1.]], dtype=float32)
        """
        self._refuse_class_ids("mean")
        return self.distribution(params).mean()

    def variance(self, params):
        """The variance `Var[y | params]` per output, shape `(..., event_size)`.

        By default `distribution(params).variance()`; not defined for class
        ids (`integer_labels`), as `mean`.

        Args:
            params: The head's output, shape `(..., output_size)`.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> head = tdg.heads.IndependentNormal(scale=2.0)
        >>> head.variance(np.zeros((1, 1), "float32")).numpy()
        array([[4.]], dtype=float32)
        """
        self._refuse_class_ids("variance")
        return self.distribution(params).variance()

    def stddev(self, params):
        """The standard deviation of `y | params` per output, shape `(..., event_size)`.

        By default `distribution(params).stddev()`; not defined for class
        ids (`integer_labels`), as `mean`.

        Args:
            params: The head's output, shape `(..., output_size)`.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> head = tdg.heads.IndependentNormal(scale=2.0)
        >>> head.stddev(np.zeros((1, 1), "float32")).numpy()
        array([[2.]], dtype=float32)
        """
        self._refuse_class_ids("stddev")
        return self.distribution(params).stddev()

    def _refuse_class_ids(self, summary):
        if self.integer_labels:
            raise NotImplementedError(
                f"{type(self).__name__} head {self.name!r} has no {summary}: its labels are "
                "class ids. Use `head.probabilities(params)` for the class probabilities."
            )

    def probabilities(self, params):
        """Class probabilities of a classifier head (`kind == "classifier"`), float32.

        With one class id per example (`integer_labels`), shape
        `(..., num_classes)`; with `event_size` binary outputs, `P(y = 1)` per
        output, shape `(..., event_size)`. By default the `probs` of
        `distribution(params)` (of its per-output distribution when it is
        `Independent`), which TFP's `Categorical`, `Bernoulli` and
        `OneHotCategorical` give.

        Args:
            params: The head's output, shape `(..., output_size)`.

        Raises:
            NotImplementedError: For a head that is not a classifier.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> tdg.heads.Categorical(2).probabilities(np.zeros((1, 2), "float32")).numpy()
        array([[0.5, 0.5]], dtype=float32)
        """
        if self.kind != "classifier":
            raise NotImplementedError(
                f"{type(self).__name__} head {self.name!r} has no class probabilities: its "
                f"kind is {self.kind!r}, not 'classifier'. Use `head.mean(params)`."
            )
        distribution = self.distribution(params)
        if isinstance(distribution, tfd.Independent):
            distribution = distribution.distribution
        return tf.cast(distribution.probs_parameter(), "float32")

    def label_entropy(self, probabilities):
        """Entropy in nats of the labels of a classifier, from `probabilities(params)`.

        With one class id per example (`integer_labels`), `-sum_k p_k log p_k`
        over the last axis, shape `(...)`; with binary outputs, the entropy of
        each output, shape `(..., event_size)`. Exact at probabilities 0 and 1,
        in the dtype of `probabilities` (the predictive passes float64).

        Args:
            probabilities: Class probabilities, as `probabilities` returns them
                or averaged over posterior samples.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> p = np.array([[0.5, 0.5], [0.9, 0.1]])
        >>> tdg.heads.Categorical(2).label_entropy(p).numpy().round(4)  # log 2, ...
        array([0.6931, 0.3251])
        >>> tdg.heads.IndependentBernoulli(2).label_entropy(p).numpy().round(4)
        array([[0.6931, 0.6931],
               [0.3251, 0.3251]])
        """
        p = tf.convert_to_tensor(probabilities)
        if self.integer_labels or self.one_hot_labels:
            return -tf.reduce_sum(tf.math.xlogy(p, p), -1)
        return -tf.math.xlogy(p, p) - tf.math.xlogy(1.0 - p, 1.0 - p)

    def reparameterized_sample(self, params, noise):
        """A draw of `y | params` as a differentiable function of Normal noise.

        Location-scale heads (`IndependentNormal`: `loc + scale * noise`,
        `MultivariateNormalTriL`: `loc + L noise`) define it; it is what a VAE
        encoder's head needs (`reparameterizable`). Other heads raise
        `NotImplementedError`.

        Args:
            params: The head's output, shape `(batch, output_size)`.
            noise: Standard Normal draws, shape `(num_samples, batch, event_size)`.

        Returns:
            Draws of shape `(num_samples, batch, event_size)`.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> head = tdg.heads.IndependentNormal(scale=2.0)
        >>> loc = np.ones((1, 1), "float32")  # one example
        >>> head.reparameterized_sample(loc, np.ones((3, 1, 1))).numpy()[:, 0, 0]
        array([3., 3., 3.], dtype=float32)
        """
        raise NotImplementedError(
            f"{type(self).__name__} head {self.name!r} has no reparameterized sample; "
            "define `reparameterized_sample(params, noise)` on it."
        )

    @property
    def reparameterizable(self):
        """Whether the head defines `reparameterized_sample` (a VAE encoder needs it)."""
        return type(self).reparameterized_sample is not DistributionHead.reparameterized_sample

    @property
    def loss(self):
        """The Keras loss `-log p(y_true | params)` for `model.compile`."""
        if getattr(self, "_loss", None) is None:
            object.__setattr__(self, "_loss", NegativeLogLikelihood(self))
        return self._loss

    # -- labels --------------------------------------------------------------

    def align_labels(self, y, params):
        """`(y, params)` as float32, the labels in the shape the log-likelihood takes.

        Class ids (`integer_labels`) lose a trailing axis of 1; other labels
        of shape `(batch,)` gain one. Labels whose shape would broadcast into
        a wrong, finite loss raise. `tdg.metrics.HeadMetric` calls it so that
        metrics see the labels the loss sees.

        Raises:
            ValueError: naming the shape received and the shape expected.

        Example:

        >>> import numpy as np, tfp_deepgen as tdg
        >>> y, params = tdg.heads.Poisson().align_labels(np.ones(4), np.zeros((4, 1)))
        >>> tuple(y.shape), y.dtype.name
        ((4, 1), 'float32')
        """
        params = tf.convert_to_tensor(params, "float32")
        self._check_last_dim("params", params.shape[-1], self.output_size)
        y = tf.convert_to_tensor(y)
        y = tf.cast(y, "float32")
        rank = params.shape.rank
        shape = tuple(y.shape)
        if self.integer_labels:
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
        y, params = self.align_labels(y, params)
        valid = self._in_support(y)
        if tf.executing_eagerly():
            self._raise_outside_support(y, valid, "y_true")
        safe_y = tf.where(valid, y, tf.cast(self._safe_label, y.dtype))
        nll = -self.distribution(params).log_prob(safe_y)
        if not self.integer_labels:
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


_ADD_A_HEAD = (
    "Add a head as the model's last layer, after a layer of size `head.input_size`: "
    "e.g. `head = tdg.heads.IndependentNormal(event_size)` after "
    "`keras.layers.Dense(head.input_size)` (or a variational layer such as "
    "`tdg.layers.DenseFlipout(head.input_size)`); for classes "
    "`tdg.heads.Categorical(num_classes)`."
)


def final_layer(model, argument="model"):
    """The layer that computes `model`'s single output, looking through nested models.

    A functional model's last operation (the one computing its output: Keras
    orders `model.operations` so) is followed, else the last layer (a
    Sequential or subclassed model), into nested models until a layer that is
    not a model is reached.

    Args:
        model: A Keras model.
        argument: The caller's name for `model`, used in errors.

    Returns:
        The layer, or None for a model without layers.

    Raises:
        ValueError: naming `argument` when `model` has several outputs.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    >>> tdg.heads.final_layer(model).name
    'out'
    """
    layer = model
    while isinstance(layer, keras.Model):
        outputs = None if isinstance(layer, keras.Sequential) else getattr(layer, "outputs", None)
        if outputs and len(outputs) > 1:
            raise ValueError(
                f"`{argument}` must have one output, the head's parameters; {layer.name!r} "
                f"has {len(outputs)}. Use a model that ends in a single tfp_deepgen head."
            )
        if outputs and isinstance(layer, keras.Function):
            layer = layer.operations[-1]
        else:
            layer = layer.layers[-1] if layer.layers else None
    return layer


def final_head(model, argument="model", allowed=DistributionHead):
    """The head that computes `model`'s output, looking through nested models.

    The layer `final_layer(model)` finds, checked to be a head.

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
    layer = final_layer(model, argument)
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
