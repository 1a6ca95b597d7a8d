"""tfp_deepgen: probabilistic deep learning for Keras 3 on TensorFlow Probability."""

import os as _os

# Keras 3 must run on TensorFlow: everything here is built on TFP's TF substrate.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tfp_deepgen needs the TensorFlow backend of Keras 3, but KERAS_BACKEND is "
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from tfp_deepgen import (  # noqa: E402
    callbacks,
    datasets,
    distribute,
    export,
    heads,
    inference,
    layers,
    losses,
    metrics,
    models,
    posteriors,
    predictive,
    priors,
    pruning,
    random,
    stick_breaking,
    structure,
)

# Keras 3's trainer under tf.distribute (see tfp_deepgen.distribute); a no-op elsewhere.
distribute.patch_keras_trainer()

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "datasets",
    "distribute",
    "export",
    "heads",
    "inference",
    "layers",
    "losses",
    "metrics",
    "models",
    "posteriors",
    "predictive",
    "priors",
    "pruning",
    "random",
    "stick_breaking",
    "structure",
    "__version__",
]
