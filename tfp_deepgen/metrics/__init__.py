"""Metrics: calibration of predicted probabilities, and sample quality of implicit models.

- `calibration`: negative log-likelihood, Brier score, expected calibration
  error and interval coverage of a model's predictions, as plain functions
  and streaming `keras.metrics.Metric`s.
- `implicit`: models without a likelihood (GANs) are judged by their
  samples: mode coverage and high-quality fraction on mixtures with known
  modes, and the Fréchet distance between feature statistics.

>>> from tfp_deepgen import metrics
>>> metrics.brier_score.__module__, metrics.frechet_distance.__module__
('tfp_deepgen.metrics.calibration', 'tfp_deepgen.metrics.implicit')
"""

from tfp_deepgen.metrics.calibration import (
    BrierScore,
    CategoricalNegativeLogLikelihood,
    ExpectedCalibrationError,
    brier_score,
    expected_calibration_error,
    interval_coverage,
    negative_log_likelihood,
)
from tfp_deepgen.metrics.implicit import (
    MixtureQuality,
    classifier_frechet_distance,
    frechet_distance,
    mixture_quality,
)

__all__ = [
    "BrierScore",
    "CategoricalNegativeLogLikelihood",
    "ExpectedCalibrationError",
    "MixtureQuality",
    "brier_score",
    "classifier_frechet_distance",
    "expected_calibration_error",
    "frechet_distance",
    "interval_coverage",
    "mixture_quality",
    "negative_log_likelihood",
]
