"""Keras 3 `fit()` under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's TensorFlow trainer breaks as soon as a `MultiWorkerMirroredStrategy`
spans more than one worker (keras-team/keras#20585, tensorflow/tensorflow#72388,
both still open for Keras 3.15): `fit()`, `evaluate()` and `predict()` fail
for every model, plain `keras.layers.Dense` included. Two spots are wrong:

- `_maybe_symbolic_build` averages the first *data* batch across all workers
  with `strategy.reduce` only to learn its shapes; eager collectives refuse a
  `PerReplica` batch (`Attempt to convert a value (PerReplica...)`).
- `reduce_per_replica` averages the step's logs, which are scalars, with
  `strategy.reduce("MEAN", v, axis=0)` (`Invalid reduction dimension 0 for
  input with 0 dimensions`).

`enable_multi_worker_fit()` replaces both with versions that differ from
Keras's only on a multi-worker `MultiWorkerMirroredStrategy`: the symbolic
build reads the local replica's batch (shapes are all it needs), and the logs
are averaged over every replica of every worker, which is what Keras already
does on one machine. Every other strategy and the default one run Keras's own
code, untouched. `import tfp_deepgen` applies it for the Keras versions in
`AFFECTED_KERAS_VERSIONS`; `tests/test_multi_worker.py` keeps a check that the
unpatched trainer still fails, so the shim goes once Keras fixes it.

Example:

>>> from tfp_deepgen import distribute
>>> patched = distribute.enable_multi_worker_fit()  # idempotent; done on import
>>> patched == distribute.multi_worker_fit_enabled()  # False on a fixed Keras
True
"""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

__all__ = [
    "AFFECTED_KERAS_VERSIONS",
    "disable_multi_worker_fit",
    "enable_multi_worker_fit",
    "multi_worker_fit_enabled",
]

# [first affected, first fixed): None means no fixed release is known yet.
AFFECTED_KERAS_VERSIONS = ((3, 0), None)

_ORIGINALS = {
    "reduce_per_replica": keras_tf_trainer.reduce_per_replica,
    "maybe_symbolic_build": keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build,
}


def _version_tuple(version):
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _keras_is_affected(version=None):
    version = _version_tuple(version or keras.__version__)
    first, fixed = AFFECTED_KERAS_VERSIONS
    return version >= first and (fixed is None or version < fixed)


def _is_multi_worker(strategy):
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def _reduce_per_replica(values, strategy, reduction):
    """Keras's `reduce_per_replica`, averaging scalar logs across workers."""
    is_mean = reduction == "mean" or (
        reduction == "auto" and not isinstance(strategy, tf.distribute.TPUStrategy)
    )
    if not (is_mean and _is_multi_worker(strategy)):
        return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)
    # Elementwise over replicas, as Keras's one-machine path does.
    return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras's `_maybe_symbolic_build`, building from the local replica's batch."""
    strategy = self._distribute_strategy
    if iterator is None or strategy is None or not _is_multi_worker(strategy):
        return _ORIGINALS["maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        data_batch = tf.nest.map_structure(
            lambda v: (
                strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues)
                else v
            ),
            next(batches),
        )
        break
    return _ORIGINALS["maybe_symbolic_build"](self, data_batch=data_batch)


def enable_multi_worker_fit():
    """Patches Keras's TensorFlow trainer so `fit()` runs on several workers.

    Idempotent, and a no-op for Keras versions outside
    `AFFECTED_KERAS_VERSIONS`. Only a multi-worker
    `MultiWorkerMirroredStrategy` takes the patched path.

    Returns:
        True if the patch is in place.
    """
    if not _keras_is_affected():
        return False
    keras_tf_trainer.reduce_per_replica = _reduce_per_replica
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    return True


def disable_multi_worker_fit():
    """Restores Keras's own trainer code (multi-worker `fit()` fails again)."""
    keras_tf_trainer.reduce_per_replica = _ORIGINALS["reduce_per_replica"]
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _ORIGINALS["maybe_symbolic_build"]


def multi_worker_fit_enabled():
    """Whether Keras's trainer currently runs the patched code."""
    return keras_tf_trainer.reduce_per_replica is _reduce_per_replica
