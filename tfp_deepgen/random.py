"""Fast stateless random numbers for the layers' noise.

Every sampler here takes an int32 seed of shape `[2]`, is a pure function of
it (same seed, same numbers, on any device count) and draws its bits with
Philox: under XLA on CPU TensorFlow's default stateless algorithm is an order
of magnitude slower (see `benchmarks/layers.py --only rng`).

Example:

>>> import tensorflow as tf
>>> from tfp_deepgen import random
>>> eps = random.normal([2, 3], seed=tf.constant([1, 2]))
>>> eps.shape
TensorShape([2, 3])
>>> signs = random.rademacher([5], seed=tf.constant([1, 2]))
>>> sorted(set(signs.numpy().tolist())) in ([-1.0], [1.0], [-1.0, 1.0])
True
"""

import tensorflow as tf

__all__ = ["normal", "normal_from_words", "rademacher", "uniform"]

_MANTISSA_BITS = 24


def _uniform_words(n, seed):
    """`n` independent uniformly random int32 words (all 32 bits random)."""
    return tf.random.stateless_uniform(
        [n], seed=seed, minval=None, maxval=None, dtype=tf.int32, alg="philox"
    )


def normal_from_words(words):
    """Maps uniformly random int32 words to standard normal float32 draws.

    The low 23 bits pick a level `k`, the sign bit a side:
    `x = +-ndtri((k + 1/2) / 2**24)`. Working on the lower half of the
    distribution and flipping keeps every level representable in float32:
    `(k + 1/2) / 2**24` near 1 would round to 1.0, where `ndtri` is infinite.
    """
    levels = tf.bitwise.bitwise_and(words, (1 << (_MANTISSA_BITS - 1)) - 1)
    lower_half = tf.math.ndtri((tf.cast(levels, tf.float32) + 0.5) * (2.0**-_MANTISSA_BITS))
    return tf.where(words < 0, lower_half, -lower_half)


def normal(shape, seed, dtype="float32"):
    """Standard normal draws by inverting the CDF of 24 random bits.

    `+-ndtri((k + 1/2) / 2**24)` for a uniform 23-bit integer `k` and a random
    sign: one Philox word per number and one `ndtri`, about twice as fast
    under XLA on CPU as `tf.random.stateless_normal` (Box-Muller, which needs
    logs, square roots and sines). The draws are exact quantiles of the
    normal on a grid of 2**24 equally likely levels, so |x| <= 5.42: a
    standard normal exceeds that with probability 6e-8, far below any
    Monte-Carlo error a layer sees.

    Args:
        shape: Output shape (list, tuple or 1-D int tensor; may be dynamic).
        seed: int32 tensor of shape `[2]`.
        dtype: Floating dtype of the result; computed in float32.

    Returns:
        A tensor of `shape` and `dtype`.
    """
    shape = tf.convert_to_tensor(shape, dtype=tf.int32)
    words = _uniform_words(tf.reduce_prod(shape), seed)
    return tf.cast(tf.reshape(normal_from_words(words), shape), dtype)


def rademacher(shape, seed, dtype="float32"):
    """Exactly +1 or -1 with probability 1/2 each, 32 signs per Philox word.

    Args:
        shape: Output shape (list, tuple or 1-D int tensor; may be dynamic).
        seed: int32 tensor of shape `[2]`.
        dtype: Dtype of the result.

    Returns:
        A tensor of `shape` and `dtype` holding only -1 and +1.
    """
    shape = tf.convert_to_tensor(shape, dtype=tf.int32)
    size = tf.reduce_prod(shape)
    words = _uniform_words((size + 31) // 32, seed)[:, None]
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(words, tf.range(32, dtype=tf.int32)), 1)
    signs = tf.cast(2 * bits - 1, dtype)
    return tf.reshape(tf.reshape(signs, [-1])[:size], shape)


def uniform(shape, seed, dtype="float32"):
    """Uniform draws on [0, 1) from Philox bits.

    Args:
        shape: Output shape (list, tuple or 1-D int tensor; may be dynamic).
        seed: int32 tensor of shape `[2]`.
        dtype: Floating dtype of the result; computed in float32.

    Returns:
        A tensor of `shape` and `dtype`.
    """
    draws = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32, alg="philox")
    return tf.cast(draws, dtype)
