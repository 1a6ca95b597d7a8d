"""Losses built from distribution-output heads.

This module sits below `tfp_deepgen.heads` (heads import it for `head.loss`),
so it asks a head only for its public `checked_nll` and `name`.
"""

import keras

from tfp_deepgen import _validation

__all__ = ["NegativeLogLikelihood"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class NegativeLogLikelihood(keras.losses.Loss):
    """`-log p(y_true | y_pred)` under a head's distribution.

    `head.loss` returns one. Labels outside the head's support raise a
    `ValueError` when called eagerly; in a compiled step their example's loss
    is `inf` (never NaN) with a zero gradient.

    Args:
        head: A `tfp_deepgen.heads` head; only its configuration is used.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> nll = tdg.losses.NegativeLogLikelihood(tdg.heads.IndependentNormal(scale=1.0))
    >>> round(float(nll(np.array([0.0]), np.array([[0.0]]))), 4)  # log(2 pi) / 2
    0.9189
    """

    def __init__(self, head, reduction="sum_over_batch_size", name=None, **kwargs):
        head = _validation.head("head", head)
        super().__init__(name=name or f"{head.name}_nll", reduction=reduction, **kwargs)
        # Kept as a bound method, not as an attribute holding the head: Keras's
        # `.keras` loading walks attributes depth first, and a head -> loss ->
        # head cycle would never end.
        self._checked_nll = head.checked_nll

    def call(self, y_true, y_pred):
        return self._checked_nll(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["head"] = keras.saving.serialize_keras_object(self._checked_nll.__self__)
        return config
