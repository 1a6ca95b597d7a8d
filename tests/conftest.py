"""Test session set-up.

Two logical CPU devices must exist before TensorFlow initialises its runtime,
so the `MirroredStrategy` checks of the conformance battery can run on one
CPU. Nothing else in the suite is affected: ops default to the first device.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# Under pytest-xdist each test worker is its own TensorFlow process, and
# TensorFlow's default thread pools (a thread per core each) oversubscribe the
# cores: one intra-op and one inter-op thread per worker ran parts of the suite
# 10-20% faster on 2 cores (measured with `pytest -n 2`).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
