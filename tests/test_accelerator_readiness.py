"""Every layer, head and model is ready for an accelerator, checked on a CPU.

A TPU runs the training step as one XLA program with static shapes and no
host round-trips, many steps per device loop (`steps_per_execution`). The
audit (`tests/accelerator_audit.py`) checks the step's graph for static
shapes, host-only ops and Python state frozen at trace time; the
`steps_per_execution` test checks that every model's step, compiled by XLA,
runs inside Keras's multi-step loop and trains as one step per execution does.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from accelerator_audit import dynamic_shapes, graph_fingerprint, host_only_ops, traced_train_step
from multi_worker_process import MODELS
from test_conformance import ALL_CASES as LAYER_CASES
from test_head_conformance import CASES as HEAD_CASES

BATCH = 8


def _layer_model(case, **compile_kwargs):
    return case.sgd_model(2 * BATCH, 1.0 / BATCH, **compile_kwargs)


def _head_model(case, **compile_kwargs):
    keras.utils.set_random_seed(0)
    model = case.model()
    model.compile(keras.optimizers.SGD(0.01), loss=model.layers[-1].loss, **compile_kwargs)
    return model, case.data(batch=2 * BATCH)


def _model(name, **compile_kwargs):
    case = MODELS[name]
    model = case.build(case.new())
    case.compile_sgd(model, **{"jit_compile": False, **compile_kwargs})
    return model, case.data()


ALL = (
    [pytest.param(_layer_model, case, id=f"layer-{case}") for case in LAYER_CASES]
    + [pytest.param(_head_model, case, id=f"head-{case}") for case in HEAD_CASES]
    + [pytest.param(_model, name, id=f"model-{name}") for name in MODELS]
)


@pytest.mark.parametrize(("make", "case"), ALL)
def test_the_training_step_is_static_and_host_free(make, case):
    model, data = make(case, jit_compile=False)
    batch = tuple(a[:BATCH] for a in data)
    model.train_on_batch(*batch)  # creates the optimizer's and the metrics' variables
    step = traced_train_step(model, batch)
    assert not dynamic_shapes(step), dynamic_shapes(step)
    assert not host_only_ops(step), host_only_ops(step)
    again = traced_train_step(model, batch)
    assert graph_fingerprint(again) == graph_fingerprint(step), (
        "tracing the step twice gave different graphs: some state lives in Python"
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_several_steps_per_execution_train_as_one_step_each(name):
    """XLA, 2 steps per execution == 1 step per execution, the models' noise on.

    On a TPU Keras runs `steps_per_execution` steps in one device loop. This
    checks that every model's step compiles and runs inside Keras's multi-step
    loop and trains as it does one step at a time (Python state frozen at
    trace time is the graph fingerprint's check, above).
    """
    weights = []
    for steps_per_execution in (1, 2):
        model, data = _model(name, jit_compile=True)
        model.steps_per_execution = steps_per_execution
        model.fit(*data, batch_size=BATCH // 2, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for one, several in zip(*weights, strict=True):
        np.testing.assert_allclose(several, one, rtol=1e-5, atol=1e-6)


class _PythonCounter(keras.layers.Layer):
    """Keeps a call count in Python: frozen into each trace as a constant."""

    calls = 0

    def call(self, x):
        self.calls += 1
        return x * float(self.calls)


class _HostCallback(keras.layers.Layer):
    def call(self, x):
        return tf.reshape(tf.py_function(tf.identity, [x], tf.float32), tf.shape(x))


class _DataDependentShape(keras.layers.Layer):
    def call(self, x):
        return x + tf.reduce_sum(tf.boolean_mask(x, x > 0))


def _audit(layer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), layer])
    model.compile("sgd", loss="mse")
    batch = (np.ones((BATCH, 3), "float32"), np.zeros((BATCH, 3), "float32"))
    model.train_on_batch(*batch)
    step = traced_train_step(model, batch)
    same = graph_fingerprint(traced_train_step(model, batch)) == graph_fingerprint(step)
    return dynamic_shapes(step), host_only_ops(step), same


def test_the_audit_finds_what_a_tpu_cannot_run():
    assert _audit(keras.layers.Dense(3)) == ([], [], True)
    assert _audit(_PythonCounter())[2] is False
    assert any("EagerPyFunc" in op for op in _audit(_HostCallback())[1])
    assert any("boolean_mask" in shape for shape in _audit(_DataDependentShape())[0])
