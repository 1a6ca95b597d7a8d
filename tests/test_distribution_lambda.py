"""`tdg.heads.DistributionLambda`: any TFP distribution as a head.

Checked against the built-in heads it can reproduce exactly (the same
distribution, the same losses step by step, the same predictive), on a family
we do not ship (Laplace), and for the errors a tfp.layers user porting a
lambda meets.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_deepgen as tdg

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def normal_like_ours(params):
    """The distribution `tdg.heads.IndependentNormal(1)` makes."""
    loc, raw_scale = tf.split(params, 2, axis=-1)
    scale = tf.math.softplus(tdg.heads.base.DEFAULT_SCALE_SLOPE * raw_scale) + 1e-6
    return tfd.Independent(tfd.Normal(loc, scale), 1)


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def laplace(params):
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.Independent(tfd.Laplace(loc, 1e-3 + tf.math.softplus(raw_scale)), 1)


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def categorical(params):
    return tfd.Categorical(logits=params)


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def diagonal_mvn(params):
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.MultivariateNormalDiag(loc, tf.math.softplus(raw_scale))


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def poisson(params):
    return tfd.Independent(tfd.Poisson(log_rate=params), 1)


@keras.saving.register_keras_serializable(package="test_distribution_lambda")
def scalar_normal(params):
    return tfd.Normal(params[..., 0], 1.0)


def unregistered(params):
    return tfd.Independent(tfd.Normal(params, 1.0), 1)


def _mlp(head, num_inputs, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(head.input_size),
            head,
        ]
    )


def test_reproduces_independent_normal_step_for_step():
    rng = np.random.default_rng()
    seed = int(rng.integers(1 << 30))
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.3 * rng.normal(size=(64, 1))).astype("float32")
    losses = []
    for head in (
        tdg.heads.IndependentNormal(),
        tdg.heads.DistributionLambda(normal_like_ours, params_size=2),
    ):
        model = _mlp(head, 3, seed)
        model.compile(keras.optimizers.Adam(1e-2), loss=head.loss)
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_fits_a_family_we_do_not_ship():
    """Laplace noise of a fresh linear teacher: the fitted NLL nears the true one."""
    rng = np.random.default_rng()
    n, true_scale = 2000, rng.uniform(0.3, 1.0)
    weights = rng.normal(size=(2, 1))
    x = rng.normal(size=(n, 2)).astype("float32")
    y = (x @ weights + rng.laplace(0.0, true_scale, (n, 1))).astype("float32")
    head = tdg.heads.DistributionLambda(laplace, params_size=2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(head.input_size), head])
    learning_rate = keras.optimizers.schedules.CosineDecay(0.05, 30 * n // 100)  # to 0 at the end
    model.compile(keras.optimizers.Adam(learning_rate), loss=head.loss)
    model.fit(x, y, batch_size=100, epochs=30, verbose=0)
    nll = float(model.evaluate(x, y, verbose=0))
    # The true model's NLL on the same data: no sampling noise in the comparison.
    true_nll = np.mean(np.log(2 * true_scale) + np.abs(y - x @ weights) / true_scale)
    assert abs(nll - true_nll) < 0.01, (nll, true_nll)


def test_classifier_matches_categorical_head():
    rng = np.random.default_rng()
    logits = rng.normal(size=(8, 5, 4)).astype("float32")  # (S, batch, classes)
    ours = tdg.heads.Categorical(4)
    wrapped = tdg.heads.DistributionLambda(
        categorical, params_size=4, kind="classifier", integer_labels=True
    )
    labels = rng.integers(0, 4, 5)
    np.testing.assert_allclose(
        wrapped.log_prob(labels, logits[0]), ours.log_prob(labels, logits[0]), rtol=1e-6
    )
    for a, b in zip(
        tdg.predictive.summaries.classifier_summaries(ours, logits, (), None).values(),
        tdg.predictive.summaries.classifier_summaries(wrapped, logits, (), None).values(),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="y_true"):
        wrapped.checked_nll(np.array([0, 1, 2, 3, 1.5]), logits[0])


def test_predictive_and_saving(tmp_path):
    head = tdg.heads.DistributionLambda(poisson, params_size=1, kind="count")
    model = keras.Sequential(
        [keras.Input((3,)), tdg.layers.DenseFlipout(head.input_size, seed=3), head]
    )
    x = np.random.default_rng().normal(size=(6, 3)).astype("float32")
    out = tdg.predictive.predict(model, x, num_samples=16, seed=0)
    assert out["quantiles"].shape == (6, 3, 1)
    np.testing.assert_array_equal(out["quantiles"], np.floor(out["quantiles"]))  # counts
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.layers[-1].make_distribution is poisson
    with tdg.layers.sampling_mode(model, "mean"), tdg.layers.sampling_mode(loaded, "mean"):
        np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_multivariate_distribution_has_moments_not_quantiles():
    head = tdg.heads.DistributionLambda(diagonal_mvn, params_size=4, event_size=2)
    params = np.random.default_rng().normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(head.stddev(params), tf.math.softplus(params[:, 2:]), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="per-output marginal"):
        head.marginal(params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"make_distribution": lambda p: tfd.Normal(p, 1.0), "params_size": 1}, "registered"),
        ({"make_distribution": unregistered, "params_size": 1}, "register_keras_serializable"),
        ({"make_distribution": "normal", "params_size": 1}, "make_distribution"),
        ({"make_distribution": laplace, "params_size": 0}, "params_size"),
        ({"make_distribution": laplace, "params_size": 2, "kind": "binary"}, "kind"),
        ({"make_distribution": laplace, "params_size": 2, "integer_labels": True}, "classifier"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tdg.heads.DistributionLambda(**kwargs)


def test_wrong_event_shape_says_to_wrap_in_independent():
    head = tdg.heads.DistributionLambda(scalar_normal, params_size=1)
    with pytest.raises(ValueError, match="Independent"):
        head.distribution(np.zeros((2, 1), "float32"))
