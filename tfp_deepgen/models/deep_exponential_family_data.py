"""What a Deep Exponential Family accepts as data, and how it learns its corpus size.

`DocumentData` is a mixin of `tdg.models.DeepExponentialFamily` (as Keras's
trainers are of `keras.Model`): it checks that a matrix can be the model's
data, and keeps `num_examples`, the number of training documents over which
the weights' KL is spread: `fit` sets it from its data, and the other
entry points refuse to run without it.

Example:

>>> import numpy as np, tfp_deepgen as tdg
>>> model = tdg.models.DeepExponentialFamily([2], num_examples=10)
>>> model.num_examples
10
>>> model.transform(np.array([[0.5, 1.0]]))
Traceback (most recent call last):
    ...
ValueError: `x` must hold non-negative integer counts for a Poisson observation model.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.models._fit_data import count_examples, example_shape

__all__ = ["DocumentData", "dense_float32"]


class DocumentData:
    """`num_examples` and the data checks of a `DeepExponentialFamily`.

    Expects of the host model: `variational_weights`, `observation`, and
    after `build` `num_columns`.
    """

    @property
    def num_examples(self):
        """Training documents the weights' KL is spread over (None until known)."""
        return self._num_examples

    @num_examples.setter
    def num_examples(self, value):
        if value is not None:
            value = _validation.positive_int("num_examples", value)
        if value != getattr(self, "_num_examples", None):
            # Traced graphs hold N as a constant: trace them again.
            self.train_function = self.test_function = self.predict_function = None
            self._evaluation_graph = None
        self._num_examples = value

    def fit(self, x=None, *args, **kwargs):
        if isinstance(x, np.ndarray | tf.Tensor | tf.SparseTensor):
            self._check_data(x, "x")
        if self.variational_weights and self.num_examples is None:
            arguments = inspect.signature(keras.Model.fit).bind(self, x, *args, **kwargs).arguments
            validation_split = arguments.get("validation_split", 0.0)
            if arguments.get("validation_data") is not None:
                validation_split = 0.0  # Keras ignores the split then
            self.num_examples = count_examples(x, validation_split)
        if not self.built:
            # Built before Keras traces the first step, so callbacks that read
            # the variables in `on_train_begin` (BackupAndRestore) see them.
            input_shape = example_shape(x)
            if input_shape is not None:
                self.build(input_shape)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._require_num_examples("evaluate")
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self._require_num_examples("predict")
        return super().predict(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._require_num_examples("train_on_batch")
        return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        self._require_num_examples("test_on_batch")
        return super().test_on_batch(*args, **kwargs)

    def predict_on_batch(self, *args, **kwargs):
        self._require_num_examples("predict_on_batch")
        return super().predict_on_batch(*args, **kwargs)

    def _require_num_examples(self, method):
        """A ValueError for `method` if the weights' KL share cannot be computed yet.

        Checked before Keras builds or traces anything: a failure inside its
        symbolic build would leave half-initialized variables behind.
        """
        if self.variational_weights and self.num_examples is None:
            raise ValueError(
                f"`{method}` needs `num_examples` (the number of training documents, over "
                "which the weights' KL is spread), which is not known yet: `fit(x)` sets it "
                "from its data. Fit first, pass num_examples=... to DeepExponentialFamily, "
                "or use variational_weights=False for point estimates."
            )

    def _checked(self, x, argument):
        x = dense_float32(tf.convert_to_tensor(x) if not isinstance(x, tf.SparseTensor) else x)
        self._check_data(x, argument)
        return x

    def _check_data(self, x, argument):
        """A ValueError naming `argument` if `x` cannot be data of this model."""
        values = x.values if isinstance(x, tf.SparseTensor) else x
        values = np.asarray(values)
        rank = len(x.shape)
        if rank != 2:
            raise ValueError(
                f"`{argument}` must be a 2-D (documents, columns) matrix; got shape "
                f"{tuple(x.shape)}."
            )
        if getattr(self, "num_columns", None) is not None and x.shape[-1] != self.num_columns:
            raise ValueError(
                f"`{argument}` must have {self.num_columns} columns, as in training; got "
                f"{x.shape[-1]}."
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"`{argument}` must be finite.")
        if self.observation == "poisson" and (
            np.any(values < 0) or np.any(values != np.round(values))
        ):
            raise ValueError(
                f"`{argument}` must hold non-negative integer counts for a Poisson "
                "observation model."
            )
        if self.observation == "bernoulli" and np.any((values != 0) & (values != 1)):
            raise ValueError(f"`{argument}` must hold only 0 and 1 for a Bernoulli observation.")


def dense_float32(x):
    """`x` as a dense float32 tensor (a `tf.SparseTensor` is densified)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.sparse.reorder(x))
    return tf.cast(x, "float32")
