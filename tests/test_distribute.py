"""`tdg.distribute`: `jit_compile=True` over several replicas is refused up front.

The multi-worker half of the patch is tested with real worker processes in
`tests/test_multi_worker.py`.
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import two_cpu_strategy
from multi_worker_process import MODELS, regression_data

import tfp_deepgen as tdg


def _bayesian_mlp():
    return MODELS["BayesianMLP"].make()


def test_jit_compile_over_two_replicas_is_refused_in_compile():
    with two_cpu_strategy().scope():
        model = _bayesian_mlp()
        with pytest.raises(ValueError, match=r"jit_compile=True.*2 replicas.*jit_compile=\"auto\""):
            model.compile("adam", loss=model.layers[-1].loss, jit_compile=True)


def test_the_refusal_covers_our_models_and_plain_keras():
    with two_cpu_strategy().scope():
        models = [case.make() for case in MODELS.values()]
        models.append(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    for model in models:
        with pytest.raises(ValueError, match="jit_compile"):
            model.compile(jit_compile=True)


def test_auto_and_false_train_under_two_replicas():
    x, y = regression_data(16, seed=np.random.randint(2**31))
    with two_cpu_strategy().scope():
        for jit_compile in ("auto", False):
            model = _bayesian_mlp()
            model.compile("adam", loss=model.layers[-1].loss, jit_compile=jit_compile)
            assert model.jit_compile is False
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
            assert np.all(np.isfinite(history.history["loss"]))


def test_jit_compile_on_one_device_still_compiles_and_trains():
    x, y = regression_data(16, seed=np.random.randint(2**31))
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = _bayesian_mlp()
        model.compile("adam", loss=model.layers[-1].loss, jit_compile=True)
    assert model.jit_compile is True
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# Run apart: an XLA failure inside a MirroredStrategy step can abort the
# process's collective rendezvous for every later test.
_UNPATCHED_JIT = textwrap.dedent(
    """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import tfp_deepgen as tdg
    tdg.distribute.restore_keras_trainer()
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse", jit_compile=True)
    x = np.ones((8, 3), "float32")
    try:
        model.fit(x, x[:, :1], batch_size=4, verbose=0)
        print("RESULT: trained")
    except Exception as e:
        print("RESULT: failed", type(e).__name__)
    """
)


def test_the_refusal_is_on_exactly_where_keras_fails():
    """Keras's own trainer must fail the jit step where the patch refuses it.

    Fails once Keras compiles per replica: then set the first fixed version in
    `tdg.distribute.AFFECTED_KERAS_VERSIONS` (and split the two fixes).
    """
    result = subprocess.run(
        [sys.executable, "-c", _UNPATCHED_JIT], capture_output=True, text=True, timeout=240
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, result.stdout[-2000:] + result.stderr[-4000:]
    if tdg.distribute.keras_trainer_patched():
        assert lines[-1].startswith("RESULT: failed"), (
            "Keras now trains jit_compile=True on two replicas: lift the refusal."
        )
    else:
        assert lines[-1] == "RESULT: trained"
