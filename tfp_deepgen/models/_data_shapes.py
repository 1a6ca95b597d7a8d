"""The shape of one batch of what a user passes to `fit`, before Keras sees it.

Keras builds a model from its first batch only when the train function is
traced, after `on_train_begin`; callbacks that need the variables then
(`keras.callbacks.BackupAndRestore`) would see an unbuilt model. Models whose
networks build lazily use this to build themselves at the start of `fit`.
"""

import tensorflow as tf


def example_shape(x, component=0):
    """`(None, *shape of one example)` of `fit`'s `x`, or None when it cannot be told.

    `x` may be an array or tensor of examples, or a `tf.data.Dataset` of
    batches of `x` alone or of tuples, of which `component` is taken.

    Example:

    >>> import numpy as np
    >>> example_shape(np.zeros((32, 8, 8)))
    (None, 8, 8)
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, (tuple, list)):
            if len(spec) <= component:
                return None
            spec = spec[component]
        elif component:
            return None
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
            return None
        return (None, *spec.shape[1:])
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0:
        return None
    return (None, *tuple(shape)[1:])
