"""Summaries of a head's parameters under Monte-Carlo posterior samples.

Given the head parameters `params` of shape `(S, batch, P)` (one row of
parameters per posterior sample), `classifier_summaries` gives a classifier's
mean probabilities and the entropy split into aleatoric and epistemic parts,
and `continuous_summaries` the moments, their split, and the quantiles of a
continuous or count head's predictive. Moments over samples are taken in
float64 and returned in float32.
"""

import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.predictive.quantiles import mixture_quantiles

__all__ = [
    "CLASSIFIER_OUTPUTS",
    "CONTINUOUS_OUTPUTS",
    "checked_outputs",
    "classifier_summaries",
    "continuous_summaries",
    "output_names",
]

CLASSIFIER_OUTPUTS = (
    "probabilities",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "samples",
)
CONTINUOUS_OUTPUTS = (
    "mean",
    "stddev",
    "variance",
    "aleatoric_variance",
    "epistemic_variance",
    "quantiles",
    "samples",
)


def output_names(head):
    """The names of the summaries of `head`'s predictive, in order.

    Example:

    >>> import tfp_deepgen as tdg
    >>> from tfp_deepgen.predictive.summaries import output_names
    >>> output_names(tdg.heads.Categorical(3))[:2]
    ('probabilities', 'predictive_entropy')
    """
    if head.kind == "classifier":
        return CLASSIFIER_OUTPUTS
    return CONTINUOUS_OUTPUTS


def checked_outputs(outputs, head):
    """`outputs` as a tuple of known names (default: all of them).

    Raises:
        ValueError: For a name that is not one of `output_names(head)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> from tfp_deepgen.predictive.summaries import checked_outputs
    >>> checked_outputs(["mean"], tdg.heads.IndependentNormal())
    ('mean',)
    """
    names = output_names(head)
    outputs = tuple(outputs or names)
    for name in outputs:
        _validation.one_of("outputs", name, names)
    return outputs


def _batch_first(t):
    return tf.experimental.numpy.moveaxis(t, 0, 1)


def classifier_summaries(head, params, outputs, seed):
    """A classifier's predictive summaries from its parameter samples.

    Args:
        head: A head with `kind == "classifier"`.
        params: Head parameters, shape `(S, batch, P)`.
        outputs: The names asked for; `samples` (one label drawn per
            posterior sample) is drawn only when among them.
        seed: Seed of the label draws.

    Returns:
        A dict with `probabilities`, `predictive_entropy`,
        `expected_entropy`, `mutual_information` and, when asked for,
        `samples` (batch first).

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> from tfp_deepgen.predictive.summaries import classifier_summaries
    >>> head = tdg.heads.Categorical(2)
    >>> logits = np.array([[[2.0, -2.0]], [[-2.0, 2.0]]], "float32")  # S = 2, batch 1
    >>> out = classifier_summaries(head, logits, ("probabilities",), seed=None)
    >>> out["probabilities"].numpy().round(3), bool(out["mutual_information"] > 0)
    (array([[0.5, 0.5]], dtype=float32), True)
    """
    # Averages over samples in float64: in float32 the rounding of the means
    # alone gives a deterministic model a mutual information of ~1e-5.
    per_sample = tf.cast(head.probabilities(params), "float64")  # (S, B, K) or (S, B, d)
    probabilities = tf.reduce_mean(per_sample, 0)
    predictive_entropy = head.label_entropy(probabilities)
    expected_entropy = tf.reduce_mean(head.label_entropy(per_sample), 0)
    summaries = {
        "probabilities": probabilities,
        "predictive_entropy": predictive_entropy,
        "expected_entropy": expected_entropy,
        # Jensen's gap; float rounding can make it a hair negative.
        "mutual_information": tf.maximum(predictive_entropy - expected_entropy, 0.0),
    }
    summaries = {name: tf.cast(value, "float32") for name, value in summaries.items()}
    if "samples" in outputs:
        summaries["samples"] = _batch_first(head.distribution(params).sample(seed=seed))
    return summaries


def continuous_summaries(head, params, quantiles, outputs, seed):
    """A continuous or count head's predictive summaries from its parameter samples.

    Args:
        head: A head whose `kind` is not `"classifier"`.
        params: Head parameters, shape `(S, batch, P)`.
        quantiles: Levels in (0, 1) of the predictive quantiles.
        outputs: The names asked for; `quantiles` and `samples` are computed
            only when among them.
        seed: Seed of the draws in `samples`.

    Returns:
        A dict with `mean`, `stddev`, `variance`, `aleatoric_variance`,
        `epistemic_variance` and, when asked for, `quantiles` (shape
        `(batch, len(quantiles), ...)`) and `samples` (batch first).

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> from tfp_deepgen.predictive.summaries import continuous_summaries
    >>> head = tdg.heads.IndependentNormal(1, scale=1.0)
    >>> means = np.array([[[-1.0]], [[1.0]]], "float32")  # S = 2, batch 1
    >>> out = continuous_summaries(head, means, (0.5,), ("mean", "quantiles"), seed=None)
    >>> out["epistemic_variance"].numpy(), out["variance"].numpy()
    (array([[1.]], dtype=float32), array([[2.]], dtype=float32))
    """
    distribution = head.distribution(params)
    # The head's own moments, so a head that overrides `mean` / `variance` is honoured.
    means = head.mean(params)  # (S, B, d)
    variances = head.variance(params)
    # Moments over samples in float64 (see `classifier_summaries`).
    means64, variances64 = tf.cast(means, "float64"), tf.cast(variances, "float64")
    mean = tf.reduce_mean(means64, 0)
    aleatoric = tf.reduce_mean(variances64, 0)
    epistemic = tf.reduce_mean(tf.square(means64 - mean), 0)
    variance = aleatoric + epistemic
    summaries = {
        "mean": mean,
        "stddev": tf.sqrt(variance),
        "variance": variance,
        "aleatoric_variance": aleatoric,
        "epistemic_variance": epistemic,
    }
    summaries = {name: tf.cast(value, "float32") for name, value in summaries.items()}
    if "quantiles" in outputs:
        levels = tf.constant(quantiles, "float32")
        counts = head.kind == "count"
        q = mixture_quantiles(head.marginal(params), levels, means, variances, counts)
        if counts:
            q = tf.floor(q)
        summaries["quantiles"] = _batch_first(q)
    if "samples" in outputs:
        summaries["samples"] = _batch_first(distribution.sample(seed=seed))
    return summaries
