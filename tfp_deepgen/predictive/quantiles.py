"""Quantiles of the equal-weight mixture over Monte-Carlo samples.

The predictive of a continuous or count head is the mixture
`F(y) = 1/S sum_s F_s(y)` of its `S` per-sample distributions; its quantiles
have no closed form, so `mixture_quantiles` finds them by bisection on `F`.
"""

import tensorflow as tf

__all__ = ["mixture_quantiles"]

# Bracket width / 2^28: far below Monte-Carlo error, and below 1 for counts
# (so `floor(hi)` is the integer quantile) whenever the first bracket is under 2^28.
_BISECTION_STEPS = 28
_BRACKET_DOUBLINGS = 12


def mixture_quantiles(marginal, levels, means, variances, counts=False):
    """Quantiles of the equal-weight mixture over samples of each output.

    Bisection on the mixture CDF `F(y) = 1/S sum_s F_s(y)`, vectorised over
    levels, examples and outputs. The invariant is `F(lo) < q <= F(hi)`, so
    for count heads `floor(hi)` is the quantile.

    Args:
        marginal: The per-sample distributions of each output, batch shape
            `(S, B, d)` (a head's `marginal(params)`).
        levels: Float32 tensor of the levels `q` in (0, 1), shape `(Q,)`.
        means, variances: The per-sample means and variances, shape
            `(S, B, d)`; they place the first bracket.
        counts: Whether the outputs are counts (integer support).

    Returns:
        The quantiles, shape `(Q, B, d)`.

    Example:

    >>> import tensorflow as tf, tensorflow_probability as tfp
    >>> from tfp_deepgen.predictive.quantiles import mixture_quantiles
    >>> means = tf.constant([[[-1.0]], [[1.0]]])  # S = 2 samples, 1 example, 1 output
    >>> marginal = tfp.distributions.Normal(means, 1.0)
    >>> q = mixture_quantiles(marginal, tf.constant([0.5]), means, tf.ones_like(means))
    >>> q.shape, abs(float(q[0, 0, 0])) < 1e-4  # the median of a symmetric mixture
    (TensorShape([1, 1, 1]), True)
    """
    shape = tf.concat([tf.shape(levels), tf.shape(means)[1:]], 0)
    q = tf.reshape(levels, [-1, 1, 1])

    def cdf(y):  # y: (Q, B, d) -> (Q, B, d)
        if counts:  # TFP's count CDFs interpolate between integers
            y = tf.floor(y)
        return tf.reduce_mean(marginal.cdf(y[:, None]), 1)

    # Heavy tails (StudentT with df <= 2) have no finite moments; the
    # doublings below then find the bracket from a unit start.
    means = tf.where(tf.math.is_finite(means), means, 0.0)
    stddevs = tf.sqrt(variances)
    stddevs = tf.where(tf.math.is_finite(stddevs), stddevs, 1.0)
    spread = tf.reduce_max(stddevs, 0) + 1e-6
    lo = tf.broadcast_to(tf.reduce_min(means, 0) - 4.0 * spread, shape)
    hi = tf.broadcast_to(tf.reduce_max(means, 0) + 4.0 * spread, shape)

    def widen(i, lo, hi, cdf_lo, cdf_hi):  # heavy tails: widen until bracketed
        step = 4.0 * spread * tf.pow(2.0, tf.cast(i, "float32"))
        lo = tf.where(cdf_lo >= q, lo - step, lo)
        hi = tf.where(cdf_hi < q, hi + step, hi)
        return i + 1, lo, hi, cdf(lo), cdf(hi)

    def unbracketed(i, lo, hi, cdf_lo, cdf_hi):
        missing = tf.reduce_any(cdf_lo >= q) | tf.reduce_any(cdf_hi < q)
        return (i < _BRACKET_DOUBLINGS) & missing

    # A loop, not unrolled: XLA compiles each unrolled CDF evaluation anew.
    doublings, lo, hi, _, _ = tf.while_loop(unbracketed, widen, (0, lo, hi, cdf(lo), cdf(hi)))

    def bisect(_, lo, hi):
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < q
        return _ + 1, tf.where(below, mid, lo), tf.where(below, hi, mid)

    # Each doubling at most doubled the bracket, so one more step per doubling
    # ends every search within 2^-28 of the first bracket's width.
    steps = _BISECTION_STEPS + doublings
    _, lo, hi = tf.while_loop(lambda i, *_: i < steps, bisect, (0, lo, hi))
    return hi
