"""Evaluating a per-example graph over a data set a batch at a time."""

import tensorflow as tf


def in_batches(graph, x, extra, batch_size, *arguments):
    """`graph(x_batch, extra_batch, *arguments)` over batches of `x`, concatenated.

    `extra` is a second per-example tensor sliced like `x`, or None.
    """
    parts = [
        graph(
            x[start : start + batch_size],
            None if extra is None else extra[start : start + batch_size],
            *arguments,
        )
        for start in range(0, int(x.shape[0]), batch_size)
    ]
    return tf.concat(parts, 0) if parts else tf.zeros([0])
