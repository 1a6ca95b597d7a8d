"""The variational layer classes, grouped, and helpers to set their posteriors."""

import numpy as np

from tfp_deepgen import layers

DENSE = [
    layers.DenseReparameterization,
    layers.DenseFlipout,
    layers.DenseLocalReparameterization,
]
CONV = [
    layers.Conv1DReparameterization,
    layers.Conv2DReparameterization,
    layers.Conv3DReparameterization,
    layers.Conv1DFlipout,
    layers.Conv2DFlipout,
    layers.Conv3DFlipout,
    layers.Conv2DLocalReparameterization,
]
ALL = DENSE + CONV


def variable(layer, name):
    """The one variable of `layer` called `name`."""
    (var,) = [v for v in layer.weights if v.name == name]
    return var


def set_posterior(layer, prefix, loc, scale):
    """Sets the mean-field `q(prefix)` to N(loc, scale^2) through its variables."""
    variable(layer, f"{prefix}_loc").assign(np.asarray(loc, np.float32))
    log_scale = np.log(np.asarray(scale, np.float64))
    variable(layer, f"{prefix}_log_scale").assign(log_scale.astype(np.float32))
