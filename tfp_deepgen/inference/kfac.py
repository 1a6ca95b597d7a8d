"""Kronecker factors of the curvature of Dense and convolution layers (KFAC / KFC).

For a layer with input `a` and pre-activation output `s = W^T a + b`, the
generalized Gauss-Newton (GGN) block of its weights is approximated by a
Kronecker product `A ⊗ G` (Martens & Grosse 2015; Ritter, Botev & Barber 2018;
for convolutions KFC, Grosse & Martens 2016):

- `A` is built from the layer inputs extended by a constant 1 for the bias
  (homogeneous coordinates, `ã = [a; 1]`; no 1 without a bias). For a
  convolution `a` is one patch of the input, flattened in the order of the
  kernel's leading axes `(kh, kw, in_channels)`; a Dense layer applied to
  inputs of rank > 2 treats the middle axes as locations too.
- `G` is built from `g = J_s^T L_c`: the columns `L_c` of a square root
  `L L^T = H` of the Hessian of the negative log-likelihood with respect to
  the head's parameters, back-propagated to the layer's pre-activations
  (`curvature="ggn"`); or from the per-example gradient of the negative
  log-likelihood with respect to them (`curvature="ef"`, the empirical Fisher).
  `L` is `diag(sqrt p) - p sqrt(p)^T` for `heads.Categorical`, `I / scale`
  (on the means) for `heads.IndependentNormal` with a fixed or homoscedastic
  scale, and otherwise the symmetric square root of the autodiff Hessian
  (negative eigenvalues clipped at 0, so that `H` is positive semi-definite).

Conventions (those of laplace-torch's `KronLaplace`): over N examples and T
locations per example (T = 1 for a Dense layer on vectors),

    A = (1/N) sum_n sum_t ã_nt ã_nt^T,      G = (1/T) sum_n sum_t sum_c g_ntc g_ntc^T,

so that `A ⊗ G` approximates the SUM over the data set of the per-example
GGN blocks, not their mean. With T = 1 the split is `A` an expectation and
`G` a sum; with T > 1 it is KFC's (equivalently "KFAC-expand",
Eschenhagen et al. 2023): `A ⊗ G = (1/(N T)) sum ã ã^T ⊗ sum g g^T`.

Ordering: `A ⊗ G` (A indexed by the kernel's input rows, G by its outputs)
is the block of the parameters flattened as `tdg.inference.flat_values`
flattens `[kernel, bias]`: the kernel of shape `(inputs, outputs)` (a
convolution's `(kh, kw, in, out)`) row-major, then the bias: parameter
`(i, c)` of `[kernel; bias]` (the bias as the last row) has index
`i * outputs + c`. `KroneckerFactors.to_dense` expands it in that order.

Exact cases: the product is the exact GGN block for one example and one
location (any head), and for a layer feeding the head directly when the head's
output Hessian is the same for every example (a fixed-scale Normal).

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=1.0)
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), head])
>>> factor_shapes(kfac_layers(model))  # (A's shape, G's shape) per layer
[((4, 4), (1, 1))]
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import Categorical, DistributionHead, IndependentNormal, final_head
from tfp_deepgen.inference.subsets import SUBSETS, last_weighted_layer

__all__ = [
    "CURVATURES",
    "SUPPORTED_LAYERS",
    "batch_factor_sums",
    "factor_shapes",
    "kfac_factors",
    "kfac_layers",
    "layer_variables",
    "output_hessian_sqrt",
]

CURVATURES = ("ggn", "ef")
SUPPORTED_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
_SUPPORTED = (
    "keras.layers.Dense, and keras.layers.Conv1D / Conv2D with "
    'data_format="channels_last" and groups=1'
)


def _leaf_layers(model):
    found = []
    for layer in model.layers:
        found.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def _check_layer(layer):
    problem = None
    if not isinstance(layer, SUPPORTED_LAYERS):
        problem = f"it is a {type(layer).__name__}"
    elif not layer.built:
        problem = "it is not built"
    elif isinstance(layer, keras.layers.Dense) and (
        layer.quantization_mode is not None or getattr(layer, "lora_enabled", False)
    ):
        problem = "it is quantized or has LoRA enabled"
    elif not isinstance(layer, keras.layers.Dense) and (
        layer.data_format != "channels_last" or layer.groups != 1
    ):
        problem = f"data_format={layer.data_format!r}, groups={layer.groups}"
    elif [id(v) for v in layer.trainable_weights] != [id(v) for v in layer_variables([layer])]:
        problem = "its trainable weights are not exactly its kernel and bias"
    if problem:
        raise ValueError(
            f"`layers`: KFAC cannot factor layer {layer.name!r} ({problem}); supported: "
            f"{_SUPPORTED}, trainable. Use hessian='diag' or 'full' for other layers."
        )
    return layer


def kfac_layers(model, layers="all"):
    """The layers of `model` to factor, checked.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        layers: `"all"` (every layer with trainable weights, nested models
            looked into), `"last_layer"` (the last one: see
            `tdg.inference.posterior_variables`) or a list of layers of `model`.

    Raises:
        ValueError: Naming a layer that is not supported, and what is.
    """
    final_head(model)
    if isinstance(layers, str):
        subset = _validation.one_of("layers", layers, SUBSETS)
        if subset == "last_layer":
            layers = [last_weighted_layer(model)]
        else:
            layers = [layer for layer in _leaf_layers(model) if layer.trainable_weights]
    layers = list(layers)
    if not layers:
        raise ValueError("`layers` must name at least one layer to factor; received none.")
    for layer in layers:
        if isinstance(layer, DistributionHead):
            raise ValueError(
                f"`layers`: KFAC cannot factor the head {layer.name!r}, which has trainable "
                f"weights; supported: {_SUPPORTED}."
            )
        _check_layer(layer)
    return layers


def layer_variables(layers):
    """The variables `[kernel, bias, kernel, bias, ...]` the factors of `layers` cover.

    In the order of the flat parameter vector the factors' blocks refer to.
    """
    found = []
    for layer in layers:
        found.append(layer.kernel)
        if layer.bias is not None:
            found.append(layer.bias)
    return found


def factor_shapes(layers):
    """The shapes `((dA, dA), (dG, dG))` of each layer's factors, before any data."""
    shapes = []
    for layer in layers:
        kernel = layer_variables([layer])[0]
        inputs = int(np.prod(kernel.shape[:-1])) + int(layer.bias is not None)
        shapes.append(((inputs, inputs), (int(kernel.shape[-1]),) * 2))
    return shapes


def output_hessian_sqrt(head, params, y=None):
    """`L` with `L L^T` the Hessian of the NLL in the head's parameters, per example.

    Args:
        head: A `tfp_deepgen.heads` head.
        params: The head's output, shape `(batch, K)`.
        y: Labels; needed only by heads without a closed form.

    Returns:
        A float32 tensor of shape `(batch, K, R)`: R columns per example.
    """
    params = tf.stop_gradient(tf.cast(params, "float32"))
    if isinstance(head, Categorical):
        p = tf.nn.softmax(params, axis=-1)
        eye = tf.eye(head.num_classes, dtype=p.dtype)
        return (eye[None] - p[:, :, None]) * tf.sqrt(p)[:, None, :]
    if isinstance(head, IndependentNormal) and head.scale != "heteroscedastic":
        scale = head.marginal(params).scale
        inverse = tf.broadcast_to(1.0 / scale, [tf.shape(params)[0], head.event_size])
        sqrt = tf.linalg.diag(inverse)
        if head.scale == "homoscedastic":  # the scale rows do not depend on the weights
            sqrt = tf.concat([sqrt, tf.zeros_like(sqrt)], axis=1)
        return sqrt
    if y is None:
        raise ValueError(
            f"`y` is needed for the GGN of a {type(head).__name__} head (its NLL Hessian "
            "depends on the labels); pass the training labels."
        )
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            nll = -head.log_prob(y, params)
        grad = inner.gradient(nll, params)
        columns = [grad[:, k] for k in range(params.shape[-1])]
    hessian = tf.stack([outer.gradient(c, params) for c in columns], axis=-1)
    del outer
    values, vectors = tf.linalg.eigh(0.5 * (hessian + tf.linalg.matrix_transpose(hessian)))
    roots = tf.sqrt(tf.maximum(values, 0.0))
    return tf.einsum("nij,nj,nkj->nik", vectors, roots, vectors)


def _padded(layer, inputs):
    """`(inputs, padding)` of a convolution, causal padding applied as Keras does."""
    if layer.padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        return tf.pad(inputs, [[0, 0], [left, 0], [0, 0]]), "valid"
    return inputs, layer.padding


def _pre_activation(layer, inputs):
    """The layer's output before its activation, from its (padded) inputs."""
    if isinstance(layer, keras.layers.Dense):
        pre = keras.ops.matmul(inputs, layer.kernel)
    else:
        inputs, padding = _padded(layer, inputs)
        pre = keras.ops.conv(
            inputs, layer.kernel, layer.strides, padding, "channels_last", layer.dilation_rate
        )
    if layer.bias is not None:
        pre = pre + tf.cast(layer.bias, pre.dtype)
    return pre


def _patches(layer, inputs):
    """Each example's inputs to `layer` as `(batch, T, D)` rows of `ã` (without the 1)."""
    if isinstance(layer, keras.layers.Dense):
        return tf.reshape(inputs, [tf.shape(inputs)[0], -1, inputs.shape[-1]])
    inputs, padding = _padded(layer, inputs)
    kernel, strides, rates = layer.kernel_size, layer.strides, layer.dilation_rate
    if layer.rank == 1:
        inputs = inputs[:, None]
        kernel, strides, rates = (1, *kernel), (1, *strides), (1, *rates)
    patches = tf.image.extract_patches(
        inputs, [1, *kernel, 1], [1, *strides, 1], [1, *rates, 1], padding.upper()
    )
    return tf.reshape(patches, [tf.shape(inputs)[0], -1, patches.shape[-1]])


class _Probes:
    """Within `with`, each layer's call records its input and its pre-activation output."""

    def __init__(self, layers, tape):
        self.layers, self.tape = layers, tape
        self.records = [None] * len(layers)

    def _call(self, index, layer, inputs, *args, **kwargs):
        if self.records[index] is not None:
            raise ValueError(
                f"`layers`: layer {layer.name!r} is called more than once in one forward "
                "pass (a shared layer); KFAC needs one call per layer."
            )
        inputs = tf.convert_to_tensor(inputs)
        pre = _pre_activation(layer, inputs)
        self.tape.watch(pre)
        self.records[index] = (inputs, pre)
        return pre if layer.activation is None else layer.activation(pre)

    def __enter__(self):
        for index, layer in enumerate(self.layers):
            probe = _bind(self._call, index, layer)
            object.__setattr__(layer, "call", probe)
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            object.__delattr__(layer, "call")
        return False


def _bind(method, index, layer):
    def call(inputs, *args, **kwargs):
        return method(index, layer, inputs, *args, **kwargs)

    return call


def batch_factor_sums(model, layers, x, y=None, curvature="ggn"):
    """One batch's unnormalised factor sums, per layer: TF ops, usable under XLA.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        layers: Its layers to factor, as `kfac_layers` returns them.
        x: One batch of inputs.
        y: Its labels (needed by `"ef"` and by heads without a closed-form
            output Hessian).
        curvature: `"ggn"` or `"ef"`.

    Returns:
        A list of `(A_sum, G_sum)` float32 pairs, `A_sum = sum_n sum_t ã ã^T`
        and `G_sum = (1/T) sum_n sum_t sum_c g g^T`: dividing the data set's
        total `A_sum` by the number of examples N gives `A`, and the total
        `G_sum` is `G`.
    """
    curvature = _validation.one_of("curvature", curvature, CURVATURES)
    head = final_head(model)
    with tf.GradientTape(persistent=True) as tape:
        with _Probes(layers, tape) as probes:
            params = tf.cast(model(x, training=False), "float32")
        if curvature == "ef":
            if y is None:
                raise ValueError('`y` is needed for curvature="ef"; pass the training labels.')
            fixed = tf.stop_gradient(params)
            with tf.GradientTape() as inner:
                inner.watch(fixed)
                nll = -head.log_prob(y, fixed)
            columns = [inner.gradient(nll, fixed)]
        else:
            sqrt = output_hessian_sqrt(head, params, y)
            columns = [sqrt[:, :, c] for c in range(sqrt.shape[-1])]
    if any(record is None for record in probes.records):
        missing = [lay.name for lay, rec in zip(layers, probes.records, strict=True) if not rec]
        raise ValueError(f"`layers` {missing} are not called by `model` {model.name!r}.")
    pres = [pre for _, pre in probes.records]
    sums = [[None, 0.0] for _ in layers]
    for column in columns:
        grads = tape.gradient(params, pres, output_gradients=column, unconnected_gradients="zero")
        for index, grad in enumerate(grads):
            g = tf.cast(tf.reshape(grad, [tf.shape(grad)[0], -1, grad.shape[-1]]), "float32")
            locations = tf.cast(tf.shape(g)[1], "float32")
            sums[index][1] += tf.einsum("ntc,ntd->cd", g, g) / locations
    del tape
    for index, ((inputs, _), layer) in enumerate(zip(probes.records, layers, strict=True)):
        a = tf.cast(_patches(layer, inputs), "float32")
        if layer.bias is not None:
            a = tf.concat([a, tf.ones_like(a[..., :1])], axis=-1)
        sums[index][0] = tf.einsum("nti,ntj->ij", a, a)
    return [tuple(pair) for pair in sums]


def kfac_factors(model, layers, x, y=None, curvature="ggn", batch_size=32):
    """The factors `[(A, G), ...]` of `layers` over the data `(x, y)`.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        layers: `"all"`, `"last_layer"` or a list of its layers (`kfac_layers`).
        x: Inputs (an array, a tensor, or a structure of them).
        y: Labels, or None where not needed (see `batch_factor_sums`).
        curvature: `"ggn"` (generalized Gauss-Newton) or `"ef"` (empirical
            Fisher).
        batch_size: Examples per forward/backward pass.

    Returns:
        A list of `(A, G)` float32 tensor pairs with `A ⊗ G` approximating the
        sum over the N examples (see the module docstring).
    """
    curvature = _validation.one_of("curvature", curvature, CURVATURES)
    batch_size = _validation.positive_int("batch_size", batch_size)
    layers = kfac_layers(model, layers)
    num = int(tf.nest.flatten(x)[0].shape[0])
    step = tf.function(
        lambda xb, yb: batch_factor_sums(model, layers, xb, yb, curvature),
        reduce_retracing=True,
    )
    totals = None
    for start in range(0, num, batch_size):
        xb = tf.nest.map_structure(lambda t, s=start: t[s : s + batch_size], x)
        sums = step(xb, None if y is None else y[start : start + batch_size])
        totals = (
            sums
            if totals is None
            else [(a + da, g + dg) for (a, g), (da, dg) in zip(totals, sums, strict=True)]
        )
    return [(a / num, g) for a, g in totals]
