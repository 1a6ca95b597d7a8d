"""Reading and exporting the structure IBP gates have learned.

`active_widths(model)` lists the learned width of every gated layer;
`shrink(model)` builds the smaller plain network that keeps only the active
units, so it runs, saves and exports without tfp_deepgen and predicts what
the gated model predicts with deterministic gates
(`tdg.layers.sampling_mode(model, "mean")`).

Example:

>>> import numpy as np, keras, tfp_deepgen as tdg
>>> model = keras.Sequential([
...     keras.Input((4,)),
...     tdg.layers.IBPDense(6, activation="tanh"),
...     keras.layers.Dense(1),
... ])
>>> model.layers[0].gate_logits.assign([3.0, -3.0, 3.0, -3.0, -3.0, 3.0])  # doctest: +ELLIPSIS
<...>
>>> small = tdg.structure.shrink(model)
>>> small.layers[0].units
3
>>> x = np.ones((2, 4), "float32")
>>> with tdg.layers.sampling_mode(model, "mean"):
...     np.allclose(small(x), model(x), atol=1e-6)
True
"""

import keras
import numpy as np

from tfp_deepgen.layers.dense import DenseLocalReparameterization
from tfp_deepgen.layers.ibp import IBPDense, IBPGate

__all__ = ["active_widths", "shrink"]

# Layers that act on each feature (channel) separately and have no weights.
_FEATUREWISE = (
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.AveragePooling1D,
    keras.layers.ReLU,
)


def active_widths(model, threshold=None):
    """`{layer name: number of active units}` for every IBP gate of `model`."""
    return {
        layer.name: layer.active_units(threshold)
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, IBPGate)
    }


def _dense_weights(layer):
    """Kernel and bias (posterior means for variational weights) as NumPy arrays."""
    if isinstance(layer, IBPDense):
        layer = layer.dense
    if isinstance(layer, DenseLocalReparameterization):
        kernel = layer._kernel_posterior.loc.numpy()
    else:
        kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.bias is not None else None
    return kernel, bias


def _plain_dense(layer, units, activation):
    return keras.layers.Dense(
        units,
        activation=activation,
        use_bias=layer.use_bias,
        name=layer.name,
        dtype=layer.dtype_policy,
    )


def shrink(model, threshold=None):
    """The plain Sequential network with only the active units of every gate.

    Supported: Sequential models of `IBPDense`, `keras.layers.Dense` or
    `Conv2D` each optionally followed by an `IBPGate`, with featurewise
    layers (activations, dropout, pooling) and `Flatten` in between, and any
    last layer (e.g. a `tfp_deepgen.heads` head) after the last gate's consumer.

    Args:
        model: A built `keras.Sequential` model.
        threshold: Gate probability above which a unit is kept; defaults to
            each gate's own `threshold`.

    Returns:
        A new `keras.Sequential` model.
    """
    if not isinstance(model, keras.Sequential) or not model.built:
        raise ValueError(f"`model` must be a built keras.Sequential. Received: model={model!r}")
    layers = list(model.layers)
    # Gate masks over each layer's outputs: an IBPDense gates itself, an
    # IBPGate the layer before it.
    masks = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, IBPDense):
            masks[i] = layer.active_mask(threshold)
        elif isinstance(layer, IBPGate):
            if i == 0 or not isinstance(layers[i - 1], (keras.layers.Dense, keras.layers.Conv2D)):
                raise ValueError(
                    f"`shrink` handles an IBPGate right after a Dense or Conv2D layer; "
                    f"{layer.name!r} follows {layers[i - 1].name if i else 'the input'!r}."
                )
            masks[i - 1] = layer.active_mask(threshold)

    new_layers, new_weights = [keras.Input(model.input_shape[1:])], []
    kept_inputs = None  # indices of the previous layer's outputs still present
    for i, layer in enumerate(layers):
        if isinstance(layer, IBPGate) and not isinstance(layer, IBPDense):
            continue
        mask = masks.get(i)
        if isinstance(layer, (IBPDense, keras.layers.Dense)):
            kernel, bias = _dense_weights(layer)
            if kept_inputs is not None:
                kernel = kernel[kept_inputs]
            if mask is not None:
                kernel, bias = kernel[:, mask], None if bias is None else bias[mask]
            new_layers.append(_plain_dense(layer, kernel.shape[1], layer.activation))
            new_weights.append([kernel] + ([] if bias is None else [bias]))
            kept_inputs = None if mask is None else np.flatnonzero(mask)
        elif isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
            config = layer.get_config()
            kernel, *bias = layer.get_weights()
            if kept_inputs is not None:
                kernel = kernel[:, :, kept_inputs, :]
            if mask is not None:
                kernel, bias = kernel[..., mask], [b[mask] for b in bias]
            config["filters"] = kernel.shape[-1]
            new_layers.append(keras.layers.Conv2D.from_config(config))
            new_weights.append([kernel, *bias])
            kept_inputs = None if mask is None else np.flatnonzero(mask)
        elif isinstance(layer, keras.layers.Flatten) and kept_inputs is not None:
            shape = layer.input.shape[1:]  # (..., channels), channels last
            positions = int(np.prod(shape[:-1]))
            channels = shape[-1]
            kept_inputs = (np.arange(positions)[:, None] * channels + kept_inputs).ravel()
            new_layers.append(keras.layers.Flatten.from_config(layer.get_config()))
            new_weights.append([])
        elif isinstance(layer, _FEATUREWISE) or kept_inputs is None:
            new_layers.append(layer.__class__.from_config(layer.get_config()))
            new_weights.append(layer.get_weights())
        else:
            raise ValueError(
                f"`shrink` cannot carry removed units through {type(layer).__name__} "
                f"{layer.name!r}; supported between a gate and the next Dense/Conv2D: "
                "activations, dropout, pooling and Flatten."
            )
    shrunk = keras.Sequential(new_layers, name=f"{model.name}_shrunk")
    for layer, weights in zip(shrunk.layers, new_weights, strict=True):
        if weights:
            layer.set_weights(weights)
    return shrunk
