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
>>> model.layers[0].gate_logits.assign([6.0, -6.0, 6.0, -6.0, -6.0, 6.0])  # doctest: +ELLIPSIS
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

from tfp_deepgen.layers.base import stochastic_layers
from tfp_deepgen.layers.dense import DenseLocalReparameterization
from tfp_deepgen.layers.ibp import IBPDense, IBPGate

__all__ = ["active_widths", "shrink"]

# Weightless layers that act on each channel separately and keep a zero
# channel zero, so a removed unit stays removed after them. Activations are
# checked separately: only those with f(0) = 0 qualify.
_FEATUREWISE = (
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.AveragePooling1D,
    keras.layers.ReLU,
)


def _keeps_zero(layer):
    """Whether `layer` maps removed (zero) units to zero, channel by channel."""
    if isinstance(layer, keras.layers.Activation):
        return float(keras.ops.convert_to_numpy(layer(np.zeros((1, 1), "float32")))[0, 0]) == 0.0
    return isinstance(layer, _FEATUREWISE)


def _is_plain(layer, cls):
    # Exactly the Keras class: a subclass may compute something `shrink` cannot rebuild.
    return type(layer) is cls


def active_widths(model, threshold=None):
    """`{layer name: number of active units}` for every IBP gate of `model`."""
    return {
        layer.name: layer.active_units(threshold)
        for layer in stochastic_layers(model)
        if isinstance(layer, IBPGate)
    }


def _dense_weights(layer):
    """Kernel and bias (posterior means for variational weights) as NumPy arrays."""
    if isinstance(layer, IBPDense):
        layer = layer.dense
    if isinstance(layer, DenseLocalReparameterization):
        kernel = layer.kernel_posterior_params.loc.numpy()
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
    channels-last `Conv2D` each optionally followed by an `IBPGate`, with
    dropout, pooling, `Flatten` and activations that map 0 to 0 (relu, tanh,
    ...) between a gate and the next Dense/Conv2D, and any layers (e.g. a
    `tfp_deepgen.heads` head) after that. Anything else raises a ValueError.

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
            previous = layers[i - 1] if i else None
            if not (
                _is_plain(previous, keras.layers.Dense) or _is_plain(previous, keras.layers.Conv2D)
            ):
                raise ValueError(
                    f"`shrink` handles an IBPGate right after a keras Dense or Conv2D layer; "
                    f"{layer.name!r} follows {previous.name if i else 'the input'!r}."
                )
            if getattr(previous, "data_format", "channels_last") != "channels_last":
                raise ValueError(
                    f"`shrink` supports channels_last convolutions only; {previous.name!r} "
                    f"has data_format={previous.data_format!r}."
                )
            masks[i - 1] = layer.active_mask(threshold)
    for i, mask in masks.items():
        if not mask.any():
            raise ValueError(
                f"Layer {layers[i].name!r} keeps no active units at this threshold; "
                "a shrunk network would have a layer of width 0."
            )

    new_layers, new_weights = [keras.Input(model.input_shape[1:])], []
    kept_inputs = None  # indices of the previous layer's outputs still present
    for i, layer in enumerate(layers):
        if isinstance(layer, IBPGate) and not isinstance(layer, IBPDense):
            continue
        mask = masks.get(i)
        if isinstance(layer, IBPDense) or _is_plain(layer, keras.layers.Dense):
            kernel, bias = _dense_weights(layer)
            if kept_inputs is not None:
                kernel = kernel[kept_inputs]
            if mask is not None:
                kernel, bias = kernel[:, mask], None if bias is None else bias[mask]
            new_layers.append(_plain_dense(layer, kernel.shape[1], layer.activation))
            new_weights.append([kernel] + ([] if bias is None else [bias]))
            kept_inputs = None if mask is None else np.flatnonzero(mask)
        elif _is_plain(layer, keras.layers.Conv2D):
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
        elif kept_inputs is None or _keeps_zero(layer):
            new_layers.append(layer.__class__.from_config(layer.get_config()))
            new_weights.append(layer.get_weights())
        else:
            raise ValueError(
                f"`shrink` cannot carry removed units through {type(layer).__name__} "
                f"{layer.name!r}; supported between a gate and the next Dense/Conv2D: "
                "activations with f(0) = 0, dropout, pooling and Flatten."
            )
    shrunk = keras.Sequential(new_layers, name=f"{model.name}_shrunk")
    for layer, weights in zip(shrunk.layers, new_weights, strict=True):
        if weights:
            layer.set_weights(weights)
    return shrunk
