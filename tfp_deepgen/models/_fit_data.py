"""What the models can tell from the data given to `fit`, before Keras sees it.

- `count_examples`: the number of training examples N. Models whose objective
  spreads a global KL over the training set (a KL share of `1 / N` per
  example) take it from there rather than make the user repeat `len(x)`.
- `example_shape`: the shape of one example. Keras builds a model from its
  first batch only when the train function is traced, after
  `on_train_begin`; callbacks that need the variables then
  (`keras.callbacks.BackupAndRestore`) would see an unbuilt model, so models
  whose networks build lazily build themselves from it at the start of `fit`.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

__all__ = ["count_examples", "example_shape"]


def count_examples(x, validation_split=0.0, argument="num_examples"):
    """The number of training examples in `fit`'s `x`.

    - Arrays and tensors (also nested, and `tf.SparseTensor`): the first axis
      of the first leaf, less the `validation_split` that `fit` holds out
      (Keras keeps the first `floor(n * (1 - validation_split))` rows).
    - A `tf.data.Dataset` of batches with a finite, known number of batches:
      `unbatch().cardinality()` where tf.data knows it (`drop_remainder=True`),
      else the examples counted in one pass over the dataset.
    - A `keras.utils.PyDataset` with a finite number of batches: counted by
      loading each batch once.

    Raises a ValueError saying to pass `argument=` for anything else: an
    infinite (`repeat()`) or unknown-length dataset, a generator.
    """
    if isinstance(x, tf.data.Dataset):
        return _dataset_examples(x, argument)
    if isinstance(x, keras.utils.PyDataset):
        return _py_dataset_examples(x, argument)
    leaves = tf.nest.flatten(x)
    if leaves and _rows(leaves[0]) is not None:
        rows = _rows(leaves[0])
        if validation_split:
            rows = int(np.floor(rows * (1.0 - validation_split)))
        return rows
    raise _unknown(f"`x` of type {type(x).__name__}", argument)


def _rows(leaf):
    """The static first dimension of an array-like, or None."""
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) == 0 or shape[0] is None:
        return None
    return int(shape[0])


def _dataset_examples(dataset, argument):
    batches = int(dataset.cardinality())
    if batches == tf.data.INFINITE_CARDINALITY:
        raise _unknown("an infinite dataset (`repeat()`)", argument)
    if batches == tf.data.UNKNOWN_CARDINALITY:
        raise _unknown("a dataset whose length tf.data cannot tell", argument)
    examples = int(dataset.unbatch().cardinality())
    if examples >= 0:
        return examples

    def add(count, element):
        leaf = tf.nest.flatten(element)[0]  # the first input of (x, y, ...)
        if isinstance(leaf, tf.SparseTensor):
            return count + leaf.dense_shape[0]
        if isinstance(leaf, tf.RaggedTensor):
            return count + leaf.nrows()
        return count + tf.shape(leaf, out_type=tf.int64)[0]

    # One pass over the dataset: tf.data cannot tell the size of a last,
    # partial batch without producing it.
    return int(dataset.reduce(tf.constant(0, tf.int64), add))


def _py_dataset_examples(dataset, argument):
    batches = dataset.num_batches
    if not isinstance(batches, numbers.Integral):
        raise _unknown("a PyDataset without a finite `num_batches`", argument)
    total = 0
    for index in range(int(batches)):
        rows = _rows(tf.nest.flatten(dataset[index])[0])
        if rows is None:
            raise _unknown("a PyDataset whose batches have no first axis", argument)
        total += rows
    return total


def _unknown(what, argument):
    return ValueError(
        f"The number of training examples cannot be known from {what}. Pass "
        f"`{argument}=` (the number of training examples) to the model."
    )


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
