"""Sample-quality metrics for implicit generative models (GANs), which have no likelihood.

- `mixture_quality`: on data drawn from a mixture with known modes (the 2-D
  ring and grid of Gaussians of Srivastava et al. 2017 and Lin et al. 2018),
  how many modes the samples cover and what fraction lies near a mode.
- `frechet_distance`: the Fréchet (Wasserstein-2) distance between Gaussians
  fitted to two sets of feature vectors (Heusel et al. 2017's FID uses
  Inception features); `classifier_frechet_distance` takes the features
  from any Keras feature extractor, e.g. a classifier trained on the data.

These are evaluation helpers: numpy arrays (or tensors) in, Python numbers
out, computed in float64.

Example:

>>> import numpy as np
>>> from tfp_deepgen import metrics
>>> modes = np.array([[0.0, 0.0], [4.0, 0.0]])
>>> samples = np.array([[0.1, 0.0], [0.0, -0.2], [9.0, 9.0]])
>>> quality = metrics.mixture_quality(samples, modes, stddev=0.1)
>>> quality.modes_covered, round(quality.high_quality_fraction, 3), quality.counts.tolist()
(1, 0.667, [2, 0])
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + [3.0, 0.0]
>>> round(metrics.frechet_distance(a, b))  # |mean difference|^2 = 9
9
"""

import typing

import numpy as np

from tfp_deepgen import _validation

__all__ = [
    "MixtureQuality",
    "classifier_frechet_distance",
    "frechet_distance",
    "mixture_quality",
]


class MixtureQuality(typing.NamedTuple):
    """What `mixture_quality` measures.

    Attributes:
        modes_covered: Number of modes with at least `min_count` high-quality
            samples.
        high_quality_fraction: Fraction of all samples within `num_stddevs`
            standard deviations of their nearest mode.
        counts: High-quality samples per mode, shape `(num_modes,)`.
    """

    modes_covered: int
    high_quality_fraction: float
    counts: np.ndarray


def _matrix(name, value, columns=None):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty matrix, shape (count, dimensions). "
            f"Received shape {array.shape}."
        )
    if columns is not None and array.shape[1] != columns:
        raise ValueError(
            f"`{name}` must have {columns} columns (one per dimension); got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite; it holds NaN or infinite values.")
    return array


def mixture_quality(samples, modes, stddev, num_stddevs=3.0, min_count=1):
    """Mode coverage and high-quality fraction of samples from a Gaussian mixture model.

    Each sample is assigned to its nearest mode (Euclidean distance). It is
    *high quality* when that distance is at most `num_stddevs * stddev`
    (3 standard deviations in VEEGAN's and PacGAN's tables), and a mode is
    *covered* when at least `min_count` high-quality samples are assigned to
    it.

    Args:
        samples: Generated points, shape `(count, dimensions)`.
        modes: The mixture's component means, shape `(num_modes, dimensions)`.
        stddev: The components' (isotropic) standard deviation, > 0.
        num_stddevs: Radius of a mode's neighbourhood in standard
            deviations, > 0.
        min_count: High-quality samples a mode needs to count as covered,
            >= 1.

    Returns:
        A `MixtureQuality(modes_covered, high_quality_fraction, counts)`.
    """
    modes = _matrix("modes", modes)
    samples = _matrix("samples", samples, columns=modes.shape[1])
    stddev = _validation.positive_float("stddev", stddev)
    num_stddevs = _validation.positive_float("num_stddevs", num_stddevs)
    min_count = _validation.positive_int("min_count", min_count)
    squared = np.sum(np.square(samples[:, None, :] - modes[None, :, :]), axis=-1)
    nearest = np.argmin(squared, axis=1)
    distance = np.sqrt(squared[np.arange(len(samples)), nearest])
    high_quality = distance <= num_stddevs * stddev
    counts = np.bincount(nearest[high_quality], minlength=len(modes))
    return MixtureQuality(
        modes_covered=int(np.sum(counts >= min_count)),
        high_quality_fraction=float(np.mean(high_quality)),
        counts=counts,
    )


def _psd_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two sets of feature vectors.

    `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)`,
    the squared Wasserstein-2 distance between N(mu_a, S_a) and N(mu_b, S_b)
    with the sample means and covariances. The matrix square roots are taken
    through symmetric eigendecompositions, so the result is real and >= 0
    up to rounding even for singular covariances.

    Args:
        features_a: Shape `(count_a, dimensions)`, count_a >= 2.
        features_b: Shape `(count_b, dimensions)`, count_b >= 2.

    Returns:
        A float.
    """
    a = _matrix("features_a", features_a)
    b = _matrix("features_b", features_b, columns=a.shape[1])
    for name, array in (("features_a", a), ("features_b", b)):
        if len(array) < 2:
            raise ValueError(f"`{name}` needs at least 2 rows to estimate a covariance.")
    covariance_a = np.atleast_2d(np.cov(a, rowvar=False))
    covariance_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(covariance_a)
    cross = np.linalg.eigvalsh(root_a @ covariance_b @ root_a)
    trace_cross = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    mean_term = np.sum(np.square(a.mean(0) - b.mean(0)))
    distance = mean_term + np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * trace_cross
    return float(max(distance, 0.0))


def classifier_frechet_distance(feature_extractor, real, generated, batch_size=256):
    """Fréchet distance between the features of real and generated examples.

    The features come from `feature_extractor`, typically a classifier
    trained on the real data cut at its last hidden layer (the FID of
    Heusel et al. 2017 uses Inception-v3's pool layer the same way). A
    smaller distance means the generated examples' features are distributed
    more like the real ones; compare only numbers from the same extractor.

    Args:
        feature_extractor: A Keras model (or callable) mapping a batch of
            examples to feature vectors (flattened if not already).
        real: Real examples.
        generated: Generated examples of the same shape.
        batch_size: Examples per forward pass of the extractor.

    Returns:
        A float.
    """
    batch_size = _validation.positive_int("batch_size", batch_size)

    def features(x):
        if hasattr(feature_extractor, "predict"):
            out = feature_extractor.predict(x, batch_size=batch_size, verbose=0)
        else:
            out = np.concatenate(
                [
                    np.asarray(feature_extractor(x[i : i + batch_size]))
                    for i in range(0, len(x), batch_size)
                ]
            )
        return np.reshape(np.asarray(out, np.float64), (len(x), -1))

    return frechet_distance(features(np.asarray(real)), features(np.asarray(generated)))
