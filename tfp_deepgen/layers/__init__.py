"""Drop-in Keras 3 layers with weight uncertainty."""

from tfp_deepgen.layers.base import (
    InferenceState,
    StackedBatch,
    StochasticLayer,
    VariationalLayer,
    inference_state,
    monte_carlo_mode,
    sampling_mode,
    stochastic_layers,
)
from tfp_deepgen.layers.conv import (
    Conv1DFlipout,
    Conv1DReparameterization,
    Conv2DFlipout,
    Conv2DLocalReparameterization,
    Conv2DReparameterization,
    Conv3DFlipout,
    Conv3DReparameterization,
)
from tfp_deepgen.layers.dense import (
    DenseFlipout,
    DenseLocalReparameterization,
    DenseReparameterization,
)
from tfp_deepgen.layers.dense_variational import DenseVariational
from tfp_deepgen.layers.dropout import GaussianDropout, MCDropout
from tfp_deepgen.layers.horseshoe import DenseHorseshoe
from tfp_deepgen.layers.ibp import IBPDense, IBPGate
from tfp_deepgen.layers.kl_divergence import KLDivergenceAddLoss
from tfp_deepgen.layers.scale_snapshot import PosteriorScaleSnapshot
from tfp_deepgen.layers.variational_dropout import (
    Conv2DSparseVariationalDropout,
    DenseSparseVariationalDropout,
    DenseVariationalDropout,
)
from tfp_deepgen.layers.variational_gp import VariationalGaussianProcess

__all__ = [
    "StochasticLayer",
    "VariationalLayer",
    "InferenceState",
    "StackedBatch",
    "inference_state",
    "monte_carlo_mode",
    "sampling_mode",
    "stochastic_layers",
    "DenseReparameterization",
    "DenseFlipout",
    "DenseLocalReparameterization",
    "DenseVariational",
    "Conv1DReparameterization",
    "Conv2DReparameterization",
    "Conv3DReparameterization",
    "Conv1DFlipout",
    "Conv2DFlipout",
    "Conv3DFlipout",
    "Conv2DLocalReparameterization",
    "KLDivergenceAddLoss",
    "MCDropout",
    "GaussianDropout",
    "DenseVariationalDropout",
    "DenseSparseVariationalDropout",
    "Conv2DSparseVariationalDropout",
    "IBPGate",
    "IBPDense",
    "DenseHorseshoe",
    "PosteriorScaleSnapshot",
    "VariationalGaussianProcess",
]
