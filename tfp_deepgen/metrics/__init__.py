"""Metrics: calibration of predicted probabilities, and sample quality of implicit models.

- `calibration`: negative log-likelihood, Brier score, expected calibration
  error and interval coverage of a model's predictions, as plain functions
  and streaming `keras.metrics.Metric`s.
- `head_metrics`: any Keras metric (`"root_mean_squared_error"`,
  `"accuracy"`, ...) on a distribution head's mean or class probabilities
  instead of its raw parameters: `HeadMetric`, and `for_head` for several.
- `implicit`: models without a likelihood (GANs) are judged by their
  samples: mode coverage and high-quality fraction on mixtures with known
  modes, and the Fréchet distance between feature statistics.

>>> from tfp_deepgen import metrics
>>> metrics.brier_score.__module__, metrics.frechet_distance.__module__
('tfp_deepgen.metrics.calibration', 'tfp_deepgen.metrics.implicit')
>>> metrics.HeadMetric.__module__
'tfp_deepgen.metrics.head_metrics'
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
from tfp_deepgen.metrics.head_metrics import HeadMetric, for_head
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
    "HeadMetric",
    "MixtureQuality",
    "brier_score",
    "classifier_frechet_distance",
    "expected_calibration_error",
    "for_head",
    "frechet_distance",
    "interval_coverage",
    "mixture_quality",
    "negative_log_likelihood",
]
