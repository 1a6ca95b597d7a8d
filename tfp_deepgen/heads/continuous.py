"""Heads for real-valued and positive targets."""

import numbers

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import _validation
from tfp_deepgen._math import softplus_inverse
from tfp_deepgen.heads.base import DEFAULT_SCALE_SLOPE, DistributionHead, positive

tfd = tfp.distributions
tfb = tfp.bijectors

_SCALE_MODES = ("heteroscedastic", "homoscedastic")


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class IndependentNormal(DistributionHead):
    """`y ~ Normal(loc, scale)` independently over `event_size` outputs.

    Parameters (last axis): `loc` then, unless the scale is fixed, the
    unconstrained scale `s` with `scale = softplus(scale_slope * s) + min_scale`.

    Args:
        event_size: Number of outputs per example.
        scale: `"heteroscedastic"` (default: the network predicts a scale per
            example), `"homoscedastic"` (one learned scale per output, a
            variable of the head, initially 1) or a positive number (fixed).
        min_scale: Lower bound of learned scales.
        scale_slope: Multiplier of `s` inside the softplus, > 0. Below 1 it
            makes the scale vary slowly with the layer before the head; see
            `DEFAULT_SCALE_SLOPE` for why the default is not 1. TFP's
            regression tutorial's `1e-3 + softplus(0.05 * t)` is
            `min_scale=1e-3, scale_slope=0.05`.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentNormal(2)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
    >>> model.compile("adam", head.loss)
    >>> model.output_shape  # loc and scale parameters of 2 outputs
    (None, 4)
    """

    def __init__(
        self,
        event_size=1,
        scale="heteroscedastic",
        min_scale=1e-6,
        scale_slope=DEFAULT_SCALE_SLOPE,
        **kwargs,
    ):
        super().__init__(event_size, **kwargs)
        if isinstance(scale, str):
            self.scale = _validation.one_of("scale", scale, _SCALE_MODES)
        elif isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            self.scale = _validation.positive_float("scale", scale)
        else:
            raise ValueError(
                "`scale` must be 'heteroscedastic', 'homoscedastic' or a positive "
                f"number. Received: scale={scale!r}"
            )
        self.min_scale = _validation.positive_float("min_scale", min_scale)
        self.scale_slope = _validation.positive_float("scale_slope", scale_slope)
        if self.scale == "homoscedastic":
            self.raw_scale = self.add_weight(
                shape=(self.event_size,),
                initializer=keras.initializers.Constant(softplus_inverse(1.0) / self.scale_slope),
                name="raw_scale",
            )

    @staticmethod
    def params_size(event_size=1, scale="heteroscedastic"):
        """Size the layer before the head must output."""
        learned_per_example = scale == "heteroscedastic"
        return 2 * event_size if learned_per_example else event_size

    @property
    def input_size(self):
        return self.params_size(self.event_size, self.scale)

    @property
    def _param_count(self):
        return self.event_size if isinstance(self.scale, float) else 2 * self.event_size

    def call(self, inputs):
        inputs = super().call(inputs)
        if self.scale != "homoscedastic":
            return inputs
        raw_scale = tf.broadcast_to(self.raw_scale, tf.shape(inputs))
        return tf.concat([inputs, raw_scale], axis=-1)

    def marginal(self, params):
        """The per-output Normal (batch shape `(..., event_size)`)."""
        params = tf.convert_to_tensor(params, "float32")
        if isinstance(self.scale, float):
            return tfd.Normal(params, self.scale)
        loc, raw_scale = self._split(params, [self.event_size] * 2)
        return tfd.Normal(loc, positive(raw_scale, self.min_scale, self.scale_slope))

    def reparameterized_sample(self, params, noise):
        """`loc + scale * noise`: see `DistributionHead.reparameterized_sample`."""
        marginal = self.marginal(params)
        scale = tf.broadcast_to(marginal.scale, tf.shape(marginal.loc))
        return marginal.loc + scale * tf.convert_to_tensor(noise, "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "min_scale": self.min_scale,
            "scale_slope": self.scale_slope,
        }


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Gamma(DistributionHead):
    """`y ~ Gamma(concentration, rate)` independently over `event_size` outputs.

    Parameters: unconstrained concentration then rate, each mapped by
    `softplus(.) + min_value`. Labels must be positive.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.heads.Gamma.params_size(3)
    6
    """

    support = "positive numbers"
    _safe_label = 1.0

    def __init__(self, event_size=1, min_value=1e-6, **kwargs):
        super().__init__(event_size, **kwargs)
        self.min_value = _validation.positive_float("min_value", min_value)

    @staticmethod
    def params_size(event_size=1):
        return 2 * event_size

    @property
    def _param_count(self):
        return 2 * self.event_size

    def _in_support(self, y):
        return tf.math.is_finite(y) & (y > 0)

    def marginal(self, params):
        concentration, rate = self._split(params, [self.event_size] * 2)
        return tfd.Gamma(positive(concentration, self.min_value), positive(rate, self.min_value))

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value}


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class StudentT(DistributionHead):
    """`y ~ StudentT(df, loc, scale)` independently over `event_size` outputs.

    Parameters: `loc`, unconstrained scale (`softplus(scale_slope * .) +
    min_scale`) and, when `df="learned"`, unconstrained degrees of freedom
    mapped to `2 + softplus(.)`, so the predictive variance always exists.

    Args:
        df: `"learned"` (per example and output) or a fixed positive number.
        min_scale, scale_slope: The scale's transform, as in `IndependentNormal`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.heads.StudentT.params_size(1), tdg.heads.StudentT.params_size(1, df=3.0)
    (3, 2)
    """

    def __init__(
        self,
        event_size=1,
        df="learned",
        min_scale=1e-6,
        scale_slope=DEFAULT_SCALE_SLOPE,
        **kwargs,
    ):
        super().__init__(event_size, **kwargs)
        if isinstance(df, str) or df is None:
            self.df = _validation.one_of("df", df, ("learned",))
        else:
            self.df = _validation.positive_float("df", df)
        self.min_scale = _validation.positive_float("min_scale", min_scale)
        self.scale_slope = _validation.positive_float("scale_slope", scale_slope)

    @staticmethod
    def params_size(event_size=1, df="learned"):
        return (3 if df == "learned" else 2) * event_size

    @property
    def _param_count(self):
        return self.params_size(self.event_size, self.df)

    def marginal(self, params):
        parts = self._split(params, [self.event_size] * (self._param_count // self.event_size))
        scale = positive(parts[1], self.min_scale, self.scale_slope)
        df = positive(parts[2], 2.0) if self.df == "learned" else self.df
        return tfd.StudentT(df, parts[0], scale)

    def get_config(self):
        return {
            **super().get_config(),
            "df": self.df,
            "min_scale": self.min_scale,
            "scale_slope": self.scale_slope,
        }


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class MixtureNormal(DistributionHead):
    """A mixture of `num_components` diagonal Normals over `event_size` outputs.

    Parameters: `num_components` mixture logits, then the component locs and
    then their unconstrained scales (`softplus(scale_slope * .) + min_scale`),
    each laid out component-major (`[k0 outputs..., k1 outputs..., ...]`).

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.heads.MixtureNormal.params_size(num_components=3, event_size=2)
    15
    """

    def __init__(
        self,
        num_components,
        event_size=1,
        min_scale=1e-6,
        scale_slope=DEFAULT_SCALE_SLOPE,
        **kwargs,
    ):
        super().__init__(event_size, **kwargs)
        self.num_components = _validation.positive_int("num_components", num_components)
        self.min_scale = _validation.positive_float("min_scale", min_scale)
        self.scale_slope = _validation.positive_float("scale_slope", scale_slope)

    @staticmethod
    def params_size(num_components, event_size=1):
        return num_components * (1 + 2 * event_size)

    @property
    def _param_count(self):
        return self.params_size(self.num_components, self.event_size)

    def _parts(self, params):
        k, d = self.num_components, self.event_size
        logits, loc, raw_scale = self._split(params, [k, k * d, k * d])
        shape = tf.concat([tf.shape(params)[:-1], [k, d]], axis=0)
        loc = tf.reshape(loc, shape)
        scale = positive(tf.reshape(raw_scale, shape), self.min_scale, self.scale_slope)
        return logits, loc, scale

    def _distribution(self, params):
        logits, loc, scale = self._parts(params)
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=logits), tfd.Independent(tfd.Normal(loc, scale), 1)
        )

    def marginal(self, params):
        """Per-output mixtures (batch shape `(..., event_size)`)."""
        logits, loc, scale = self._parts(tf.convert_to_tensor(params, "float32"))
        logits = tf.repeat(logits[..., None, :], self.event_size, axis=-2)
        swap = lambda t: tf.linalg.matrix_transpose(t)  # noqa: E731 - (..., d, k)
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=logits), tfd.Normal(swap(loc), swap(scale))
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "min_scale": self.min_scale,
            "scale_slope": self.scale_slope,
        }


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class MultivariateNormalTriL(DistributionHead):
    """`y ~ MultivariateNormal(loc, L Lᵀ)` with a full covariance.

    Parameters: `loc`, then the `event_size * (event_size + 1) / 2` entries of
    the Cholesky factor `L` in the order of TFP's `FillScaleTriL` (not row by
    row: `[a, b, c]` fills `[[c, 0], [b, a]]`, see `tfb.FillTriangular`), with
    a diagonal `softplus(scale_slope * .) + min_scale`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.heads.MultivariateNormalTriL.params_size(3)
    9
    """

    def __init__(self, event_size, min_scale=1e-5, scale_slope=DEFAULT_SCALE_SLOPE, **kwargs):
        super().__init__(event_size, **kwargs)
        self.min_scale = _validation.positive_float("min_scale", min_scale)
        self.scale_slope = _validation.positive_float("scale_slope", scale_slope)

    @staticmethod
    def params_size(event_size):
        return event_size + event_size * (event_size + 1) // 2

    @property
    def _param_count(self):
        return self.params_size(self.event_size)

    def _parts(self, params):
        d = self.event_size
        loc, tril = self._split(params, [d, d * (d + 1) // 2])
        # TFP's FillScaleTriL, written with a static mask: its diagonal transform
        # cannot compile under XLA for a batch of unknown size.
        matrix = tfp.math.fill_triangular(tril)
        eye = tf.eye(d, dtype=matrix.dtype)
        diagonal = positive(matrix, self.min_scale, self.scale_slope)
        return loc, eye * diagonal + (1.0 - eye) * matrix

    def _distribution(self, params):
        loc, scale_tril = self._parts(params)
        return tfd.MultivariateNormalTriL(loc, scale_tril)

    def marginal(self, params):
        """The per-output Normal marginals (batch shape `(..., event_size)`)."""
        loc, scale_tril = self._parts(tf.convert_to_tensor(params, "float32"))
        return tfd.Normal(loc, tf.norm(scale_tril, axis=-1))

    def reparameterized_sample(self, params, noise):
        """`loc + L noise`: see `DistributionHead.reparameterized_sample`."""
        loc, scale_tril = self._parts(tf.convert_to_tensor(params, "float32"))
        noise = tf.convert_to_tensor(noise, "float32")
        return loc + tf.einsum("bij,kbj->kbi", scale_tril, noise)

    def get_config(self):
        return {
            **super().get_config(),
            "min_scale": self.min_scale,
            "scale_slope": self.scale_slope,
        }
