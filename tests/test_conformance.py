"""Runs the conformance battery (tests/conformance.py) on every layer."""

from conformance import LayerCase, battery

from tfp_deepgen import layers, priors

_MIXTURE = priors.ScaleMixtureNormal(0.5, 1.0, 0.01)

CASES = [
    LayerCase(layers.DenseReparameterization, {"units": 3}, (5,)),
    LayerCase(layers.DenseFlipout, {"units": 3}, (5,)),
    LayerCase(layers.DenseLocalReparameterization, {"units": 3}, (5,)),
    LayerCase(
        layers.DenseFlipout,
        {"units": 3, "kernel_prior": _MIXTURE, "bias_prior": priors.Normal(0.0, 1.0)},
        (2, 5),
        id="DenseFlipout-mixture-prior-variational-bias-rank3",
    ),
    LayerCase(layers.Conv1DReparameterization, {"filters": 3, "kernel_size": 3}, (9, 2)),
    LayerCase(layers.Conv2DReparameterization, {"filters": 3, "kernel_size": 3}, (6, 6, 2)),
    LayerCase(layers.Conv3DReparameterization, {"filters": 2, "kernel_size": 2}, (4, 4, 4, 2)),
    LayerCase(layers.Conv1DFlipout, {"filters": 3, "kernel_size": 3, "padding": "same"}, (9, 2)),
    LayerCase(layers.Conv2DFlipout, {"filters": 3, "kernel_size": 3, "strides": 2}, (7, 7, 2)),
    LayerCase(layers.Conv3DFlipout, {"filters": 2, "kernel_size": 2}, (4, 4, 4, 2)),
    LayerCase(
        layers.Conv2DLocalReparameterization,
        {"filters": 3, "kernel_size": 3, "dilation_rate": 2, "bias_prior": _MIXTURE},
        (7, 7, 2),
    ),
]

TestLayerConformance = battery(CASES)
