"""One inference state per stochastic layer, set by one context.

- `inference_state` nests, restores every layer's state on exit (also on an
  exception), validates before changing anything, and leaves the layers' own
  `sampling` (their config) alone; `sampling_mode` and `monte_carlo_mode`
  are that context with one field each;
- `stochastic_layers` finds layers in nested models and in plain layers'
  attributes (alone, in lists and dicts), each once;
- the first dense layer of a Monte-Carlo pass computes once per example when
  it is fed the `StackedBatch` itself, with the same numbers as without;
- `predict` called again and again neither warns of retracing nor keeps a
  model alive.
"""

import gc
import logging
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_deepgen as tdg
from tfp_deepgen import layers, predictive
from tfp_deepgen.predictive import monte_carlo


def _model(cls=layers.DenseFlipout, seed=0):
    return keras.Sequential(
        [
            keras.Input((5,)),
            cls(8, activation="relu", seed=seed),
            layers.MCDropout(0.2, seed=seed + 1),
            cls(3, seed=seed + 2),
        ]
    )


def _states(model):
    return [layer.inference_state for layer in layers.stochastic_layers(model)]


# --------------------------------------------------------------------------
# The context
# --------------------------------------------------------------------------


def test_contexts_nest_and_restore():
    model = _model()
    dense = model.layers[0]
    state = dense.inference_state
    assert (state.sampling, state.monte_carlo_samples, state.posterior_scales) == (None,) * 3
    with layers.sampling_mode(model, "mean"):
        assert not dense.sampling_enabled
        with layers.monte_carlo_mode(model, 4):
            state = dense.inference_state
            assert (state.sampling, state.monte_carlo_samples) == ("mean", 4)
            assert dense.sampling_enabled  # Monte-Carlo copies always sample
        state = dense.inference_state
        assert (state.sampling, state.monte_carlo_samples) == ("mean", None)
        assert dense.sampling == "sample"
        assert dense.get_config()["sampling"] == "sample"  # the layer's own setting
    state = dense.inference_state
    assert (state.sampling, state.monte_carlo_samples) == (None, None)
    assert dense.sampling_enabled


def test_context_restores_on_exception():
    model = _model()
    before = _states(model)
    with pytest.raises(RuntimeError, match="boom"):
        with layers.inference_state(model, sampling="mean", monte_carlo_samples=3):
            assert all(s.monte_carlo_samples == 3 for s in _states(model))
            raise RuntimeError("boom")
    assert all(a is b for a, b in zip(_states(model), before, strict=True))


def test_bad_state_changes_no_layer():
    model = _model()
    before = _states(model)
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        with layers.inference_state(model, sampling="median"):
            pass
    stacked = layers.StackedBatch(tf.ones((2, 5)), 3)
    with pytest.raises(ValueError, match="holds 3 copies but monte_carlo_samples=4"):
        with layers.monte_carlo_mode(model, 4, stacked):
            pass
    with pytest.raises(ValueError, match="monte_carlo_samples"):
        with layers.inference_state(model, monte_carlo_samples=0):
            pass
    assert all(a is b for a, b in zip(_states(model), before, strict=True))


def test_a_nested_context_covers_only_its_model():
    model = _model()
    first, second = model.layers[0], model.layers[2]
    with layers.sampling_mode(second, "mean"):
        assert first.sampling_enabled and not second.sampling_enabled


def test_sampling_mode_drops_compiled_functions():
    # A traced function keeps the state it was traced in.
    model = _model()
    x = np.ones((2, 5), "float32")
    model.predict(x, verbose=0)
    assert model.predict_function is not None
    with layers.sampling_mode(model, "mean"):
        assert model.predict_function is None
        np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert model.predict_function is None


def test_inference_state_sampling_retraces_predict():
    # `predict` traced while sampling must not be reused in mean mode, nor the
    # mean-mode trace after the context.
    model = _model()
    x = np.ones((2, 5), "float32")
    model.predict(x, verbose=0)
    with layers.inference_state(model, sampling="mean"):
        mean = model(x, training=False).numpy()
        np.testing.assert_array_equal(model.predict(x, verbose=0), mean)
    assert model.predict_function is None
    assert not np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_inference_state_keeps_compiled_functions_when_sampling_is_unchanged():
    model = _model()
    x = np.ones((2, 5), "float32")
    model.predict(x, verbose=0)
    compiled = model.predict_function
    with layers.monte_carlo_mode(model, 2):
        assert model.predict_function is compiled
    assert model.predict_function is compiled


# --------------------------------------------------------------------------
# Finding the layers
# --------------------------------------------------------------------------


class _Holder(keras.layers.Layer):
    """A plain layer owning stochastic layers as attributes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.single = layers.DenseFlipout(4, name="single")
        self.listed = [layers.MCDropout(0.1, name="listed")]
        self.keyed = {"a": layers.GaussianDropout(0.1, name="keyed")}
        self.plain = keras.layers.Dense(4, name="plain")

    def build(self, input_shape):
        self.single.build(input_shape)
        self.plain.build(input_shape)

    def call(self, x):
        return self.keyed["a"](self.listed[0](self.single(x)))


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.holder = _Holder()
        self.head = layers.DenseReparameterization(2, name="last")

    def call(self, x):
        return self.head(self.holder(x))


def test_stochastic_layers_are_found_in_nested_models_and_attributes():
    inner = keras.Sequential([keras.Input((3,)), _Holder()], name="inner")
    inputs = keras.Input((3,))
    last = layers.DenseLocalReparameterization(2, name="f")
    functional = keras.Model(inputs, last(inner(inputs)))
    subclassed = _Subclassed()
    subclassed(np.ones((1, 3), "float32"))
    shared = layers.DenseFlipout(3, name="shared")
    twice = keras.Sequential([keras.Input((3,)), shared, shared])
    names = [layer.name for layer in layers.stochastic_layers(functional)]
    assert names == ["single", "listed", "keyed", "f"]
    names = [layer.name for layer in layers.stochastic_layers(subclassed)]
    assert sorted(names) == ["keyed", "last", "listed", "single"]
    assert [layer.name for layer in layers.stochastic_layers(twice)] == ["shared"]
    with layers.sampling_mode(subclassed, "mean"):
        assert not any(layer.sampling_enabled for layer in layers.stochastic_layers(subclassed))


# --------------------------------------------------------------------------
# The stacked batch
# --------------------------------------------------------------------------


def _reseed(model, states):
    for layer, state in zip(layers.stochastic_layers(model), states, strict=True):
        layer.seed_generator.state.assign(state)


@pytest.mark.parametrize(
    "cls",
    [layers.DenseReparameterization, layers.DenseFlipout, layers.DenseLocalReparameterization],
)
def test_stacked_batch_shortcut_gives_the_same_numbers(cls):
    model = _model(cls)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    stacked = layers.StackedBatch(x, 4)
    seeds = [layer.seed_generator.state.numpy() for layer in layers.stochastic_layers(model)]
    with layers.monte_carlo_mode(model, 4, stacked):
        fast = model(stacked.copies, training=False).numpy()
    _reseed(model, seeds)
    with layers.monte_carlo_mode(model, 4):  # no stacked batch: no shortcut
        slow = model(stacked.copies, training=False).numpy()
    assert fast.shape == (24, 3)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    # Different copies still draw different weights.
    copies = fast.reshape(4, 6, 3)
    assert np.max(np.abs(copies[0] - copies[1])) > 1e-4


def test_first_layer_computes_once_per_example_in_the_predictive():
    model = _model(layers.DenseFlipout)
    mc = predictive.MonteCarloPredictive(keras.Sequential([model, tdg.heads.Categorical(3)]), 8)
    graph = tf.function(mc.parameter_samples).get_concrete_function(
        tf.TensorSpec((3, 5), "float32")
    )
    matmul_rows = [
        op.inputs[0].shape[0] for op in graph.graph.get_operations() if op.type == "MatMul"
    ]
    # The first layer's mean and variance matmuls see the 3 examples, not 24 rows.
    assert matmul_rows.count(3) == 2, matmul_rows
    assert 24 in matmul_rows


def test_a_tensor_computed_from_the_copies_takes_no_shortcut():
    stacked = layers.StackedBatch({"a": tf.ones((2, 3)), "b": tf.zeros((2, 1))}, 3)
    assert stacked.original(stacked.copies["a"]) is stacked.batch["a"]
    assert stacked.original(stacked.copies["b"]) is stacked.batch["b"]
    assert stacked.original(tf.identity(stacked.copies["a"])) is None
    assert stacked.copies["b"].shape == (6, 1)


# --------------------------------------------------------------------------
# Scale snapshot and predict
# --------------------------------------------------------------------------


def test_snapshot_is_the_inference_states_scales():
    model = _model()
    snapshot = layers.PosteriorScaleSnapshot(model)
    dense = model.layers[0]
    with snapshot.active():
        assert dense.inference_state.posterior_scales is snapshot
        assert dense.posterior_scales()[0] is snapshot.scales_of(dense)[0]
    assert dense.inference_state.posterior_scales is None
    assert snapshot.scales_of(model.layers[1]) is None  # dropout: no scales
    assert snapshot.scales_of(layers.DenseFlipout(2)) is None


def test_predict_traces_reading_the_snapshot():
    # The compiled pass reads the scales predict() refreshed, not a transform per batch.
    head = tdg.heads.Categorical(3)
    model = keras.Sequential(
        [keras.Input((5,)), layers.DenseFlipout(8), layers.DenseFlipout(3), head]
    )
    x = np.ones((4, 5), "float32")
    predictive.predict(model, x, num_samples=4, outputs=["probabilities"])
    (mc,) = monte_carlo._PREDICTIVES[model].values()
    (function,) = mc._functions.values()
    (graph,) = [f.graph for f in function._list_all_concrete_functions()]
    assert "Softplus" not in {op.type for op in graph.get_operations()}


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_repeated_predict_does_not_retrace_or_keep_models():
    rng = np.random.default_rng(1)
    heads = [tdg.heads.IndependentNormal(), tdg.heads.Categorical(3)]
    models = [
        keras.Sequential([keras.Input((5,)), layers.DenseFlipout(h.input_size), h]) for h in heads
    ]
    recorder = _Recorder()
    tf.get_logger().addHandler(recorder)
    try:
        for i, n in enumerate([1, 7, 300, 33, 2, 129, 64, 5]):
            x = rng.normal(size=(n, 5)).astype("float32")
            predictive.predict(models[i % 2], x, num_samples=4 + i, batch_size=100, seed=i)
    finally:
        tf.get_logger().removeHandler(recorder)
    assert not [m for m in recorder.messages if "retracing" in m]
    ref = weakref.ref(models[0])
    del models
    gc.collect()
    assert ref() is None
