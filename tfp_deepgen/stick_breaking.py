"""The stick-breaking Indian Buffet Process and its variational pieces.

Under the IBP prior of a layer with at most K units, unit `k` is active with
probability `pi_k = prod_{j <= k} v_j`, `v_j ~ Beta(alpha, 1)`, so later units
are ever less likely to be used and about `alpha` are active in expectation
(Teh, Görür & Ghahramani, 2007). The variational posterior replaces each
`Beta` by a Kumaraswamy, whose samples are a closed-form function of a
uniform draw (Nalisnick & Smyth, 2017), and each Bernoulli gate by a binary
Concrete relaxation (Maddison et al., 2017; Jang et al., 2017).

Every function works elementwise in float32 on tensors.

Example:

>>> import tensorflow as tf
>>> from tfp_deepgen import stick_breaking
>>> v = tf.constant([0.9, 0.5, 0.8])
>>> [round(p, 3) for p in stick_breaking.stick_probabilities(tf.math.log(v)).numpy().tolist()]
[0.9, 0.45, 0.36]
"""

import numpy as np
import tensorflow as tf

__all__ = [
    "kumaraswamy_log_sample",
    "kumaraswamy_beta_kl",
    "stick_probabilities",
    "bernoulli_kl",
    "binary_concrete",
]

_TINY = 1e-7


def kumaraswamy_log_sample(a, b, uniform):
    """`log v` for `v ~ Kumaraswamy(a, b)`, reparameterized by `uniform` in (0, 1).

    `v = (1 - u^(1/b))^(1/a)`; computed in log space so `v` near 0 or 1 keeps
    its precision and gradient.
    """
    log_u = tf.math.log(uniform)
    return tf.math.log(-tf.math.expm1(log_u / b)) / a


def kumaraswamy_beta_kl(a, b, alpha):
    """Exact `KL(Kumaraswamy(a, b) || Beta(alpha, 1))`, elementwise.

    The general Kumaraswamy-Beta KL (Nalisnick & Smyth, 2017, eq. 6) has an
    infinite series weighted by `beta - 1`; for the IBP's `Beta(alpha, 1)`
    that weight is zero and the rest is closed form:
    `(a - alpha) / a * (-euler_gamma - digamma(b) - 1/b) + log(a b) - log(alpha) - (b - 1) / b`.
    """
    a = tf.convert_to_tensor(a, "float32")
    b = tf.convert_to_tensor(b, "float32")
    return (
        (a - alpha) / a * (-np.euler_gamma - tf.math.digamma(b) - 1.0 / b)
        + tf.math.log(a * b)
        - np.log(alpha)
        - (b - 1.0) / b
    )


def stick_probabilities(log_v):
    """`pi_k = prod_{j <= k} v_j` along the last axis, from `log v`.

    Non-increasing in `k` by construction.
    """
    return tf.exp(tf.math.cumsum(log_v, axis=-1))


def bernoulli_kl(q_probability, p_probability):
    """`KL(Bernoulli(q) || Bernoulli(p))`, elementwise, with probabilities kept off 0 and 1."""
    q = tf.clip_by_value(q_probability, _TINY, 1.0 - _TINY)
    p = tf.clip_by_value(p_probability, _TINY, 1.0 - _TINY)
    return q * (tf.math.log(q) - tf.math.log(p)) + (1.0 - q) * (
        tf.math.log1p(-q) - tf.math.log1p(-p)
    )


def binary_concrete(logits, temperature, uniform):
    """Relaxed Bernoulli sample `sigmoid((logits + logit(u)) / temperature)`.

    As `temperature -> 0` the samples approach exact Bernoulli(sigmoid(logits))
    draws; they stay differentiable in `logits`.
    """
    logistic = tf.math.log(uniform) - tf.math.log1p(-uniform)
    return tf.sigmoid((logits + logistic) / temperature)
