"""What a training step must be to run on a TPU, checked on a CPU.

`tf.distribute.TPUStrategy` cannot be created without a TPU, so the tests
check the properties it relies on instead, on the graph of the step that
`fit()` runs (`model.train_step`, traced by `tf.function(jit_compile=True)`
on a batch of fixed size, as a TPU input pipeline with `drop_remainder=True`
feeds it):

- static shapes: every float and bool tensor of the step's graph has a fully
  known shape (the bodies of functions it calls, such as loop and branch
  bodies, are not walked);
- no host-only op: no Python callback (`py_function`, `numpy_function`), no
  print or summary op (these are searched in called functions too), no string
  tensor; XLA compiles none of them;
- no Python state that changes between traces: tracing the step twice gives
  the same op types and constants, so a call counter or a NumPy draw at trace
  time, which would freeze a different value into each program, shows up.

Whether the step then compiles under XLA is the conformance batteries'
`jit_compile=True` checks; `steps_per_execution` (many steps per device
loop, as on a TPU) is checked in `tests/test_accelerator_readiness.py`.
"""

import numpy as np
import tensorflow as tf

#: Ops that run on the host only: Python callbacks, printing, summaries.
HOST_ONLY_OPS = frozenset(
    {
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "Print",
        "PrintV2",
        "StringFormat",
        "AudioSummary",
        "AudioSummaryV2",
        "HistogramSummary",
        "ImageSummary",
        "MergeSummary",
        "ScalarSummary",
        "TensorSummary",
        "TensorSummaryV2",
        "WriteAudioSummary",
        "WriteHistogramSummary",
        "WriteImageSummary",
        "WriteScalarSummary",
        "WriteSummary",
    }
)


def traced_train_step(model, data):
    """The concrete `tf.function(model.train_step, jit_compile=True)` for `data`.

    Args:
        model: A compiled, built Keras model whose optimizer and metrics exist
            (train it one step first).
        data: The tuple `fit()` hands the step: `(x,)` or `(x, y)`, arrays.
    """
    specs = tuple(tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)) for a in data)
    return tf.function(model.train_step, jit_compile=True).get_concrete_function(specs)


def _nodes(concrete):
    """Every node of the step's graph and of the functions it calls."""
    graph_def = concrete.graph.as_graph_def()
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def dynamic_shapes(concrete):
    """`op type name: shape` of every float or bool tensor whose shape is not fully known.

    Integer tensors are left out: they include shape arithmetic (such as the
    reduction axes of a gradient's broadcast), which XLA evaluates at compile
    time from the static input shapes.
    """
    return [
        f"{op.type} {op.name}: {tensor.shape}"
        for op in concrete.graph.get_operations()
        for tensor in op.outputs
        if (tensor.dtype.is_floating or tensor.dtype == tf.bool)
        and not tensor.shape.is_fully_defined()
    ]


def host_only_ops(concrete):
    """Names of the host-only ops and string tensors in the step."""
    found = [f"{node.op} {node.name}" for node in _nodes(concrete) if node.op in HOST_ONLY_OPS]
    found += [
        f"string tensor from {op.type} {op.name}"
        for op in concrete.graph.get_operations()
        for tensor in op.outputs
        if tensor.dtype == tf.string
    ]
    return found


def graph_fingerprint(concrete):
    """The step's op types and constant values, independent of names."""
    ops, constants = [], []
    for node in _nodes(concrete):
        ops.append(node.op)
        if node.op == "Const":
            constants.append(node.attr["value"].tensor.SerializeToString())
    return sorted(ops), sorted(constants)
