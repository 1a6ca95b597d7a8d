"""How a Laplace posterior stores its precision: the pluggable curvature structures.

A structure holds the curvature `H` of the negative log-likelihood over the
posterior's `D` flattened weights (as non-trainable Keras weights of the
posterior, so `.keras` files and SavedModel exports carry it) and answers
what `tdg.inference.Laplace` asks of the precision `H + prior`, where `prior`
is one precision per Keras layer (`(L,)`, float64), spread over that layer's
weights:

- `fit(model, x, y, curvature, batch_size)`: compute and store `H`; returns
  the data log-likelihood;
- `log_det(prior)`: `log det(H + prior)`, float64, differentiable in `prior`;
- `refresh(prior)`: update any factorisation kept for sampling;
- `sample(num_samples, seed, prior)`: `(S, D)` draws of `theta - theta_MAP`;
- `functional_variance(jacobian, prior)`: `diag(J Sigma J^T)` per example
  (`jacobian` `(batch, P, D)`), for the probit predictive;
- `precision(prior)`: the precision (`(D, D)`, or `(D,)` for `diag`), float64.

`FullStructure` keeps the `D x D` matrix and the Cholesky factor of the
posterior precision, `DiagStructure` the diagonal, `KronStructure` one pair of
Kronecker factors per layer (`tdg.inference.kronecker.KroneckerFactors`).

Example:

>>> import keras, numpy as np, tensorflow as tf, tfp_deepgen as tdg
>>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1),
...                           tdg.heads.IndependentNormal(scale=1.0)])
>>> def add_weight(shape, name, **kwargs):
...     return tf.Variable(tf.zeros(shape), name=name)
>>> diag = DiagStructure(add_weight, model, model.trainable_variables, [0, 0])
>>> _ = diag.fit(model, np.ones((3, 1)), np.zeros((3, 1)), "ggn", 32)
>>> diag.precision(tf.constant([1.0], "float64")).numpy()  # N + 1 for kernel and bias
array([4., 4.])
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen.inference.curvature import curvature_matrix, log_likelihood
from tfp_deepgen.inference.kfac import factor_shapes, kfac_layers, layer_variables
from tfp_deepgen.inference.kronecker import KroneckerFactors

__all__ = ["STRUCTURES", "DiagStructure", "FullStructure", "KronStructure"]


class DiagStructure:
    """A diagonal precision: `H` is the diagonal GGN or empirical Fisher.

    Args:
        add_weight: The posterior's `add_weight` (its weights hold the state).
        model: The model the posterior is over.
        variables: The variables of `model` covered, in flat order (D values).
        param_groups: The index of the layer of each weight, `(D,)` ints
            (what `prior` is spread by).
    """

    diagonal = True

    def __init__(self, add_weight, model, variables, param_groups):
        self.param_groups = np.asarray(param_groups, "int32")
        self.num_params = num_params = len(self.param_groups)
        self.variables = list(variables)
        self.curvature = add_weight(
            shape=(num_params,), initializer="zeros", trainable=False, name="curvature_diagonal"
        )

    def fit(self, model, x, y, curvature, batch_size):
        matrix, log_lik = curvature_matrix(
            model, self.variables, x, y, curvature, diagonal=self.diagonal, batch_size=batch_size
        )
        self.curvature.assign(tf.cast(matrix, self.curvature.dtype))
        return log_lik

    def spread(self, prior):
        """The per-layer `prior` `(L,)` as a per-weight float64 vector `(D,)`."""
        return tf.gather(tf.cast(prior, "float64"), self.param_groups)

    def precision(self, prior):
        return tf.cast(self.curvature, "float64") + self.spread(prior)

    def log_det(self, prior):
        return tf.reduce_sum(tf.math.log(self.precision(prior)))

    def refresh(self, prior):
        del prior  # draws divide by sqrt(H + prior) on request

    def sample(self, num_samples, seed, prior):
        noise = tf.random.stateless_normal([num_samples, self.num_params], seed, alg="philox")
        return noise * tf.math.rsqrt(tf.cast(self.precision(prior), "float32"))

    def functional_variance(self, jacobian, prior):
        variance = 1.0 / tf.cast(self.precision(prior), "float32")
        return tf.einsum("bkd,d->bk", tf.square(jacobian), variance)


class FullStructure(DiagStructure):
    """The full `D x D` precision, with the Cholesky factor `L` of `H + diag(prior)`.

    Draws are `L^-T z`; `refresh` recomputes `L` whenever the prior changes.
    """

    diagonal = False

    def __init__(self, add_weight, model, variables, param_groups):
        self.param_groups = np.asarray(param_groups, "int32")
        self.num_params = num_params = len(self.param_groups)
        self.variables = list(variables)
        shape = (num_params, num_params)
        self.curvature = add_weight(
            shape=shape, initializer="zeros", trainable=False, name="curvature_matrix"
        )
        self.cholesky = add_weight(
            shape=shape, initializer="zeros", trainable=False, name="precision_cholesky"
        )

    def precision(self, prior):
        return tf.cast(self.curvature, "float64") + tf.linalg.diag(self.spread(prior))

    def log_det(self, prior):
        chol = tf.linalg.cholesky(self.precision(prior))
        return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))

    def refresh(self, prior):
        self.cholesky.assign(tf.cast(tf.linalg.cholesky(self.precision(prior)), "float32"))

    def sample(self, num_samples, seed, prior):
        del prior  # in the stored factor
        noise = tf.random.stateless_normal([self.num_params, num_samples], seed, alg="philox")
        draws = tf.linalg.triangular_solve(self.cholesky, noise, lower=True, adjoint=True)
        return tf.transpose(draws)

    def functional_variance(self, jacobian, prior):
        del prior  # in the stored factor
        shape = tf.shape(jacobian)
        rows = tf.transpose(tf.reshape(jacobian, [-1, self.num_params]))  # (D, B*P)
        whitened = tf.linalg.triangular_solve(self.cholesky, rows, lower=True)
        return tf.reshape(tf.reduce_sum(tf.square(whitened), 0), shape[:2])


class KronStructure:
    """One pair of Kronecker factors `(A, G)` per layer (`tdg.inference.kfac`).

    Dense and convolution layers only, each with one prior precision;
    `precision` forms the dense block-diagonal matrix (small models only).
    Arguments as `DiagStructure`'s.
    """

    def __init__(self, add_weight, model, variables, param_groups):
        self.layers = kfac_layers(model, _owning_layers(model, variables))
        if [id(v) for v in layer_variables(self.layers)] != [id(v) for v in variables]:
            raise ValueError(
                "`hessian='kron'` needs the posterior's weights to be the kernels and biases of "
                "Dense/Conv layers, in order; use hessian='diag' or 'full'."
            )
        self.num_params = len(param_groups)
        self.factor_weights = []
        for index, (a_shape, g_shape) in enumerate(factor_shapes(self.layers)):
            for name, shape in (("A", a_shape), ("G", g_shape)):
                self.factor_weights.append(
                    add_weight(
                        shape=shape,
                        initializer="zeros",
                        trainable=False,
                        name=f"kron_{name}_{index}",
                    )
                )

    def factors(self, dtype="float32"):
        return KroneckerFactors.from_tensors([tf.cast(w, dtype) for w in self.factor_weights])

    def fit(self, model, x, y, curvature, batch_size):
        factors = KroneckerFactors.from_data(model, self.layers, x, y, curvature, batch_size)
        for weight, value in zip(self.factor_weights, factors.tensors(), strict=True):
            weight.assign(tf.cast(value, weight.dtype))
        return log_likelihood(model, x, y, batch_size)

    def precision(self, prior):
        return self.factors("float64").to_dense(tf.cast(prior, "float64"))

    def log_det(self, prior):
        return self.factors("float64").log_det(tf.cast(prior, "float64"))

    def refresh(self, prior):
        del prior  # eigendecompositions are taken on request

    def sample(self, num_samples, seed, prior):
        return self.factors().sample(seed, num_samples, tf.cast(prior, "float32"))

    def functional_variance(self, jacobian, prior):
        solved = self.factors().solve(jacobian, tf.cast(prior, "float32"))
        return tf.reduce_sum(jacobian * solved, -1)


def _owning_layers(model, variables):
    """The innermost layers of `model` owning `variables`, in order, each once."""
    wanted = {id(v) for v in variables}
    found = []

    def visit(layer):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
        elif wanted & {id(v) for v in layer.trainable_weights}:
            found.append(layer)

    visit(model)
    return found


STRUCTURES = {"diag": DiagStructure, "full": FullStructure, "kron": KronStructure}
