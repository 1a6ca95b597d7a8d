"""The layers' samplers: exact +-1 signs and standard normal draws, deterministic per seed."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfp_deepgen import random

N = 1_000_000


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16, tf.float64])
def test_rademacher_is_exactly_plus_minus_one(dtype):
    signs = random.rademacher(tf.constant([1000, 1000]), tf.constant([4, 2]), dtype)
    assert signs.dtype == dtype
    assert signs.shape == (1000, 1000)
    values = signs.numpy().astype(np.float64)
    assert set(np.unique(values).tolist()) == {-1.0, 1.0}
    # The mean of n fair signs has standard error 1/sqrt(n).
    assert abs(values.mean()) < 4 / math.sqrt(N)
    again = random.rademacher(tf.constant([1000, 1000]), tf.constant([4, 2]), dtype)
    np.testing.assert_array_equal(values, again.numpy().astype(np.float64))
    other = random.rademacher(tf.constant([1000, 1000]), tf.constant([4, 3]), dtype)
    assert np.mean(values == other.numpy().astype(np.float64)) < 0.51


@pytest.mark.parametrize("lag", [1, 2, 31, 32, 33])
def test_rademacher_signs_are_uncorrelated_within_and_across_words(lag):
    # 32 signs come from one Philox word: neighbours inside a word (lag < 32)
    # and the same bit of consecutive words (lag 32) must be independent.
    signs = random.rademacher([N], [7, 7]).numpy().astype(np.float64)
    corr = np.mean(signs[:-lag] * signs[lag:])
    assert abs(corr) < 4 / math.sqrt(N)


def test_rademacher_size_not_a_multiple_of_32_and_dynamic_shape():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def draw(x):
        return random.rademacher(tf.shape(x), tf.constant([1, 2]))

    assert draw(tf.zeros([45], tf.int32)).shape == (45,)
    assert random.rademacher([3, 0], [1, 2]).shape == (3, 0)


def test_normal_matches_the_standard_normal():
    x = random.normal([N], tf.constant([5, 6])).numpy().astype(np.float64)
    # Standard errors: mean 1e-3, variance sqrt(2/n) = 1.4e-3.
    assert abs(x.mean()) < 4e-3
    assert abs(x.var() - 1.0) < 6e-3
    assert abs(stats.skew(x)) < 4 * math.sqrt(6 / N)
    assert abs(stats.kurtosis(x)) < 4 * math.sqrt(24 / N)
    # Kolmogorov-Smirnov: the 24-bit grid is far finer than the test resolves.
    assert stats.kstest(x, "norm").pvalue > 1e-3
    # Tails are cut at the grid's extreme quantile, ndtri(2**-25) = -5.42.
    assert np.abs(x).max() <= 5.43


def test_every_level_of_the_normal_grid_is_finite_and_symmetric():
    # All 2**32 words reduce to 2**23 levels times a sign; check every level on both
    # sides, including the extreme ones that would round to ndtri(1.0) = inf if the
    # upper half were computed directly.
    levels = tf.range(2**23, dtype=tf.int32)
    upper = random.normal_from_words(levels).numpy()
    lower = random.normal_from_words(tf.bitwise.bitwise_or(levels, -(2**31))).numpy()
    assert np.all(np.isfinite(upper)) and np.all(np.isfinite(lower))
    np.testing.assert_array_equal(upper, -lower)
    assert upper.min() > 0 and upper.max() < 5.43
    # The grid's levels are the quantiles (k + 1/2) / 2**24 of the standard normal.
    k = np.array([0, 1, 2**22, 2**23 - 1])
    expected = -stats.norm.ppf((k + 0.5) / 2**24)
    np.testing.assert_allclose(upper[k], expected, rtol=1e-5)


def test_normal_is_deterministic_per_seed_with_uncorrelated_neighbours():
    a = random.normal([N], [1, 1]).numpy()
    np.testing.assert_array_equal(a, random.normal([N], [1, 1]).numpy())
    b = random.normal([N], [1, 2]).numpy()
    assert abs(np.corrcoef(a, b)[0, 1]) < 4e-3
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 4e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_normal_dtype(dtype):
    x = random.normal([4, 5], [1, 2], dtype=dtype)
    assert x.dtype == dtype
    assert x.shape == (4, 5)


def test_normal_under_xla_equals_eager():
    seed = tf.constant([9, 9])
    eager = random.normal([300, 7], seed)
    compiled = tf.function(lambda s: random.normal([300, 7], s), jit_compile=True)(seed)
    # Same bits; XLA and the TF kernel evaluate ndtri with slightly different rounding.
    np.testing.assert_allclose(eager.numpy(), compiled.numpy(), rtol=1e-5, atol=5e-5)
