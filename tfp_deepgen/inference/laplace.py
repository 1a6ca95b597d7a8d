"""`Laplace`: a post-hoc Laplace approximation around an ordinary trained Keras model.

After `fit(x, y)` the posterior over the chosen weights (`subset`) is
`N(theta_MAP, (H + diag(prior_precision))^-1)`, with `H` the GGN or empirical
Fisher of the head's summed negative log-likelihood (`tdg.inference.curvature`)
stored in a structure (`hessian`: `"full"`, `"diag"`, `"kron"`) of
`tdg.inference.laplace_structures`. Daxberger et al. 2021 ("Laplace Redux")
and its laplace-torch library are the reference for the API and formulas;
Immer et al. 2021 for the linearised (GLM) predictive.

The prior precision is one value per Keras layer of the subset (a layer's
kernel and bias share it). `log_marginal_likelihood` is the Laplace evidence
`log p(D | theta*) + log p(theta*) + D/2 log 2 pi - 1/2 log det(H + prior)`
at the fitted `theta*`, as laplace-torch computes it; `optimize_prior_precision`
maximises it by Adam on the log prior precision.

Predictives (`predictive`), as head parameters per Monte-Carlo copy:

- `"mc"`: the model under weight draws;
- `"glm"`: the model linearised at `theta_MAP`,
  `f(x, theta_MAP) + J(x) (theta - theta_MAP)`, per draw (forward-mode
  `tf.autodiff.ForwardAccumulator`, vectorised over draws; runs in a graph,
  under XLA and in an exported SavedModel);
- `"probit"` (`Categorical` and `IndependentBernoulli` heads): the logits
  `f(x, theta_MAP) / sqrt(1 + pi/8 var(x))`, `var` the GLM variance of each
  logit, whose softmax / sigmoid approximates the GLM predictive's mean
  probabilities. The same logits come back for every copy, so the predictive
  shows no epistemic variance: use `"glm"` for the uncertainty split.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=1.0)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
>>> laplace = tdg.inference.Laplace(model, subset="all", hessian="diag").fit(x, y)
>>> laplace.posterior_precision.numpy()  # diag(X^T X) + 1
array([9., 9., 9.], dtype=float32)
>>> tdg.predictive.predict(laplace, x[:3], num_samples=5)["mean"].shape
(3, 1)
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import Categorical, IndependentBernoulli
from tfp_deepgen.inference.curvature import CURVATURES, call_with, output_jacobians
from tfp_deepgen.inference.laplace_structures import STRUCTURES
from tfp_deepgen.inference.subsets import SUBSETS, posterior_variables
from tfp_deepgen.inference.weight_posterior import WeightPosterior, flat_values, split_flat

__all__ = ["HESSIANS", "MAX_FULL_PARAMS", "PREDICTIVES", "Laplace"]

HESSIANS = ("diag", "full", "kron")
PREDICTIVES = ("glm", "mc", "probit")
#: The largest number of weights `hessian="full"` accepts (a D x D precision).
MAX_FULL_PARAMS = 5000


def _layer_groups(variables):
    """Index of the Keras layer (variable path without its last part) of each variable."""
    owners = [v.path.rsplit("/", 1)[0] if "/" in v.path else v.path for v in variables]
    names = list(dict.fromkeys(owners))
    return [names.index(o) for o in owners], len(names)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class Laplace(WeightPosterior):
    """A Laplace approximation of the posterior over some weights of a trained model.

    Construct it around the trained model, then call `fit(x, y)` on the
    training data; it is then a `WeightPosterior` (`tdg.predictive`,
    `tdg.metrics`, `tdg.export` and `.keras` files take it).

    Args:
        model: A built, trained Keras model ending in a `tfp_deepgen.heads` head.
        subset: `"last_layer"` (the weights of the layer feeding the head) or
            `"all"` (every trainable weight).
        hessian: `"kron"` (Kronecker-factored), `"diag"` or `"full"` (small
            subsets only: at most `MAX_FULL_PARAMS` weights).
        curvature: `"ggn"` (generalised Gauss-Newton) or `"ef"` (empirical Fisher).
        prior_precision: The precision of the zero-mean Gaussian prior: a
            positive number, or one per Keras layer of the subset.
        predictive: `"mc"`, `"glm"` or `"probit"` (see the module).
        seed: Integer seed of the draws, or None for a random one.
        **kwargs: `name` and the other arguments of `keras.Model`.
    """

    def __init__(
        self,
        model,
        subset="last_layer",
        hessian="kron",
        curvature="ggn",
        prior_precision=1.0,
        predictive="mc",
        seed=None,
        **kwargs,
    ):
        super().__init__(model, seed=seed, **kwargs)
        self.subset = _validation.one_of("subset", subset, SUBSETS)
        self.hessian = _validation.one_of("hessian", hessian, HESSIANS)
        self.curvature = _validation.one_of("curvature", curvature, CURVATURES)
        self.predictive = _validation.one_of("predictive", predictive, PREDICTIVES)
        if self.predictive == "probit" and not isinstance(
            self.head, (Categorical, IndependentBernoulli)
        ):
            raise ValueError(
                "`predictive='probit'` needs a Categorical or IndependentBernoulli head (logits); "
                f"the model ends in {type(self.head).__name__}. Use predictive='glm' or 'mc'."
            )
        variables = posterior_variables(model, self.subset)
        positions = {id(v): i for i, v in enumerate(model.weights)}
        self.variable_indices = [positions[id(v)] for v in variables]
        self.variable_groups, self.num_groups = _layer_groups(variables)
        sizes = [int(np.prod(v.shape)) for v in variables]
        self.num_params = sum(sizes)
        self._param_groups = np.repeat(self.variable_groups, sizes).astype("int32")
        self.prior_precision_init = self._check_prior(prior_precision)
        if self.hessian == "full" and self.num_params > MAX_FULL_PARAMS:
            raise ValueError(
                f"`hessian='full'` stores a D x D precision and allows at most {MAX_FULL_PARAMS} "
                f"weights; subset={self.subset!r} of {model.name!r} has {self.num_params}. Use "
                "hessian='diag' or 'kron', or subset='last_layer'."
            )
        self.structure = STRUCTURES[self.hessian](
            self.add_weight, model, variables, self._param_groups
        )
        self.map_values = self.add_weight(
            shape=(self.num_params,), initializer="zeros", trainable=False, name="map_values"
        )
        self.prior_precision_values = self.add_weight(
            shape=(self.num_groups,), initializer="ones", trainable=False, name="prior_precision"
        )
        self.prior_precision_values.assign(
            np.broadcast_to(self.prior_precision_init, (self.num_groups,)).astype("float32")
        )
        self.data_log_likelihood = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="log_likelihood"
        )
        self.fitted = self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        self._is_fitted = False

    def _check_prior(self, prior_precision):
        values = np.asarray(prior_precision, "float64")
        if (
            values.ndim > 1
            or (values.ndim == 1 and values.shape[0] != self.num_groups)
            or not np.all(np.isfinite(values))
            or not np.all(values > 0)
        ):
            raise ValueError(
                "`prior_precision` must be a positive number or a list of "
                f"{self.num_groups} positive numbers (one per layer of the subset). Received: "
                f"prior_precision={prior_precision!r}"
            )
        return float(values) if values.ndim == 0 else values.tolist()

    # -- fitting -------------------------------------------------------------

    @property
    def random_variables(self):
        weights = self.model.weights
        return [weights[i] for i in self.variable_indices]

    def fit(self, x, y, batch_size=32):
        """Computes the curvature at the model's current (trained) weights over `(x, y)`.

        Args:
            x, y: The training inputs and labels (arrays), the whole data set.
            batch_size: Examples per per-example-Jacobian batch.

        Returns:
            `self`, fitted.
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        variables = self.random_variables
        log_lik = self.structure.fit(self.model, x, y, self.curvature, batch_size)
        self.map_values.assign(flat_values(variables))
        self.data_log_likelihood.assign(tf.cast(log_lik, "float32"))
        self.structure.refresh(self._prior())
        self.fitted.assign(1.0)
        self._is_fitted = True
        return self

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._is_fitted = bool(self.fitted.numpy() > 0)

    def _check_fitted(self, what):
        if not self._is_fitted:
            raise ValueError(
                f"Laplace {self.name!r}: call `fit(x, y)` on the training data before {what}."
            )

    def _prior(self, prior_precision=None):
        """The prior precision, one value per layer `(L,)`, float64."""
        prior = self.prior_precision_values if prior_precision is None else prior_precision
        return tf.broadcast_to(tf.cast(prior, "float64"), [self.num_groups])

    @property
    def prior_precision(self):
        """The prior precision, one value per Keras layer of the subset (numpy)."""
        return self.prior_precision_values.numpy()

    @prior_precision.setter
    def prior_precision(self, value):
        values = self._check_prior(value)
        self.prior_precision_values.assign(np.broadcast_to(values, (self.num_groups,)))
        if self._is_fitted:
            self.structure.refresh(self._prior())

    @property
    def posterior_precision(self):
        """`H + diag(prior)`: a `(D, D)` matrix (`full`) or its diagonal `(D,)`, float32."""
        self._check_fitted("reading the posterior precision")
        return tf.cast(self.structure.precision(self._prior()), "float32")

    @property
    def mean(self):
        """`theta_MAP`, the posterior mean, flattened `(D,)` as `flat_values` orders it."""
        self._check_fitted("reading the posterior mean")
        return tf.convert_to_tensor(self.map_values)

    # -- evidence ------------------------------------------------------------

    def log_marginal_likelihood(self, prior_precision=None):
        """The Laplace evidence at `prior_precision` (default: the stored one), float64.

        `log p(D | theta*) + log N(theta*; 0, diag(prior)^-1) + D/2 log 2 pi
        - 1/2 log det(H + diag(prior))`, differentiable in `prior_precision`
        (a number, or a tensor of one value per layer).
        """
        self._check_fitted("computing the marginal likelihood")
        prior = self._prior(prior_precision)
        theta = tf.cast(self.map_values, "float64")
        prior_diagonal = tf.gather(prior, self._param_groups)
        log_prior_terms = 0.5 * tf.reduce_sum(
            tf.math.log(prior_diagonal) - prior_diagonal * tf.square(theta)
        )
        log_det = self.structure.log_det(prior)
        return tf.cast(self.data_log_likelihood, "float64") + log_prior_terms - 0.5 * log_det

    def optimize_prior_precision(
        self, method="marglik", per_layer=False, steps=300, learning_rate=0.1
    ):
        """Sets the prior precision maximising `log_marginal_likelihood`, and returns it.

        Adam on the log prior precision (`steps` steps, learning rate decayed
        linearly to zero), from the current value, as laplace-torch does.

        Args:
            method: `"marglik"` (the only method).
            per_layer: One precision per Keras layer of the subset instead of one in all.
            steps: Adam steps.
            learning_rate: Adam's initial learning rate.
        """
        _validation.one_of("method", method, ("marglik",))
        per_layer = _validation.boolean("per_layer", per_layer)
        steps = _validation.positive_int("steps", steps)
        learning_rate = _validation.positive_float("learning_rate", learning_rate)
        self._check_fitted("optimizing the prior precision")
        start = np.log(self.prior_precision.astype("float64"))
        log_prior = tf.Variable(start if per_layer else start.mean(keepdims=True))
        moments = [tf.Variable(tf.zeros_like(log_prior)) for _ in range(2)]

        @tf.function
        def run():
            for step in tf.range(1, steps + 1, dtype="float64"):
                with tf.GradientTape() as tape:
                    loss = -self.log_marginal_likelihood(tf.exp(log_prior))
                gradient = tape.gradient(loss, log_prior)
                moments[0].assign(0.9 * moments[0] + 0.1 * gradient)
                moments[1].assign(0.999 * moments[1] + 0.001 * tf.square(gradient))
                first = moments[0] / (1 - 0.9**step)
                second = moments[1] / (1 - 0.999**step)
                rate = learning_rate * (1.0 - (step - 1) / steps)
                log_prior.assign_sub(rate * first / (tf.sqrt(second) + 1e-8))

        run()
        self.prior_precision = np.broadcast_to(np.exp(log_prior.numpy()), (self.num_groups,))
        return self.prior_precision

    # -- draws and predictives ----------------------------------------------

    def weight_samples(self, num_samples, seed):
        self._check_fitted("drawing weights")
        deviations = self.structure.sample(num_samples, seed, self._prior())
        return split_flat(self.map_values[None] + deviations, self.random_variables)

    def sampled_outputs(self, inputs, num_samples):
        if self.predictive == "mc":
            return super().sampled_outputs(inputs, num_samples)
        self._check_fitted("predicting")
        variables = self.random_variables
        means = split_flat(tf.convert_to_tensor(self.map_values), variables)
        if self.predictive == "probit":
            means = [tf.cast(m, v.dtype) for m, v in zip(means, variables, strict=True)]
            logits, jacobian = output_jacobians(self.model, variables, inputs, means)
            variance = self.structure.functional_variance(jacobian, self._prior())
            adjusted = logits * tf.math.rsqrt(1.0 + math.pi / 8.0 * variance)
            return tf.repeat(adjusted[None], num_samples, axis=0)
        seed = self.draws.next_seed()
        deviations = self.structure.sample(num_samples, seed, self._prior())
        base = tf.cast(call_with(self.model, variables, means, inputs), "float32")

        def one_draw(deviation):
            tangents = split_flat(deviation, variables)
            with tf.autodiff.ForwardAccumulator(means, tangents) as accumulator:
                outputs = tf.cast(call_with(self.model, variables, means, inputs), "float32")
            return base + accumulator.jvp(outputs, unconnected_gradients="zero")

        return tf.vectorized_map(one_draw, deviations, fallback_to_while_loop=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "subset": self.subset,
                "hessian": self.hessian,
                "curvature": self.curvature,
                "prior_precision": self.prior_precision_init,
                "predictive": self.predictive,
            }
        )
        return config
