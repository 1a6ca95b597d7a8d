"""tdg.metrics for implicit models: mixture mode quality and the Fréchet distance."""

import keras
import numpy as np
import pytest
from scipy import linalg

from tfp_deepgen import metrics

RING = np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)


def test_samples_from_the_mixture_itself_cover_every_mode_at_the_gaussian_rate():
    rng = np.random.default_rng(0)
    samples = RING[rng.integers(8, size=20000)] + 0.01 * rng.normal(size=(20000, 2))
    quality = metrics.mixture_quality(samples, RING, stddev=0.01)
    assert quality.modes_covered == 8
    # A 2-D standard normal lies within radius 3 with probability 1 - exp(-9/2).
    np.testing.assert_allclose(quality.high_quality_fraction, 1 - np.exp(-4.5), atol=0.003)
    assert quality.counts.sum() == round(quality.high_quality_fraction * 20000)


def test_a_collapsed_generator_covers_one_mode():
    samples = RING[3] + 0.005 * np.random.default_rng(0).normal(size=(500, 2))
    quality = metrics.mixture_quality(samples, RING, stddev=0.01)
    assert quality.modes_covered == 1
    assert quality.high_quality_fraction == 1.0
    assert quality.counts.tolist() == [0, 0, 0, 500, 0, 0, 0, 0]


def test_counts_thresholds_and_min_count_by_hand():
    modes = np.array([[0.0, 0.0], [10.0, 0.0]])
    # Distances to the nearest mode: 0.2, 0.35, 0.25 (mode 1), 5.0 (mode 0).
    samples = np.array([[0.2, 0.0], [0.0, 0.35], [9.75, 0.0], [5.0, 0.0]])
    quality = metrics.mixture_quality(samples, modes, stddev=0.1)
    assert quality.counts.tolist() == [1, 1]  # 0.35 > 3 * 0.1 is not high quality
    assert quality.high_quality_fraction == 0.5
    wider = metrics.mixture_quality(samples, modes, stddev=0.1, num_stddevs=4.0)
    assert wider.counts.tolist() == [2, 1]
    assert metrics.mixture_quality(samples, modes, stddev=0.1, num_stddevs=4.0, min_count=2)[0] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": np.zeros((4, 3))}, "`samples` must have 2 columns"),
        ({"samples": np.zeros(4)}, "`samples` must be a non-empty matrix"),
        ({"samples": np.full((2, 2), np.nan)}, "`samples` must be finite"),
        ({"stddev": 0.0}, "`stddev`"),
        ({"num_stddevs": -1.0}, "`num_stddevs`"),
        ({"min_count": 0}, "`min_count`"),
    ],
)
def test_mixture_quality_refuses_bad_arguments(kwargs, match):
    arguments = {"samples": np.zeros((4, 2)), "modes": RING, "stddev": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        metrics.mixture_quality(**arguments)


def _frechet_by_scipy(a, b):
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)


def test_frechet_distance_matches_scipys_matrix_square_root():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.5
    np.testing.assert_allclose(metrics.frechet_distance(a, b), _frechet_by_scipy(a, b), rtol=1e-6)


def test_frechet_distance_in_one_dimension_is_mean_and_stddev_gaps_squared():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 1)), 3.0 * rng.normal(size=(200, 1)) + 2.0
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=1e-9)


def test_frechet_distance_of_a_set_to_itself_is_zero_even_with_singular_covariance():
    a = np.random.default_rng(2).normal(size=(5, 20))  # rank-4 covariance in 20 dimensions
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="`features_b` must have 20 columns"):
        metrics.frechet_distance(a, a[:, :3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.frechet_distance(a[:1], a)


def test_classifier_frechet_distance_uses_the_extractors_features():
    extractor = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh")])
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 4)).astype("float32")
    generated = (rng.normal(size=(200, 4)) + 0.3).astype("float32")
    expected = metrics.frechet_distance(extractor(real).numpy(), extractor(generated).numpy())
    by_model = metrics.classifier_frechet_distance(extractor, real, generated, batch_size=64)
    by_callable = metrics.classifier_frechet_distance(
        lambda x: extractor(x).numpy(), real, generated, batch_size=64
    )
    np.testing.assert_allclose([by_model, by_callable], expected, rtol=1e-5)
