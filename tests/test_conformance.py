"""Runs the conformance battery (tests/conformance.py) on every layer."""

import keras
from conformance import LayerCase, battery

from tfp_deepgen import heads, layers, priors

_MIXTURE = priors.ScaleMixtureNormal(0.5, 1.0, 0.01)

CASES = [
    LayerCase(layers.DenseReparameterization, {"units": 3}, (5,)),
    LayerCase(layers.DenseFlipout, {"units": 3}, (5,)),
    LayerCase(layers.DenseLocalReparameterization, {"units": 3}, (5,)),
    LayerCase(layers.DenseVariational, {"units": 3}, (5,)),
    LayerCase(
        layers.DenseVariational,
        {"units": 3, "posterior": "full_covariance", "prior": priors.TrainableNormal()},
        (2, 5),
        id="DenseVariational-full-covariance-trainable-prior-rank3",
    ),
    LayerCase(
        layers.DenseVariational,
        {"units": 2, "prior": priors.TrainableNormal(learn_scale=True), "use_bias": False},
        (4,),
        id="DenseVariational-learned-prior-scale-no-bias",
    ),
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
    LayerCase(
        layers.VariationalGaussianProcess,
        {
            "units": 2,
            "num_inducing_points": 5,
            "kernel": "matern_three_halves",
            "amplitude_init": 0.1,
            "mean": "constant",
        },
        (3,),
    ),
]

DROPOUT_CASES = [
    LayerCase(layers.MCDropout, {"rate": 0.2}, (5,), has_kl=False, served_tolerance=20.0),
    LayerCase(
        layers.MCDropout,
        {"rate": 0.5, "noise_shape": (None, 1, 3)},
        (4, 3),
        id="MCDropout-shared-noise-shape",
        has_kl=False,
        served_tolerance=20.0,
    ),
    LayerCase(
        layers.GaussianDropout,
        {"rate": 0.2, "at_inference": True},
        (5,),
        has_kl=False,
        served_tolerance=20.0,
    ),
    LayerCase(
        layers.DenseVariationalDropout,
        {"units": 3, "initial_rate": 0.01},
        (5,),
        served_tolerance=1.0,
    ),
    LayerCase(
        layers.DenseVariationalDropout,
        {"units": 3, "alpha_per": "layer", "initial_rate": 0.01},
        (2, 5),
        id="DenseVariationalDropout-per-layer-rank3",
        served_tolerance=1.0,
    ),
    LayerCase(layers.DenseSparseVariationalDropout, {"units": 3}, (5,)),
    LayerCase(
        layers.Conv2DSparseVariationalDropout,
        {"filters": 3, "kernel_size": 3, "padding": "same"},
        (6, 6, 2),
        served_tolerance=0.5,
    ),
]

IBP_CASES = [
    # Gates open with probability 0.5, so two seeds' gate patterns surely differ.
    LayerCase(layers.IBPGate, {"initial_probability": 0.5}, (6,), served_tolerance=20.0),
    LayerCase(
        layers.IBPGate,
        {"initial_probability": 0.5},
        (5, 5, 4),
        id="IBPGate-over-channels",
        served_tolerance=20.0,
    ),
    LayerCase(
        layers.IBPDense,
        {"units": 6, "activation": "relu", "initial_probability": 0.5},
        (5,),
        served_tolerance=20.0,
    ),
    LayerCase(
        layers.IBPDense,
        {"units": 6, "kernel_prior": priors.Normal(0.0, 1.0), "initial_probability": 0.5},
        (5,),
        id="IBPDense-variational-weights",
        served_tolerance=20.0,
    ),
]

HORSESHOE_CASES = [
    LayerCase(
        layers.DenseHorseshoe, {"units": 4, "activation": "tanh"}, (5,), served_tolerance=5.0
    ),
]


def _head_config(head):
    # A config, not the head: every layer the battery builds gets its own head.
    return keras.saving.serialize_keras_object(head)


LATENT_CASES = [
    LayerCase(
        layers.KLDivergenceAddLoss,
        {"head": _head_config(heads.IndependentNormal(2, scale="homoscedastic"))},
        (2,),
        id="KLDivergenceAddLoss-homoscedastic-normal",
        served_tolerance=20.0,
    ),
    # The Monte-Carlo KL of a prior like _MIXTURE draws per example, so a
    # mirrored batch split draws other noise than one device: its checks are
    # in tests/test_kl_divergence_layer.py.
    LayerCase(
        layers.KLDivergenceAddLoss,
        {
            "head": _head_config(heads.IndependentNormal(2, scale="homoscedastic")),
            "prior": priors.Normal(0.5, 2.0),
        },
        (3, 2),
        id="KLDivergenceAddLoss-wide-prior-rank3",
        served_tolerance=20.0,
    ),
]

#: Every layer case; other test modules (multi-worker, accelerator readiness) reuse it.
ALL_CASES = CASES + DROPOUT_CASES + IBP_CASES + HORSESHOE_CASES + LATENT_CASES

TestLayerConformance = battery(ALL_CASES)
