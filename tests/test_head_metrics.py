"""Keras metrics on distribution heads (issue 18), checked against numpy.

Each compiled metric is compared with numpy on the model's own predictions:
after `fit` with a zero learning rate (so the epoch's running value is
exactly the value on the fixed weights, under XLA) and after `evaluate`.
"""

import keras
import numpy as np
import pytest

import tfp_deepgen as tdg

N, FEATURES = 48, 3


def _model(head, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(head.input_size), head])


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(N, FEATURES)).astype("float32")


def _fit_and_evaluate(model, head, x, y, metrics, jit_compile=True):
    """Train and evaluation logs of one epoch on fixed weights (learning rate 0)."""
    model.compile(
        keras.optimizers.SGD(0.0),
        loss=head.loss,
        metrics=metrics,
        jit_compile=jit_compile,
    )
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    train = {name: values[-1] for name, values in history.history.items()}
    evaluation = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    return train, evaluation


@pytest.mark.parametrize("label_shape", [(N,), (N, 1)])
def test_rmse_on_independent_normal_is_numpy_rmse_of_the_loc(label_shape):
    head = tdg.heads.IndependentNormal(1)
    model, x = _model(head), _x()
    y = np.random.default_rng(1).normal(size=label_shape).astype("float32")
    train, evaluation = _fit_and_evaluate(
        model, head, x, y, [tdg.metrics.HeadMetric(head, "root_mean_squared_error")]
    )
    loc = model.predict(x, verbose=0)[:, 0]
    expected = np.sqrt(np.mean((loc - y.reshape(-1)) ** 2))
    assert "root_mean_squared_error" in evaluation and "head_metric" not in evaluation
    np.testing.assert_allclose(train["root_mean_squared_error"], expected, rtol=1e-5)
    np.testing.assert_allclose(evaluation["root_mean_squared_error"], expected, rtol=1e-5)


def test_mae_on_poisson_is_numpy_mae_of_the_rate():
    head = tdg.heads.Poisson()
    model, x = _model(head), _x()
    y = np.random.default_rng(2).poisson(3.0, size=N).astype("float32")
    train, evaluation = _fit_and_evaluate(model, head, x, y, tdg.metrics.for_head(head, "mae"))
    rate = np.exp(model.predict(x, verbose=0)[:, 0])
    expected = np.mean(np.abs(rate - y))
    np.testing.assert_allclose(train["mae"], expected, rtol=1e-5)
    np.testing.assert_allclose(evaluation["mae"], expected, rtol=1e-5)


@pytest.mark.parametrize("label_shape", [(N,), (N, 1)])
def test_accuracy_on_categorical_is_numpy_argmax_accuracy(label_shape):
    head = tdg.heads.Categorical(4)
    model, x = _model(head), _x()
    y = np.random.default_rng(3).integers(0, 4, size=label_shape)
    train, evaluation = _fit_and_evaluate(
        model, head, x, y, tdg.metrics.for_head(head, "accuracy", "sparse_categorical_accuracy")
    )
    logits = model.predict(x, verbose=0)
    expected = np.mean(logits.argmax(-1) == y.reshape(-1))
    for logs in (train, evaluation):
        np.testing.assert_allclose(logs["accuracy"], expected, rtol=1e-6)
        np.testing.assert_allclose(logs["sparse_categorical_accuracy"], expected, rtol=1e-6)


def test_binary_accuracy_on_independent_bernoulli():
    head = tdg.heads.IndependentBernoulli(3)
    model, x = _model(head), _x()
    y = np.random.default_rng(4).integers(0, 2, size=(N, 3)).astype("float32")
    train, evaluation = _fit_and_evaluate(
        model, head, x, y, tdg.metrics.for_head(head, "accuracy", "binary_accuracy")
    )
    logits = model.predict(x, verbose=0)
    expected = np.mean((logits > 0) == (y > 0.5))  # sigmoid(logit) > 0.5
    for logs in (train, evaluation):
        np.testing.assert_allclose(logs["accuracy"], expected, rtol=1e-6)
        np.testing.assert_allclose(logs["binary_accuracy"], expected, rtol=1e-6)


def test_weighted_metrics_take_the_sample_weights():
    head = tdg.heads.IndependentNormal(2)
    model, x = _model(head), _x()
    rng = np.random.default_rng(5)
    y = rng.normal(size=(N, 2)).astype("float32")
    weights = rng.uniform(0.1, 2.0, size=N).astype("float32")
    model.compile(
        loss=head.loss,
        metrics=tdg.metrics.for_head(head, "mse"),
        weighted_metrics=[tdg.metrics.HeadMetric(head, "mse", name="weighted_mse")],
        jit_compile=True,
    )
    logs = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    squared_errors = np.mean((model.predict(x, verbose=0)[:, :2] - y) ** 2, -1)
    np.testing.assert_allclose(logs["mse"], np.mean(squared_errors), rtol=1e-5)
    expected = np.sum(weights * squared_errors) / np.sum(weights)
    np.testing.assert_allclose(logs["weighted_mse"], expected, rtol=1e-5)


def test_metric_objects_and_functions_are_wrapped_under_their_names():
    head = tdg.heads.IndependentNormal(1, scale=1.0)
    model, x = _model(head), _x()
    y = np.random.default_rng(6).normal(size=N).astype("float32")
    metrics = tdg.metrics.for_head(
        head, keras.metrics.MeanAbsoluteError(name="abs_error"), keras.metrics.mean_squared_error
    )
    _, evaluation = _fit_and_evaluate(model, head, x, y, metrics, jit_compile=False)
    loc = model.predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose(evaluation["abs_error"], np.mean(np.abs(loc - y)), rtol=1e-5)
    np.testing.assert_allclose(evaluation["mean_squared_error"], np.mean((loc - y) ** 2), rtol=1e-5)


def test_mixed_precision_model_gets_float32_metrics():
    head = tdg.heads.IndependentNormal(1)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, x = _model(head), _x()
        assert model.layers[0].compute_dtype == "float16"
        y = np.random.default_rng(7).normal(size=N).astype("float32")
        train, evaluation = _fit_and_evaluate(model, head, x, y, tdg.metrics.for_head(head, "mae"))
        loc = model.predict(x, verbose=0)[:, 0]
    finally:
        keras.config.set_dtype_policy(previous)
    expected = np.mean(np.abs(loc.astype("float64") - y))
    np.testing.assert_allclose(train["mae"], expected, rtol=1e-4)
    np.testing.assert_allclose(evaluation["mae"], expected, rtol=1e-4)


def test_config_round_trip():
    head = tdg.heads.Categorical(3)
    for metric in ("accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")):
        original = tdg.metrics.HeadMetric(head, metric)
        config = original.get_config()
        restored = tdg.metrics.HeadMetric.from_config(config)
        assert restored.get_config() == config
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(original), safe_mode=True
        )
        assert type(restored.wrapped) is type(original.wrapped)
        assert restored.name == original.name
        y, params = np.array([0, 2, 1]), np.array([[3.0, 0, 0], [0, 1, 2], [2, 0, 1]])
        original.update_state(y, params)
        restored.update_state(y, params)
        np.testing.assert_allclose(float(restored.result()), float(original.result()))


def test_keras_file_round_trip_with_safe_mode_keeps_the_metrics(tmp_path):
    head = tdg.heads.IndependentNormal(1, scale="homoscedastic")
    model, x = _model(head), _x()
    y = np.random.default_rng(8).normal(size=N).astype("float32")
    metrics = tdg.metrics.for_head(
        head, "root_mean_squared_error", keras.metrics.MeanAbsoluteError(name="abs_error")
    )
    _, before = _fit_and_evaluate(model, head, x, y, metrics)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = loaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert set(after) == set(before) == {"loss", "root_mean_squared_error", "abs_error"}
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6)
    loaded.compile(
        keras.optimizers.SGD(0.0),
        loss=loaded.layers[-1].loss,
        metrics=tdg.metrics.for_head(loaded.layers[-1], "mae"),
        jit_compile=True,
    )
    history = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    loc = loaded.predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose(history.history["mae"][0], np.mean(np.abs(loc - y)), rtol=1e-5)


def test_early_stopping_infers_the_direction():
    head = tdg.heads.Categorical(2)
    assert tdg.metrics.HeadMetric(head, "accuracy")._direction == "up"
    assert tdg.metrics.HeadMetric(tdg.heads.Poisson(), "mae")._direction == "down"


def test_head_mean():
    params = np.array([[0.0], [np.log(4.0)]], "float32")
    np.testing.assert_allclose(tdg.heads.Poisson().mean(params)[:, 0], [1.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(tdg.heads.IndependentBernoulli().mean(params)[:, 0], [0.5, 0.8])
    with pytest.raises(NotImplementedError, match="probabilities"):
        tdg.heads.Categorical(2).mean(np.zeros((1, 2)))


@pytest.mark.parametrize(
    ("head", "metric", "argument"),
    [
        (tdg.heads.Poisson(), "no_such_metric", "`metric`"),
        (tdg.heads.Poisson(), 3, "`metric`"),
        (tdg.heads.Poisson(), "mean", "`metric`"),
        (tdg.heads.IndependentNormal(), "accuracy", "`metric`"),
        (keras.layers.Dense(2), "mae", "`head`"),
        ("normal", "mae", "`head`"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(head, metric, argument):
    with pytest.raises(ValueError, match=argument):
        tdg.metrics.HeadMetric(head, metric)


def test_for_head_needs_a_metric():
    with pytest.raises(ValueError, match="`metrics`"):
        tdg.metrics.for_head(tdg.heads.Poisson())


def test_one_hot_labels_on_a_categorical_head_raise():
    metric = tdg.metrics.HeadMetric(tdg.heads.Categorical(3), "accuracy")
    with pytest.raises(ValueError, match="one class id per example"):
        metric.update_state(np.eye(3), np.zeros((3, 3)))
