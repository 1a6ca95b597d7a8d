"""A model's output as a TFP distribution, for code written against tfp.layers.

tfp.layers models output distributions; Keras 3 models output tensors, so
ours end in a head that outputs the distribution's parameters (which is what
saving, XLA and serving need). `DistributionModel` wraps such a model so that
calling it returns the distribution again, and `.mean()`, `.stddev()`,
`.sample()` and `.log_prob(y)` code ports unchanged.
"""

import tensorflow as tf

from tfp_deepgen.heads.plain_outputs import output_head

__all__ = ["DistributionModel"]


class DistributionModel:
    """Calls a model and returns its output as the head's TFP distribution.

    `DistributionModel(model)(x)` is `head.distribution(model(x))`, one
    distribution with batch shape `(batch,)`. Each call runs the model once,
    so a model with variational layers draws one weight sample per call, as a
    tfp.layers model does; `tdg.predictive` averages many draws instead. A
    model without a head is read as `tdg.heads.output_head` says (softmax
    outputs as class probabilities, others as point predictions).

    The wrapper is for Python code; train, save, export and serve the model
    itself.

    Args:
        model: A Keras model with one output, usually ending in a
            `tfp_deepgen.heads` head.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.IndependentNormal(scale=2.0)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), head])
    >>> yhat = tdg.heads.DistributionModel(model)(np.ones((5, 3), "float32"))
    >>> yhat.batch_shape, yhat.event_shape, yhat.stddev().numpy()[0]
    (TensorShape([5]), TensorShape([1]), array([2.], dtype=float32))
    """

    def __init__(self, model):
        self.model = model
        self.head = output_head(model)

    def __call__(self, inputs, training=False):
        """`head.distribution(model(inputs))`.

        Args:
            inputs: What `model(inputs)` takes.
            training: Passed to the model (dropout, batch normalisation).
        """
        params = self.model(inputs, training=training)
        return self.head.distribution(tf.cast(params, "float32"))
