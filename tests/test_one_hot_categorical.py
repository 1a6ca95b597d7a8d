"""`heads.OneHotCategorical`: `Categorical` with one-hot labels, everywhere a head goes.

Each check compares against `Categorical` on the same logits (or TFP's own
`OneHotCategorical`), on logits and labels drawn fresh in the test.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_deepgen as tdg

tfd = tfp.distributions


def _problem(seed, n=64, num_classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, num_classes)).astype("float32")
    ids = rng.integers(0, num_classes, n)
    return logits, ids, np.eye(num_classes, dtype="float32")[ids]


def test_log_likelihood_equals_tfp_and_the_categorical_head():
    logits, ids, one_hot = _problem(seed=11)
    head = tdg.heads.OneHotCategorical(5)
    expected = tfd.OneHotCategorical(logits=logits).log_prob(one_hot).numpy()
    np.testing.assert_allclose(head.log_prob(one_hot, logits).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        head.log_prob(one_hot, logits).numpy(),
        tdg.heads.Categorical(5).log_prob(ids, logits).numpy(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(float(head.loss(one_hot, logits)), -expected.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([[1.0, 1.0, 0.0]]),  # two classes at once
        np.array([[0.5, 0.5, 0.0]]),  # soft labels
        np.array([[0.0, 0.0, 0.0]]),  # no class
        np.array([[2.0, -1.0, 0.0]]),  # sums to 1, not one-hot
    ],
)
def test_rows_that_are_not_one_hot_raise_naming_the_support(labels):
    head = tdg.heads.OneHotCategorical(3)
    with pytest.raises(ValueError, match=r"y_true.*one-hot rows of length 3"):
        head.loss(labels, np.zeros((1, 3), "float32"))


def test_class_ids_instead_of_rows_raise_naming_the_event_size():
    head = tdg.heads.OneHotCategorical(3)
    with pytest.raises(ValueError, match="last dimension 3"):
        head.loss(np.array([[2.0], [0.0]]), np.zeros((2, 3), "float32"))


def test_num_classes_below_two_is_refused():
    with pytest.raises(ValueError, match="num_classes"):
        tdg.heads.OneHotCategorical(1)


def _twin_models(num_classes, seed):
    """The same network ending in `Categorical` and in `OneHotCategorical`."""

    def network(head):
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(num_classes),
                head,
            ]
        )

    keras.utils.set_random_seed(seed)
    ids_model = network(tdg.heads.Categorical(num_classes))
    one_hot_model = network(tdg.heads.OneHotCategorical(num_classes))
    one_hot_model.set_weights(ids_model.get_weights())
    return ids_model, one_hot_model


def test_training_follows_the_categorical_head_step_for_step():
    num_classes = 4
    rng = np.random.default_rng(23)
    x = rng.normal(size=(96, 3)).astype("float32")
    teacher = rng.normal(size=(3, num_classes))
    ids = np.argmax(x @ teacher + rng.gumbel(size=(96, num_classes)), -1)
    ids_model, one_hot_model = _twin_models(num_classes, seed=5)
    histories = []
    for model, labels in ((ids_model, ids), (one_hot_model, np.eye(num_classes)[ids])):
        model.compile(keras.optimizers.SGD(0.1), loss=model.layers[-1].loss)
        histories.append(model.fit(x, labels, batch_size=32, epochs=3, shuffle=False, verbose=0))
    np.testing.assert_allclose(
        histories[0].history["loss"], histories[1].history["loss"], rtol=1e-5
    )
    assert histories[1].history["loss"][-1] < histories[1].history["loss"][0]


def test_predictive_matches_the_categorical_head_and_samples_one_hot_rows():
    x = np.random.default_rng(3).normal(size=(10, 3)).astype("float32")
    ids_model, one_hot_model = _twin_models(num_classes=3, seed=7)
    ours = tdg.predictive.predict(one_hot_model, x, num_samples=4, seed=1)
    reference = tdg.predictive.predict(ids_model, x, num_samples=4, seed=1)
    for name in ("probabilities", "predictive_entropy", "expected_entropy"):
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6)
    assert ours["predictive_entropy"].shape == (10,)
    samples = ours["samples"]
    assert samples.shape == (10, 4, 3)
    np.testing.assert_array_equal(samples.sum(-1), 1.0)
    assert set(np.unique(samples)) <= {0.0, 1.0}


def test_accuracy_metric_is_categorical_and_calibration_asks_for_the_argmax():
    logits, ids, one_hot = _problem(seed=31, n=200, num_classes=4)
    accuracy = tdg.metrics.HeadMetric(tdg.heads.OneHotCategorical(4), "accuracy")
    accuracy.update_state(one_hot, logits)
    expected = np.mean(np.argmax(logits, -1) == ids)
    np.testing.assert_allclose(float(accuracy.result()), expected, rtol=1e-6)
    # The calibration metrics take class ids; one-hot rows get a pointer to them.
    probs = tf.nn.softmax(logits).numpy()
    with pytest.raises(ValueError, match="one-hot rows pass their argmax"):
        tdg.metrics.expected_calibration_error(one_hot, probs)


def test_saved_model_file_round_trip(tmp_path):
    head = tdg.heads.OneHotCategorical(3, name="label")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), head])
    path = tmp_path / "one_hot.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[-1], tdg.heads.OneHotCategorical)
    assert loaded.layers[-1].num_classes == 3
    x = np.ones((2, 2), "float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy())
