"""Pruned copies of sparse-variational-dropout networks, and their compression.

Sparse variational dropout (Molchanov et al., 2017) drives most weights'
dropout rates towards 1; at evaluation those weights (`log alpha > threshold`)
are zero. `prune(model)` turns that into a plain Keras model: every sparse
layer becomes a `keras.layers.Dense` / `Conv2D` whose kernel holds `theta`
with the dropped weights set to zero, so it runs, saves and exports without
tfp_deepgen. `compression_ratio(model)` is the paper's measure:
kernel weights over kernel weights kept.

Example:

>>> import numpy as np, keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((6,)),
...     tdg.layers.DenseSparseVariationalDropout(4, activation="relu"),
...     tdg.layers.DenseSparseVariationalDropout(1),
... ])
>>> plain = tdg.pruning.prune(model)
>>> [type(layer).__name__ for layer in plain.layers]
['Dense', 'Dense']
>>> x = np.ones((2, 6), "float32")
>>> with tdg.layers.sampling_mode(model, "mean"):
...     np.allclose(plain(x), model(x), atol=1e-6)
True
>>> tdg.pruning.compression_ratio(model) >= 1.0
True
"""

import keras
import numpy as np

from tfp_deepgen.layers.base import stochastic_layers
from tfp_deepgen.layers.variational_dropout import (
    Conv2DSparseVariationalDropout,
    DenseSparseVariationalDropout,
)

SPARSE_LAYERS = (DenseSparseVariationalDropout, Conv2DSparseVariationalDropout)

__all__ = ["sparse_layers", "kept_weight_counts", "compression_ratio", "prune"]


def sparse_layers(model):
    """The sparse variational dropout layers of `model`, depth first."""
    return [layer for layer in stochastic_layers(model) if isinstance(layer, SPARSE_LAYERS)]


def kept_weight_counts(model, threshold=None):
    """`{layer name: (kernel weights, weights kept)}` for every sparse layer of `model`.

    Args:
        model: A built Keras model (or a single sparse layer).
        threshold: Defaults to each layer's own `threshold`.
    """
    counts = {}
    for layer in sparse_layers(model):
        mask = layer.kept_weights(threshold).numpy()
        counts[layer.name] = (mask.size, int(mask.sum()))
    return counts


def _counts(model, threshold):
    counts = kept_weight_counts(model, threshold)
    if not counts:
        raise ValueError(
            "`model` has no sparse variational dropout layers "
            "(DenseSparseVariationalDropout, Conv2DSparseVariationalDropout)."
        )
    return tuple(sum(column) for column in zip(*counts.values(), strict=True))


def compression_ratio(model, threshold=None):
    """Kernel weights of the sparse layers over those kept (`log alpha <= threshold`).

    Args:
        model: A built Keras model (or a single sparse layer).
        threshold: Defaults to each layer's own `threshold`.

    Returns:
        A float >= 1 (`inf` when every weight is dropped).
    """
    total, kept = _counts(model, threshold)
    return float("inf") if kept == 0 else total / kept


def _plain_layer(layer):
    if not isinstance(layer, SPARSE_LAYERS):
        return layer.__class__.from_config(layer.get_config())
    common = {
        "activation": layer.activation,
        "use_bias": layer.use_bias,
        "name": layer.name,
        "dtype": layer.dtype_policy,
    }
    if isinstance(layer, DenseSparseVariationalDropout):
        return keras.layers.Dense(layer.units, **common)
    if isinstance(layer, Conv2DSparseVariationalDropout):
        return keras.layers.Conv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
            **common,
        )
    raise TypeError(f"No plain Keras layer for {type(layer).__name__}.")


def prune(model, threshold=None):
    """A plain Keras copy of `model` with the dropped weights zeroed.

    Sparse variational dropout layers become `Dense` / `Conv2D` layers with
    kernel `theta * (log alpha <= threshold)`, i.e. the deterministic network
    `model` computes under `sampling_mode(model, "mean")` outside training.
    Other layers are copied with their weights (stochastic ones stay
    stochastic).

    Args:
        model: A built Sequential or functional Keras model.
        threshold: Defaults to each layer's own `threshold`.

    Returns:
        A new `keras.Model`.
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"`model` must be a built Keras model. Received: model={model!r}")
    sparse = {layer.name: layer for layer in sparse_layers(model)}
    if not sparse:
        _counts(model, threshold)  # raises the no-sparse-layers error
    nested = sorted(set(sparse) - {layer.name for layer in model.layers})
    if nested:
        raise ValueError(
            "`prune` replaces sparse layers at the top level of `model`; these sit "
            f"inside nested models: {nested}. Build the model flat (Sequential or functional)."
        )
    pruned = keras.models.clone_model(model, clone_function=_plain_layer)
    for layer in model.layers:
        target = pruned.get_layer(layer.name)
        if layer.name in sparse:
            kernel = (
                layer.kernel_posterior_params.loc.numpy() * layer.kept_weights(threshold).numpy()
            )
            weights = [kernel] + ([layer.bias.numpy()] if layer.use_bias else [])
            target.set_weights([np.asarray(w, "float32") for w in weights])
        else:
            target.set_weights(layer.get_weights())
    return pruned
