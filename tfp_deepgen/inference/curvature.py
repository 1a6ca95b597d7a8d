"""Curvature of a model's negative log-likelihood in its weights: GGN and empirical Fisher.

What a Laplace approximation needs around trained weights `theta`: the
curvature of `-sum_n log p(y_n | f(x_n, theta))`, where `f` is the model (its
head's unconstrained parameters) and `p` the head's distribution.

- `"ggn"`, the generalised Gauss-Newton `sum_n J_n^T H_n J_n`: `J_n` the
  Jacobian of the head parameters of example n in the weights, `H_n` the
  Hessian of the example's negative log-likelihood in the head parameters
  (autodiff, through `head.distribution(params).log_prob`). `H_n` is projected
  onto the positive semi-definite cone (its negative eigenvalues set to 0), so
  the GGN is a valid precision for every head; for the heads whose parameters
  are natural parameters (`Categorical` logits, `IndependentBernoulli` logits,
  a fixed-scale `IndependentNormal`, `Poisson` log-rates) `H_n` is already
  PSD and the GGN equals the Fisher information.
- `"ef"`, the empirical Fisher `sum_n g_n g_n^T`, `g_n` the gradient of the
  example's negative log-likelihood in the weights.

Both come as the full `D x D` matrix or its diagonal, accumulated in float64
over mini-batches (per-example Jacobians: memory `batch_size * P * D`).

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=0.5)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> x = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
>>> h, _ = curvature_matrix(model, model.trainable_variables, x, np.zeros((2, 1)), diagonal=True)
>>> h.numpy()  # diag(X^T X) / 0.5**2 for the kernel, N / 0.5**2 for the bias
array([ 4., 16.,  8.])
"""

import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import final_head

__all__ = [
    "CURVATURES",
    "call_with",
    "check_data",
    "curvature_matrix",
    "log_likelihood",
    "output_hessians",
    "output_jacobians",
]

CURVATURES = ("ef", "ggn")


def call_with(model, variables, values, inputs):
    """`model(inputs)` (inference mode) with `variables` replaced by the tensors `values`."""
    replaced = {id(v): t for v, t in zip(variables, values, strict=True)}
    trainable = [replaced.get(id(v), v.value) for v in model.trainable_variables]
    non_trainable = [replaced.get(id(v), v.value) for v in model.non_trainable_variables]
    outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
    return outputs


def output_jacobians(model, variables, inputs, values=None):
    """The head parameters and their per-example Jacobian in the flattened `variables`.

    Args:
        model, variables: The model and the variables differentiated.
        inputs: A batch of inputs.
        values: Tensors to evaluate at instead of the variables' values.

    Returns:
        `(params, jacobian)`: shapes `(batch, P)` and `(batch, P, D)`, float32,
        `D` the total size of `variables` in `flat_values` order.
    """
    if values is None:
        values = [tf.convert_to_tensor(v.value) for v in variables]
    with tf.GradientTape() as tape:
        tape.watch(values)
        params = tf.cast(call_with(model, variables, values, inputs), "float32")
    blocks = tape.jacobian(params, values, unconnected_gradients="zero")
    shape = tf.concat([tf.shape(params), [-1]], 0)
    flat = [tf.reshape(tf.cast(block, "float32"), shape) for block in blocks]
    return params, tf.concat(flat, -1)


def output_hessians(head, y, params):
    """Per-example Hessian of `-log p(y | params)` in `params`, shape `(batch, P, P)`.

    Also returns the per-example gradient `(batch, P)` and log-likelihood `(batch,)`.
    """
    params = tf.convert_to_tensor(params, "float32")
    with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            log_lik = head.log_prob(y, params)
            nll = -tf.reduce_sum(log_lik)
        gradient = inner.gradient(nll, params)
    hessian = outer.batch_jacobian(gradient, params)
    return hessian, gradient, log_lik


def _psd_root(hessian):
    """`R` with `R R^T` the PSD projection of each symmetric `(P, P)` matrix."""
    hessian = 0.5 * (hessian + tf.linalg.matrix_transpose(hessian))
    if hessian.shape[-1] == 1:
        return tf.sqrt(tf.maximum(hessian, 0.0))
    eigenvalues, eigenvectors = tf.linalg.eigh(hessian)
    return eigenvectors * tf.sqrt(tf.maximum(eigenvalues, 0.0))[..., None, :]


def _batch_terms(model, variables, head, x, y, curvature, diagonal):
    params, jacobian = output_jacobians(model, variables, x)
    hessian, gradient, log_lik = output_hessians(head, y, params)
    jacobian = tf.cast(jacobian, "float64")
    if curvature == "ggn":
        # J^T H J = (R^T J)^T (R^T J) with H = R R^T: rows c of R^T J per example.
        factors = tf.einsum("bkd,bkc->bcd", jacobian, tf.cast(_psd_root(hessian), "float64"))
    else:
        factors = tf.einsum("bkd,bk->bd", jacobian, tf.cast(gradient, "float64"))[:, None, :]
    if diagonal:
        matrix = tf.reduce_sum(tf.square(factors), [0, 1])
    else:
        matrix = tf.einsum("bcd,bce->de", factors, factors)
    return matrix, tf.reduce_sum(tf.cast(log_lik, "float64"))


def curvature_matrix(
    model, variables, x, y, curvature="ggn", diagonal=False, batch_size=32, head=None
):
    """The GGN or empirical Fisher of the summed negative log-likelihood over `(x, y)`.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        variables: The variables of `model` the curvature is over (`D` values).
        x, y: Inputs and labels (arrays; the whole data set, batched here).
        curvature: `"ggn"` or `"ef"` (see the module).
        diagonal: Return only the diagonal (`(D,)`) instead of the `(D, D)` matrix.
        batch_size: Examples per Jacobian computation.
        head: The head whose likelihood is used (default: the model's last layer).

    Returns:
        `(matrix, log_likelihood)`: float64 tensors, the curvature and
        `sum_n log p(y_n | f(x_n, theta))` at the current weights.
    """
    curvature = _validation.one_of("curvature", curvature, CURVATURES)
    diagonal = _validation.boolean("diagonal", diagonal)
    batch_size = _validation.positive_int("batch_size", batch_size)
    head = final_head(model) if head is None else head
    x, y = check_data(head, x, y)
    step = tf.function(
        lambda xb, yb: _batch_terms(model, variables, head, xb, yb, curvature, diagonal),
        reduce_retracing=True,
    )
    size = sum(int(np.prod(v.shape)) for v in variables)
    matrix = tf.zeros([size] if diagonal else [size, size], "float64")
    log_lik = tf.constant(0.0, "float64")
    for start in range(0, len(x), batch_size):
        part, part_log_lik = step(
            tf.convert_to_tensor(x[start : start + batch_size]),
            tf.convert_to_tensor(y[start : start + batch_size]),
        )
        matrix += part
        log_lik += part_log_lik
    return matrix, log_lik


def check_data(head, x, y):
    """`(x, y)` as arrays, checked: as many labels as inputs, labels in the head's support."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"`x` and `y` must hold the same positive number of examples; received "
            f"{len(x)} and {len(y)}."
        )
    head.check_in_support(y, "y")
    return x, y


def log_likelihood(model, x, y, batch_size=32):
    """`sum_n log p(y_n | f(x_n))` under the model's head at its current weights, float64.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False),
    ...                           tdg.heads.IndependentNormal(scale=1.0)])
    >>> _ = model.layers[0].kernel.assign([[0.0]])
    >>> round(float(log_likelihood(model, np.ones((2, 1)), np.zeros((2, 1)))), 4)  # 2 log N(0)
    -1.8379
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    head = final_head(model)
    x, y = check_data(head, x, y)
    total = tf.constant(0.0, "float64")
    for start in range(0, len(x), batch_size):
        params = model(x[start : start + batch_size], training=False)
        log_lik = head.log_prob(y[start : start + batch_size], params)
        total += tf.reduce_sum(tf.cast(log_lik, "float64"))
    return total
