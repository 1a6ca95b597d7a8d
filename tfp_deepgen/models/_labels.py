"""Class labels as network inputs, shared by the conditional models."""

import numpy as np
import tensorflow as tf


def one_hot_labels(labels, num_classes):
    """One-hot vectors of integer class ids `labels`, shape `(batch, num_classes)`.

    `labels` has shape `(batch,)` or `(batch, 1)`. In eager mode the ids are checked
    to be whole numbers in `[0, num_classes)`; a graph cannot raise, so it relies on
    the check having run on the data before.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if labels.shape.rank != 1:
        raise ValueError(
            f"`labels` must hold one class id per example, shape (batch,), for "
            f"num_classes={num_classes}; got shape {tuple(labels.shape)}."
        )
    if tf.executing_eagerly() and labels.shape[0]:
        ids = labels.numpy()
        if ids.dtype.kind == "f" and not np.all(ids == np.round(ids)):
            raise ValueError(f"`labels` must be integer class ids; got values like {ids[:5]}.")
        if ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(
                f"`labels` must be class ids in [0, {num_classes}); got values from "
                f"{ids.min()} to {ids.max()}."
            )
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes)


def network_inputs(tensor, condition):
    """What a network is called on: `tensor`, or `[tensor, condition]` when conditioned."""
    return tensor if condition is None else [tensor, condition]
