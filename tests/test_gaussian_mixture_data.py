import numpy as np
import pytest

from tfp_deepgen import datasets, metrics

RING_MODES = [(np.cos(2 * np.pi * i / 8), np.sin(2 * np.pi * i / 8)) for i in range(8)]
GRID_MODES = [(i, j) for i in (-4, -2, 0, 2, 4) for j in (-4, -2, 0, 2, 4)]


@pytest.mark.parametrize(
    "name, modes, stddev", [("ring", RING_MODES, 0.01), ("grid", GRID_MODES, 0.05)]
)
def test_shapes_modes_and_stddev(name, modes, stddev):
    samples, got_modes, got_stddev = datasets.gaussian_mixture_2d(name, 20000, seed=1)
    assert samples.shape == (20000, 2) and samples.dtype == np.float32
    assert got_modes.shape == (len(modes), 2) and got_modes.dtype == np.float32
    np.testing.assert_allclose(got_modes, modes, atol=1e-6)
    assert got_stddev == stddev
    # Each point's offset from its nearest mode has the stated stddev per dimension.
    nearest = np.argmin(((samples[:, None] - got_modes[None]) ** 2).sum(-1), axis=1)
    offsets = samples - got_modes[nearest]
    np.testing.assert_allclose(offsets.std(axis=0), stddev, rtol=0.03)
    np.testing.assert_allclose(offsets.mean(axis=0), 0.0, atol=0.05 * stddev)
    # Uniform weights: every component gets about its share of the points.
    shares = np.bincount(nearest, minlength=len(modes)) / len(samples)
    np.testing.assert_allclose(shares, 1 / len(modes), atol=0.015)
    # The benchmark's own metric: data covers every mode, almost all within 3 stddevs.
    quality = metrics.mixture_quality(samples[:2500], got_modes, got_stddev)
    assert quality.modes_covered == len(modes)
    assert quality.high_quality_fraction > 0.98


def test_default_is_the_ring_and_seeds_repeat():
    samples, modes, stddev = datasets.gaussian_mixture_2d(num_samples=100)
    assert modes.shape == (8, 2) and stddev == 0.01
    again, _, _ = datasets.gaussian_mixture_2d("ring", 100, seed=0)
    np.testing.assert_array_equal(samples, again)
    other, _, _ = datasets.gaussian_mixture_2d("ring", 100, seed=1)
    assert not np.array_equal(samples, other)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(name="spiral"), "name"),
        (dict(name=8), "name"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=2.5), "num_samples"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        datasets.gaussian_mixture_2d(**kwargs)
