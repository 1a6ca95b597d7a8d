"""The adversarial losses of a GAN, as functions of the discriminator's raw scores.

A discriminator outputs one unbounded score per example (a logit for the
minimax and non-saturating losses, a critic value for the Wasserstein loss).
Each loss is a pair: what the discriminator minimizes over real and generated
scores, and what the generator minimizes over generated scores. Every
function returns the batch mean as a float32 scalar.

Example:

>>> import numpy as np
>>> from tfp_deepgen.models import gan_losses
>>> real, fake = np.array([2.0, 1.0]), np.array([-1.0, 0.0])
>>> round(float(gan_losses.discriminator_loss("hinge", real, fake)), 4)  # 0 (real) + 0.5 (fake)
0.5
>>> round(float(gan_losses.generator_loss("wasserstein", fake)), 4)
0.5
"""

import tensorflow as tf

from tfp_deepgen import _validation

__all__ = [
    "LOSSES",
    "discriminator_accuracy",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
]

#: The losses `tdg.models.GAN` trains with.
LOSSES = ("minimax", "non_saturating", "wasserstein", "hinge", "least_squares")


def _scores(scores):
    return tf.cast(tf.convert_to_tensor(scores), tf.float32)


def discriminator_loss(loss, real_scores, fake_scores):
    """What the discriminator minimizes, given its scores of real and generated data.

    - `minimax`, `non_saturating` (Goodfellow et al. 2014): the binary
      cross-entropy `-E log sigmoid(D(x)) - E log(1 - sigmoid(D(G(z))))`.
      Its minimizer is `sigmoid(D*(x)) = p_data(x) / (p_data(x) + p_g(x))`.
    - `wasserstein` (Arjovsky et al. 2017): `E D(G(z)) - E D(x)`, the
      negated Wasserstein-1 estimate of a 1-Lipschitz critic (enforce the
      constraint with `gradient_penalty`).
    - `hinge` (Lim & Ye 2017, Miyato et al. 2018):
      `E relu(1 - D(x)) + E relu(1 + D(G(z)))`.
    - `least_squares` (Mao et al. 2017, targets 1 for real and 0 for
      generated): `E (D(x) - 1)^2 / 2 + E D(G(z))^2 / 2`, minimized by
      `D*(x) = p_data(x) / (p_data(x) + p_g(x))` itself.

    Args:
        loss: One of `LOSSES`.
        real_scores: Scores of real examples, any shape.
        fake_scores: Scores of generated examples, any shape.

    Returns:
        A float32 scalar.
    """
    loss = _validation.one_of("loss", loss, LOSSES)
    real, fake = _scores(real_scores), _scores(fake_scores)
    if loss in ("minimax", "non_saturating"):
        return tf.reduce_mean(tf.math.softplus(-real)) + tf.reduce_mean(tf.math.softplus(fake))
    if loss == "wasserstein":
        return tf.reduce_mean(fake) - tf.reduce_mean(real)
    if loss == "hinge":
        return tf.reduce_mean(tf.nn.relu(1.0 - real)) + tf.reduce_mean(tf.nn.relu(1.0 + fake))
    return 0.5 * tf.reduce_mean(tf.square(real - 1.0)) + 0.5 * tf.reduce_mean(tf.square(fake))


def generator_loss(loss, fake_scores):
    """What the generator minimizes, given the discriminator's scores of its samples.

    - `minimax`: `E log(1 - sigmoid(D(G(z))))`, the game's own objective;
      its gradient vanishes while the discriminator rejects the samples.
    - `non_saturating`: `-E log sigmoid(D(G(z)))`, the same fixed point with
      strong gradients early in training (Goodfellow et al. 2014).
    - `wasserstein` and `hinge`: `-E D(G(z))`.
    - `least_squares`: `E (D(G(z)) - 1)^2 / 2`.

    Args:
        loss: One of `LOSSES`.
        fake_scores: Scores of generated examples, any shape.

    Returns:
        A float32 scalar.
    """
    loss = _validation.one_of("loss", loss, LOSSES)
    fake = _scores(fake_scores)
    if loss == "minimax":
        return -tf.reduce_mean(tf.math.softplus(fake))
    if loss == "non_saturating":
        return tf.reduce_mean(tf.math.softplus(-fake))
    if loss in ("wasserstein", "hinge"):
        return -tf.reduce_mean(fake)
    return 0.5 * tf.reduce_mean(tf.square(fake - 1.0))


def decision_threshold(loss):
    """The score above which the discriminator calls an example real (None: no such rule)."""
    loss = _validation.one_of("loss", loss, LOSSES)
    return {"wasserstein": None, "least_squares": 0.5}.get(loss, 0.0)


def discriminator_accuracy(loss, real_scores, fake_scores):
    """Fraction of real and generated examples the discriminator classifies right.

    Real examples count as right when their score is above the loss's
    decision threshold (0 for a logit or a hinge score, 1/2 for the
    least-squares targets 0 and 1), generated ones when it is not. The
    Wasserstein critic makes no decisions: it has no accuracy.

    Returns:
        A float32 scalar: the mean over both sets (equal weight per example).
    """
    threshold = decision_threshold(loss)
    if threshold is None:
        raise ValueError("The Wasserstein critic has no accuracy: its scores are not decisions.")
    real = tf.reshape(_scores(real_scores), [-1])
    fake = tf.reshape(_scores(fake_scores), [-1])
    right = tf.concat(
        [tf.cast(real > threshold, tf.float32), tf.cast(fake <= threshold, tf.float32)], 0
    )
    return tf.reduce_mean(right)


def gradient_penalty(score_fn, real, fake, epsilon):
    """The WGAN-GP penalty `E (||grad_x D(x_hat)||_2 - 1)^2` (Gulrajani et al. 2017).

    `x_hat = real + epsilon * (fake - real)` lies on the segment between each
    real example and a generated one. Call it inside the discriminator's
    gradient tape: the penalty is differentiable in the discriminator's
    weights (a second-order gradient).

    Args:
        score_fn: Maps a batch of examples to their scores (each example's
            score must depend on that example only).
        real: Real examples, shape `(batch, ...)`.
        fake: Generated examples of the same shape.
        epsilon: Interpolation weights in [0, 1], shape `(batch,)`.

    Returns:
        A float32 scalar.
    """
    real = tf.convert_to_tensor(real)
    fake = tf.cast(tf.convert_to_tensor(fake), real.dtype)
    weights = tf.reshape(tf.cast(epsilon, real.dtype), [-1] + [1] * (real.shape.rank - 1))
    interpolated = real + weights * (fake - real)
    with tf.GradientTape() as tape:
        tape.watch(interpolated)
        scores = tf.reduce_sum(_scores(score_fn(interpolated)))
    gradients = tf.cast(tape.gradient(scores, interpolated), tf.float32)
    squared_norm = tf.reduce_sum(tf.reshape(tf.square(gradients), [tf.shape(gradients)[0], -1]), 1)
    # The tiny floor keeps the norm's own gradient finite where the gradient is 0.
    norm = tf.sqrt(squared_norm + 1e-12)
    return tf.reduce_mean(tf.square(norm - 1.0))
