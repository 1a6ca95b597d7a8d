"""`layers.DenseVariational`: posterior families and priors against closed forms.

Its Keras conventions are checked by the battery in tests/test_conformance.py.
Here: the KL of each family equals its closed form, a trainable prior reaches
the empirical-Bayes optimum of Bayesian linear regression, and the draws are
the posterior's.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_deepgen as tdg


def _built(layer, input_dim):
    layer.build((None, input_dim))
    return layer


def _covariance(q):
    """The covariance of a posterior over the flat weights, float64."""
    if isinstance(q, tfp.distributions.Independent):  # mean field
        return np.diag(q.variance().numpy().astype("float64"))
    return q.covariance().numpy().astype("float64")


def _gaussian_kl(mu_q, cov_q, mu_p, cov_p):
    """KL(N(mu_q, cov_q) || N(mu_p, cov_p)) in float64."""
    precision_p = np.linalg.inv(cov_p)
    delta = mu_p - mu_q
    return 0.5 * (
        np.trace(precision_p @ cov_q)
        + delta @ precision_p @ delta
        - len(mu_q)
        + np.linalg.slogdet(cov_p)[1]
        - np.linalg.slogdet(cov_q)[1]
    )


@pytest.mark.parametrize("family", ["mean_field", "full_covariance"])
def test_kl_against_a_normal_prior_is_the_closed_form(family):
    rng = np.random.default_rng(71)
    layer = _built(
        tdg.layers.DenseVariational(
            2, posterior=family, prior=tdg.priors.Normal(0.2, 0.7), posterior_scale_init=0.3
        ),
        3,
    )
    # Move the posterior away from its start: random means, and for the full
    # covariance random off-diagonal factors.
    for variable in layer.trainable_variables:
        variable.assign(variable + rng.normal(0.0, 0.3, variable.shape).astype("float32"))
    q = layer.posterior()
    mu = q.mean().numpy().astype("float64")
    cov = _covariance(q)
    expected = _gaussian_kl(mu, cov, np.full(8, 0.2), np.eye(8) * 0.49)
    np.testing.assert_allclose(float(layer.kl_divergence()), expected, rtol=1e-4)


def test_kl_against_a_trainable_prior_uses_its_current_values():
    layer = _built(
        tdg.layers.DenseVariational(
            1, posterior="full_covariance", prior=tdg.priors.TrainableNormal(learn_scale=True)
        ),
        2,
    )
    layer.prior_loc.assign([0.5, -1.0, 2.0])
    layer.prior_untransformed_scale.assign(float(np.log(np.expm1(0.4))))  # softplus^-1(0.4)
    q = layer.posterior()
    expected = _gaussian_kl(
        q.mean().numpy().astype("float64"),
        q.covariance().numpy().astype("float64"),
        np.array([0.5, -1.0, 2.0]),
        np.eye(3) * 0.16,
    )
    np.testing.assert_allclose(float(layer.kl_divergence()), expected, rtol=1e-4)
    assert layer.prior_untransformed_scale.trainable


def test_trainable_prior_reaches_the_empirical_bayes_optimum():
    """Bayesian linear regression, known noise, prior N(m, I) with m learned.

    The evidence N(y; X m, s^2 I + X X^T) is largest at m = least squares; there
    the posterior mean is least squares too and the covariance is
    (X^T X / s^2 + I)^-1. A full-covariance posterior can equal it, so the
    ELBO's optimum is exactly that.
    """
    rng = np.random.default_rng(73)
    n, d, noise = 200, 2, 0.5
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=d) + rng.normal() + noise * rng.normal(size=n)).astype("float32")
    keras.utils.set_random_seed(5)
    layer = tdg.layers.DenseVariational(
        1,
        posterior="full_covariance",
        prior=tdg.priors.TrainableNormal(),
        kl_weight=1 / n,
        seed=5,
    )
    head = tdg.heads.IndependentNormal(scale=noise)
    model = keras.Sequential([keras.Input((d,)), layer, head])
    steps_per_epoch = 100
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, 500, 0.5)
    model.compile(
        keras.optimizers.Adam(schedule),
        loss=head.loss,
        jit_compile=True,
        steps_per_execution=steps_per_epoch,
    )
    # Every batch is the whole data set (full-batch steps), 100 per Keras epoch.
    tiled_x, tiled_y = np.tile(x, (steps_per_epoch, 1)), np.tile(y[:, None], (steps_per_epoch, 1))
    model.fit(tiled_x, tiled_y, batch_size=n, epochs=30, shuffle=False, verbose=0)

    design = np.hstack([x, np.ones((n, 1))]).astype("float64")
    least_squares = np.linalg.lstsq(design, y, rcond=None)[0]
    covariance = np.linalg.inv(design.T @ design / noise**2 + np.eye(d + 1))
    posterior_sd = np.sqrt(np.diag(covariance))
    q = layer.posterior()
    # One weight draw per step leaves the optimum a little noisy: within half a
    # posterior stddev for the means, 10% for the stddevs.
    np.testing.assert_array_less(np.abs(q.mean().numpy() - least_squares), 0.5 * posterior_sd)
    np.testing.assert_array_less(
        np.abs(layer.prior_loc.numpy() - least_squares), 0.5 * posterior_sd
    )
    learned_sd = np.sqrt(np.diag(q.covariance().numpy()))
    np.testing.assert_allclose(learned_sd, posterior_sd, rtol=0.1)


@pytest.mark.parametrize("family", ["mean_field", "full_covariance"])
def test_draws_follow_the_posterior_and_mean_mode_uses_its_mean(family):
    layer = _built(
        tdg.layers.DenseVariational(1, posterior=family, posterior_scale_init=0.2, seed=9), 2
    )
    model = keras.Sequential([keras.Input((2,)), layer, tdg.heads.IndependentNormal(scale=1.0)])
    x = np.array([[1.0, -2.0]], "float32")
    # Output = w1 - 2 w2 + b: Normal with variance a^T Sigma a, a = (1, -2, 1).
    a = np.array([1.0, -2.0, 1.0])
    q = layer.posterior()
    mean, variance = a @ q.mean().numpy(), a @ _covariance(q) @ a
    out = tdg.predictive.predict(model, x, num_samples=4000, seed=0)
    np.testing.assert_allclose(out["mean"][0, 0], mean, atol=4 * np.sqrt(variance / 4000))
    np.testing.assert_allclose(out["epistemic_variance"][0, 0], variance, rtol=0.1)
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(layer(x).numpy()[0, 0], mean, rtol=1e-5)


def test_each_call_draws_new_weights_for_the_whole_batch():
    layer = _built(tdg.layers.DenseVariational(1, use_bias=False, seed=4), 1)
    ones = np.ones((6, 1), "float32")
    first, second = layer(ones).numpy(), layer(ones).numpy()
    assert np.ptp(first) == 0  # one kernel draw for the batch, as tfp.layers does
    assert first[0, 0] != second[0, 0]


def test_a_prior_without_closed_form_gets_a_monte_carlo_kl():
    prior = tdg.priors.ScaleMixtureNormal(0.5, 1.0, 0.1)
    layer = _built(tdg.layers.DenseVariational(2, prior=prior, seed=8), 3)
    q, p = layer.posterior(), layer.prior_distribution()
    sample = q.sample(seed=(1, 2))
    np.testing.assert_allclose(
        float(layer.kl_divergence(sample)),
        float(q.log_prob(sample) - p.log_prob(sample)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"posterior": "full"}, "`posterior`"),
        ({"prior": tdg.priors.LogUniform()}, "`prior` must have a proper density"),
        ({"prior": "normal"}, "`prior` must be"),
        ({"units": 0}, "`units`"),
        ({"posterior_scale_init": 0.0}, "posterior_scale_init"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tdg.layers.DenseVariational(**{"units": 2, **kwargs})


def test_full_covariance_refuses_large_layers_naming_the_alternative():
    layer = tdg.layers.DenseVariational(100, posterior="full_covariance")
    with pytest.raises(ValueError, match="mean-field"):
        layer.build((None, 30))


def test_trainable_prior_is_refused_by_layers_without_prior_variables():
    layer = tdg.layers.DenseFlipout(2, kernel_prior=tdg.priors.TrainableNormal())
    with pytest.raises(ValueError, match="DenseVariational"):
        layer(tf.ones((1, 3)))
