"""Keras 3's TensorFlow trainer under `tf.distribute`: two fixes.

Multi-worker `fit()`. Keras 3's TensorFlow trainer breaks as soon as a
`MultiWorkerMirroredStrategy` spans more than one worker (keras-team/keras#20585,
tensorflow/tensorflow#72388; open for Keras 3.15): `fit()`, `evaluate()` and
`predict()` fail for every model, plain `keras.layers.Dense` included. Two
spots are wrong:

- `_maybe_symbolic_build` averages the first *data* batch across all workers
  with `strategy.reduce` only to learn its shapes; eager collectives refuse a
  `PerReplica` batch (`Attempt to convert a value (PerReplica...)`).
- `reduce_per_replica` averages the step's logs, which are scalars, with
  `strategy.reduce("MEAN", v, axis=0)` (`Invalid reduction dimension 0 for
  input with 0 dimensions`).

The patch replaces both with versions that differ from Keras's only on a
multi-worker `MultiWorkerMirroredStrategy`: the symbolic build reads the local
replica's batch (shapes are all it needs), and the logs are averaged over every
replica of every worker, which is what Keras already does on one machine.

`jit_compile=True` with several replicas. Keras compiles the whole
`strategy.run(train_step)` into one XLA program, which cannot touch the other
replicas' variables or run cross-worker collectives, so the first step fails
deep inside XLA (`Trying to access resource .../replica_1/...`; keras-team/keras#19005,
keras-team/keras#18145). `jit_compile="auto"` already turns XLA off under
`tf.distribute`; the patch makes an explicit `jit_compile=True` fail in
`compile()` with a message that says what to do instead. One replica (the
default strategy, `OneDeviceStrategy`) and `TPUStrategy` are unaffected.

Every other strategy and the default one run Keras's own code, untouched.
`import tfp_deepgen` applies the patch for the Keras versions in
`AFFECTED_KERAS_VERSIONS`; `tests/test_multi_worker.py` and
`tests/test_distribute.py` keep checks that unpatched Keras still fails, so
the patch goes once Keras fixes it.

Example:

>>> from tfp_deepgen import distribute
>>> patched = distribute.patch_keras_trainer()  # idempotent; done on import
>>> patched == distribute.keras_trainer_patched()  # False on a fixed Keras
True
"""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer
from keras.src.trainers import trainer as keras_trainer

__all__ = [
    "AFFECTED_KERAS_VERSIONS",
    "keras_trainer_patched",
    "patch_keras_trainer",
    "restore_keras_trainer",
]

# [first affected, first fixed): None means no fixed release is known yet.
AFFECTED_KERAS_VERSIONS = ((3, 0), None)

_ORIGINALS = {
    "reduce_per_replica": keras_tf_trainer.reduce_per_replica,
    "maybe_symbolic_build": keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build,
    "jit_compile": keras_trainer.Trainer.jit_compile,
}


def _version_tuple(version):
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _keras_is_affected():
    version = _version_tuple(keras.__version__)
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


def _set_jit_compile(self, value):
    """Keras's `jit_compile` setter, refusing XLA over several replicas."""
    strategy = getattr(self, "distribute_strategy", None)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if value is True and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        raise ValueError(
            f"`jit_compile=True` cannot train under {type(strategy).__name__} with "
            f"{replicas} replicas: Keras compiles the whole distributed step into one XLA "
            "program, which cannot reach the other replicas' variables (keras-team/keras#19005). "
            'Use `jit_compile="auto"` or `False` (Keras turns XLA off under tf.distribute), '
            "or train with XLA on one device (no strategy, or `OneDeviceStrategy`). "
            "See the Scaling out guide."
        )
    _ORIGINALS["jit_compile"].fset(self, value)


_PATCHED_JIT_COMPILE = property(_ORIGINALS["jit_compile"].fget, _set_jit_compile)


def patch_keras_trainer():
    """Patches Keras's TensorFlow trainer for `tf.distribute` (see the module).

    Idempotent, and a no-op for Keras versions outside
    `AFFECTED_KERAS_VERSIONS`. Only a multi-worker
    `MultiWorkerMirroredStrategy` takes the patched `fit()` path, and only
    `jit_compile=True` with several replicas is refused.

    Returns:
        True if the patch is in place.
    """
    if not _keras_is_affected():
        return False
    keras_tf_trainer.reduce_per_replica = _reduce_per_replica
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    keras_trainer.Trainer.jit_compile = _PATCHED_JIT_COMPILE
    return True


def restore_keras_trainer():
    """Restores Keras's own trainer code (multi-worker `fit()` fails again)."""
    keras_tf_trainer.reduce_per_replica = _ORIGINALS["reduce_per_replica"]
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _ORIGINALS["maybe_symbolic_build"]
    keras_trainer.Trainer.jit_compile = _ORIGINALS["jit_compile"]


def keras_trainer_patched():
    """Whether Keras's trainer currently runs the patched code."""
    return keras_tf_trainer.reduce_per_replica is _reduce_per_replica
