"""Generative models as `keras.Model` subclasses trained with plain `fit()`.

>>> import tfp_deepgen as tdg
>>> tdg.models.VAE.__name__
'VAE'
"""

from tfp_deepgen.models.vae import VAE

__all__ = ["VAE"]
