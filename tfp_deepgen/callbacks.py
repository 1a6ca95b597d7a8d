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
from tfp_deepgen.layers.ibp import IBPGate
from tfp_deepgen.pruning import kept_weight_counts

__all__ = ["KLDivergenceLogger", "SparsityMonitor", "ActiveUnitsMonitor"]


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


class SparsityMonitor(keras.callbacks.Callback):
    """Logs the fraction of weights sparse variational dropout has dropped.

    At the end of every epoch adds `sparsity` (dropped kernel weights over all
    kernel weights of the model's sparse variational dropout layers) and
    `compression` (total over kept, the paper's compression ratio) to the
    logs, and with `per_layer=True` also `sparsity_<layer name>`.

    Args:
        threshold: `log alpha` above which a weight counts as dropped;
            defaults to each layer's own `threshold`.
        per_layer: Also log each layer's sparsity.

    Example:

    >>> import numpy as np, keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([
    ...     keras.Input((3,)), tdg.layers.DenseSparseVariationalDropout(1, kl_weight=0.1)])
    >>> model.compile("adam", "mse")
    >>> history = model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0,
    ...                     callbacks=[tdg.callbacks.SparsityMonitor()])
    >>> sorted(key for key in history.history if key != "loss")
    ['compression', 'sparsity']
    """

    def __init__(self, threshold=None, per_layer=False):
        super().__init__()
        self.threshold = threshold
        self.per_layer = bool(per_layer)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        counts = kept_weight_counts(self.model, self.threshold)
        if not counts:
            return
        if self.per_layer:
            for name, (size, kept) in counts.items():
                logs[f"sparsity_{name}"] = (size - kept) / size
        total, kept = (sum(column) for column in zip(*counts.values(), strict=True))
        logs["sparsity"] = (total - kept) / total
        # Same convention as tdg.pruning.compression_ratio.
        logs["compression"] = total / kept if kept else float("inf")


class ActiveUnitsMonitor(keras.callbacks.Callback):
    """Logs the learned width of every IBP-gated layer at the end of each epoch.

    Adds `active_units_<layer name>` (units with gate probability above the
    threshold) for every `IBPGate` / `IBPDense` in the model, and
    `active_units` (their total) to the `fit` logs.

    Args:
        threshold: Gate probability above which a unit counts as active;
            defaults to each layer's own `threshold`.

    Example:

    >>> import numpy as np, keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     tdg.layers.IBPDense(4, initial_probability=0.995, name="hidden"),
    ...     keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> history = model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0,
    ...                     callbacks=[tdg.callbacks.ActiveUnitsMonitor()])
    >>> history.history["active_units_hidden"]
    [4]
    """

    def __init__(self, threshold=None):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        gates = [layer for layer in stochastic_layers(self.model) if isinstance(layer, IBPGate)]
        total = 0
        for gate in gates:
            width = gate.active_units(self.threshold)
            logs[f"active_units_{gate.name}"] = width
            total += width
        if gates:
            logs["active_units"] = total
