"""Keras callbacks for training probabilistic models.

Example:

>>> import numpy as np, keras, tfp_deepgen as tdg
>>> model = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(1, kl_weight=0.01)])
>>> model.compile("adam", "mse")
>>> history = model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0,
...                     callbacks=[tdg.callbacks.KLDivergenceLogger()])
>>> "kl" in history.history
True
"""

import keras

from tfp_deepgen.layers.base import VariationalLayer, stochastic_layers

__all__ = ["KLDivergenceLogger"]


class KLDivergenceLogger(keras.callbacks.Callback):
    """Adds the total KL of the model's variational layers to the `fit` logs.

    Logs `kl` (the unweighted sum of every layer's `KL(q || p)`, averaged
    over the epoch's batches like Keras's own metrics) and, optionally,
    `kl_<layer name>` per layer. Place it in `callbacks=[...]`; Keras runs its
    progress bar and `History` after user callbacks, so both show the value.

    Args:
        per_layer: Also log each layer's KL.
    """

    def __init__(self, per_layer=False):
        super().__init__()
        self.per_layer = bool(per_layer)
        self._sums = {}
        self._batches = 0

    def _layers(self):
        return [
            layer for layer in stochastic_layers(self.model) if isinstance(layer, VariationalLayer)
        ]

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = {}
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        if logs is None:
            return
        current = {layer.name: float(layer.last_kl) for layer in self._layers()}
        self._batches += 1
        running = {"kl": sum(current.values())}
        if self.per_layer:
            running.update({f"kl_{name}": value for name, value in current.items()})
        for key, value in running.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        logs.update({key: total / self._batches for key, total in self._sums.items()})

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._batches:
            logs.update({key: total / self._batches for key, total in self._sums.items()})
