"""Distribution-output heads: `y ~ p(y | NN(x))` as the last layer of a model.

A head emits one parameter tensor; `head.distribution(params)` is the TFP
distribution and `head.loss` its negative log-likelihood:

>>> import keras, tfp_deepgen as tdg
>>> head = tdg.heads.Poisson()
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(head.input_size), head])
>>> model.compile("adam", loss=head.loss)
"""

from tfp_deepgen.heads.base import DistributionHead, final_head, final_layer
from tfp_deepgen.heads.continuous import (
    Gamma,
    IndependentNormal,
    MixtureNormal,
    MultivariateNormalTriL,
    StudentT,
)
from tfp_deepgen.heads.discrete import (
    Categorical,
    IndependentBernoulli,
    NegativeBinomial,
    OneHotCategorical,
    Poisson,
)
from tfp_deepgen.heads.distribution_lambda import DistributionLambda
from tfp_deepgen.heads.distribution_model import DistributionModel
from tfp_deepgen.heads.mixture import MixtureSameFamily
from tfp_deepgen.heads.plain_outputs import (
    BernoulliProbabilities,
    CategoricalProbabilities,
    PointPrediction,
    output_head,
)

__all__ = [
    "DistributionHead",
    "final_head",
    "final_layer",
    "output_head",
    "DistributionModel",
    "DistributionLambda",
    "IndependentNormal",
    "IndependentBernoulli",
    "Categorical",
    "OneHotCategorical",
    "Poisson",
    "NegativeBinomial",
    "Gamma",
    "StudentT",
    "MixtureNormal",
    "MixtureSameFamily",
    "MultivariateNormalTriL",
    "PointPrediction",
    "CategoricalProbabilities",
    "BernoulliProbabilities",
]
