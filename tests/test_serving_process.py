"""The process the serving checks run exports in: TensorFlow only, and loud on failure."""

import numpy as np
import pytest
import tensorflow as tf
from serving_process import run_in_serving_process


def test_tfp_deepgen_and_tfp_cannot_be_imported_there():
    run_in_serving_process("assert_blocked")


def test_a_failing_request_raises_with_the_servers_traceback(tmp_path):
    with pytest.raises(AssertionError, match="SavedModel file does not exist"):
        run_in_serving_process("serve_twice", tmp_path / "missing", tmp_path / "x", tmp_path / "o")


def test_serves_a_plain_tensorflow_export(tmp_path):
    module = tf.Module()
    module.serve = tf.function(
        lambda x: 2.0 * x, input_signature=[tf.TensorSpec([None, 2], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "export"))
    x = np.arange(6, dtype="float32").reshape(3, 2)
    np.save(tmp_path / "x.npy", x)
    run_in_serving_process(
        "serve_twice", tmp_path / "export", tmp_path / "x.npy", tmp_path / "o.npz"
    )
    served = np.load(tmp_path / "o.npz")
    np.testing.assert_array_equal(served["first"], 2 * x)
    np.testing.assert_array_equal(served["second"], 2 * x)
