"""Generative models as `keras.Model` subclasses trained with plain `fit()`.

>>> import tfp_deepgen as tdg
>>> tdg.models.VAE.__name__
'VAE'
"""

from tfp_deepgen.models import gan_losses
from tfp_deepgen.models.conditional_vae import ConditionalVAE
from tfp_deepgen.models.deep_exponential_family import DeepExponentialFamily
from tfp_deepgen.models.gan import GAN
from tfp_deepgen.models.semi_supervised_vae import UNLABELLED, SemiSupervisedVAE
from tfp_deepgen.models.vae import VAE

__all__ = [
    "VAE",
    "ConditionalVAE",
    "SemiSupervisedVAE",
    "UNLABELLED",
    "DeepExponentialFamily",
    "GAN",
    "gan_losses",
]
