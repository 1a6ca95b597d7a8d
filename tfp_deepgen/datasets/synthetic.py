"""Synthetic data generated on the spot: GAN mode-collapse mixtures and teacher networks.

Example:

>>> import tfp_deepgen as tdg
>>> samples, modes, stddev = tdg.datasets.gaussian_mixture_2d("ring", 100, seed=0)
>>> samples.shape, modes.shape, stddev
((100, 2), (8, 2), 0.01)
"""

import numpy as np

from tfp_deepgen import _validation
from tfp_deepgen.datasets._common import fixed_seed

__all__ = ["gaussian_mixture_2d", "teacher_network_regression"]


# The 2-D mixtures of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018):
# (modes, stddev) per name.
_MIXTURES_2D = {
    "ring": (
        np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], 1),
        0.01,
    ),
    "grid": (np.array([(i, j) for i in range(-4, 5, 2) for j in range(-4, 5, 2)], float), 0.05),
}


def gaussian_mixture_2d(name="ring", num_samples=10000, seed=0):
    """Samples from the 2-D Gaussian mixtures of the GAN mode-collapse benchmark.

    The synthetic data of VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et
    al., 2018; their `synthetic_data_experiments` code), generated here, not
    read from a package. Every component has the same weight and an
    isotropic standard deviation:

    - `"ring"`: 8 Gaussians at `(cos 2 pi i / 8, sin 2 pi i / 8)`,
      i = 0..7, on the unit circle, stddev 0.01;
    - `"grid"`: 25 Gaussians at `(i, j)`, i, j in {-4, -2, 0, 2, 4}
      (row-major, i outer), stddev 0.05.

    Score generated samples against the returned modes with
    `tdg.metrics.mixture_quality(samples, modes, stddev)`.

    Args:
        name: `"ring"` or `"grid"`.
        num_samples: Positive integer, the number of points.
        seed: Integer >= 0 fixing the draw; same seed, same points.

    Returns:
        `(samples, modes, stddev)`: float32 points `(num_samples, 2)`, each
        drawn from a uniformly chosen component; float32 component means
        `(num_modes, 2)`; and the components' stddev (a float).

    Example:

    >>> import tfp_deepgen as tdg
    >>> samples, modes, stddev = tdg.datasets.gaussian_mixture_2d("grid", 1000, seed=0)
    >>> samples.shape, samples.dtype.name, modes.shape, stddev
    ((1000, 2), 'float32', (25, 2), 0.05)
    """
    name = _validation.one_of("name", name, tuple(_MIXTURES_2D))
    num_samples = _validation.positive_int("num_samples", num_samples)
    rng = np.random.default_rng(fixed_seed(seed))
    modes, stddev = _MIXTURES_2D[name]
    components = rng.integers(len(modes), size=num_samples)
    samples = modes[components] + stddev * rng.standard_normal((num_samples, 2))
    return samples.astype(np.float32), modes.astype(np.float32), stddev


def teacher_network_regression(
    hidden_units,
    num_train=2000,
    num_test=500,
    num_inputs=4,
    noise=0.1,
    min_unit_stddev=None,
    seed=0,
):
    """Regression data from a random one-hidden-layer tanh network of known width.

    `y = tanh(x W + b) v + noise * eps` with `x, eps ~ N(0, 1)`, `W` entries
    `N(0, 1.5^2)`, `b` entries `N(0, 0.5^2)` and `v` entries `N(0, 1)`: the
    benchmark of width learning (`tdg.layers.IBPDense`,
    `tdg.layers.DenseHorseshoe`), whose answer is `hidden_units`. A drawn
    unit can move `y` by far less than the noise, and then no learner can
    see it from the data; teachers are redrawn until every unit's
    contribution `v_k tanh(x W_k + b_k)` has a standard deviation of at least
    `min_unit_stddev`.

    Args:
        hidden_units: Positive integer, the teacher's width.
        num_train, num_test: Positive integers, the sizes of the two splits.
        num_inputs: Positive integer, the dimension of `x`.
        noise: Standard deviation of the noise, > 0.
        min_unit_stddev: Smallest contribution of a unit, >= 0; defaults to
            `2 * noise`. 0 keeps the first teacher drawn.
        seed: Integer >= 0 fixing the teacher and the data.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 inputs
        `(n, num_inputs)` and targets `(n, 1)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x, y), (x_test, y_test) = tdg.datasets.teacher_network_regression(3, seed=0)
    >>> x.shape, y.shape, x_test.shape
    ((2000, 4), (2000, 1), (500, 4))
    """
    hidden_units = _validation.positive_int("hidden_units", hidden_units)
    num_train = _validation.positive_int("num_train", num_train)
    num_test = _validation.positive_int("num_test", num_test)
    num_inputs = _validation.positive_int("num_inputs", num_inputs)
    noise = _validation.positive_float("noise", noise)
    if min_unit_stddev is None:
        min_unit_stddev = 2.0 * noise
    min_unit_stddev = _validation.non_negative_float("min_unit_stddev", min_unit_stddev)
    rng = np.random.default_rng(fixed_seed(seed))
    probe = rng.standard_normal((20000, num_inputs))
    for _ in range(1000):
        weights = 1.5 * rng.standard_normal((num_inputs, hidden_units))
        bias = 0.5 * rng.standard_normal(hidden_units)
        out = rng.standard_normal(hidden_units)
        effects = np.std(np.tanh(probe @ weights + bias) * out, axis=0)
        if effects.min() >= min_unit_stddev:
            break
    else:
        raise ValueError(
            f"No teacher with {hidden_units} units each moving y by a stddev of at least "
            f"min_unit_stddev={min_unit_stddev} in 1000 draws; lower `min_unit_stddev`."
        )

    def split(n):
        x = rng.standard_normal((n, num_inputs))
        y = np.tanh(x @ weights + bias) @ out + noise * rng.standard_normal(n)
        return x.astype(np.float32), y[:, None].astype(np.float32)

    return split(num_train), split(num_test)
