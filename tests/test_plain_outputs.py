"""The predictive on models without a head, and `DistributionModel`.

A model ending in softmax, sigmoid or no activation gets the head
`tdg.heads.output_head` picks; its Monte-Carlo predictive is checked against
summaries computed by hand from the same output samples.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_deepgen as tdg
from tfp_deepgen.predictive.summaries import continuous_summaries


def _dropout_model(units, activation, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(32, activation="relu"),
            tdg.layers.MCDropout(0.3, seed=seed),
            keras.layers.Dense(units, activation=activation),
        ]
    )


@pytest.mark.parametrize(
    "activation, head_class",
    [
        ("softmax", tdg.heads.CategoricalProbabilities),
        ("sigmoid", tdg.heads.BernoulliProbabilities),
        (None, tdg.heads.PointPrediction),
        ("tanh", tdg.heads.PointPrediction),
    ],
)
def test_output_head_reads_the_activation(activation, head_class):
    model = _dropout_model(3, activation, seed=0)
    head = tdg.heads.output_head(model)
    assert isinstance(head, head_class) and head.input_size == 3


def test_softmax_layer_is_read_as_probabilities():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
    assert isinstance(tdg.heads.output_head(model), tdg.heads.CategoricalProbabilities)


def test_deterministic_softmax_model_predicts_its_own_output():
    rng = np.random.default_rng()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = rng.normal(size=(10, 4)).astype("float32")
    out = tdg.predictive.predict(model, x, num_samples=4)
    np.testing.assert_allclose(out["probabilities"], model(x), rtol=1e-5)
    np.testing.assert_allclose(out["mutual_information"], 0.0, atol=1e-6)


def test_mc_dropout_classifier_averages_its_samples():
    seed = int(np.random.default_rng().integers(1 << 30))
    model = _dropout_model(3, "softmax", seed)
    x = np.random.default_rng(seed).normal(size=(5, 4)).astype("float32")
    predictive = tdg.predictive.MonteCarloPredictive(model, num_samples=4000)
    samples = predictive.parameter_samples(x).numpy()  # (S, batch, classes): probabilities
    np.testing.assert_allclose(samples.sum(-1), 1.0, rtol=1e-5)
    out = predictive(x)  # other dropout masks: equal within Monte-Carlo error
    np.testing.assert_allclose(out["probabilities"], samples.mean(0), atol=0.02)
    p = out["probabilities"].numpy()
    np.testing.assert_allclose(out["predictive_entropy"], -np.sum(p * np.log(p), -1), rtol=1e-4)
    assert np.all(out["mutual_information"].numpy() > 0)


def test_point_prediction_summaries_are_the_outputs_spread():
    """Mean and stddev over samples, all epistemic; quantiles of the samples themselves."""
    rng = np.random.default_rng()
    outputs = rng.normal(size=(200, 6, 2)).astype("float32")  # (S, batch, outputs)
    head = tdg.heads.PointPrediction(2)
    levels = (0.1, 0.5, 0.9)
    out = continuous_summaries(head, outputs, levels, ("quantiles",), seed=None)
    np.testing.assert_allclose(out["mean"], outputs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["stddev"], outputs.std(0), rtol=1e-4)
    np.testing.assert_array_equal(out["aleatoric_variance"], 0.0)
    np.testing.assert_allclose(out["epistemic_variance"], out["variance"])
    # The mixture of point masses has the samples' own (inverted-CDF) quantiles.
    expected = np.quantile(outputs, levels, axis=0, method="inverted_cdf")  # (Q, batch, outputs)
    np.testing.assert_allclose(out["quantiles"], np.moveaxis(expected, 0, 1), atol=1e-5)


def test_plain_regression_model_exports_its_predictive(tmp_path):
    model = _dropout_model(1, None, seed=1)
    x = np.random.default_rng().normal(size=(3, 4)).astype("float32")
    path = tdg.export.export_saved_model(model, tmp_path / "plain", num_samples=8)
    served = tf.saved_model.load(path)
    assert "predict_stddev" in served.signatures
    stddev = served.signatures["predict_stddev"](tf.constant(x))["stddev"].numpy()
    assert stddev.shape == (3, 1) and np.all(stddev > 0)  # dropout spreads the outputs


def test_distribution_model_returns_the_heads_distribution():
    rng = np.random.default_rng()
    head = tdg.heads.IndependentNormal()
    model = keras.Sequential(
        [keras.Input((3,)), tdg.layers.DenseFlipout(head.input_size, seed=2), head]
    )
    x = rng.normal(size=(7, 3)).astype("float32")
    y = rng.normal(size=(7, 1)).astype("float32")
    yhat_fn = tdg.heads.DistributionModel(model)
    with tdg.layers.sampling_mode(model, "mean"):
        yhat = yhat_fn(x)
        params = model(x)
    assert yhat.batch_shape == (7,) and yhat.event_shape == (1,)
    np.testing.assert_allclose(yhat.mean(), head.mean(params), rtol=1e-6)
    np.testing.assert_allclose(yhat.stddev(), head.stddev(params), rtol=1e-6)
    np.testing.assert_allclose(-yhat.log_prob(y), head.checked_nll(y, params), rtol=1e-6)
    assert yhat.sample(seed=1).shape == (7, 1)
    # One weight draw per call, as a tfp.layers model.
    assert not np.allclose(yhat_fn(x).mean(), yhat_fn(x).mean())


def test_distribution_model_on_a_plain_classifier():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng().normal(size=(5, 4)).astype("float32")
    yhat = tdg.heads.DistributionModel(model)(x)
    np.testing.assert_allclose(yhat.probs_parameter(), model(x), rtol=1e-5)


def test_model_without_output_size_is_refused():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="`model` has no head and no known output size"):
        tdg.predictive.MonteCarloPredictive(Subclassed())
