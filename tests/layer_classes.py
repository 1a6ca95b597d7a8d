"""The variational layer classes, grouped, for parametrised tests."""

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
