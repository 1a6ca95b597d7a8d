"""Posteriors beyond variational inference, for ordinary Keras models.

Each method approximates the posterior over the weights of a deterministic
`keras.Model` (plain Keras layers ending in a `tfp_deepgen.heads` head) and
returns a `WeightPosterior`: a Keras model that draws weights for it, which
`tdg.predictive`, `tdg.metrics` and `tdg.export` take as they take any model.

- `weight_posterior`: the base class `WeightPosterior`.
- `ensemble`: `DeepEnsemble`, M members trained by one `fit`, as a mixture.
- `hmc`: `HMC` and `NUTS`, full-batch `tfp.mcmc` sampling of small models.
- `kfac`, `kronecker`: KFAC factors of Dense / Conv layers and the
  `KroneckerFactors` structure the `kron` Laplace uses.
- `laplace`: `Laplace`, post-hoc Laplace approximations (GGN / empirical
  Fisher curvature in `curvature`, full / diag / kron in `laplace_structures`).
- `sample_set`: `SampleSet`, a posterior held as N stored weight samples.
- `sgld`, `step_size`, `sample_collector`: the SG-MCMC optimizers `SGLD`,
  `pSGLD`, cSGLD's `CyclicalStepSize` and the `CollectSamples` callback.
- `swag`, `swag_posterior`: SWAG (Maddox et al. 2019), the callback
  collecting SGD's moments and its Gaussian posterior; MultiSWAG mixtures.
- `subsets`: which weights a post-hoc posterior covers (`"all"`,
  `"last_layer"`).

Example:

>>> import tfp_deepgen as tdg
>>> issubclass(tdg.inference.SampleSet, tdg.inference.WeightPosterior)
True
"""

from tfp_deepgen.inference.ensemble import DeepEnsemble
from tfp_deepgen.inference.hmc import HMC, NUTS
from tfp_deepgen.inference.kronecker import KroneckerFactors
from tfp_deepgen.inference.laplace import Laplace
from tfp_deepgen.inference.sample_collector import CollectSamples
from tfp_deepgen.inference.sample_set import SampleSet
from tfp_deepgen.inference.sgld import SGLD, pSGLD
from tfp_deepgen.inference.step_size import CyclicalStepSize
from tfp_deepgen.inference.subsets import SUBSETS, posterior_variables
from tfp_deepgen.inference.swag import SWAG
from tfp_deepgen.inference.swag_posterior import SWAGPosterior
from tfp_deepgen.inference.weight_posterior import (
    PosteriorDraws,
    WeightPosterior,
    flat_values,
    split_flat,
)

__all__ = [
    "HMC",
    "NUTS",
    "SGLD",
    "SUBSETS",
    "SWAG",
    "CollectSamples",
    "CyclicalStepSize",
    "DeepEnsemble",
    "KroneckerFactors",
    "Laplace",
    "PosteriorDraws",
    "SWAGPosterior",
    "SampleSet",
    "WeightPosterior",
    "flat_values",
    "pSGLD",
    "posterior_variables",
    "split_flat",
]
