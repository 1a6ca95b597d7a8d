"""`layers.KLDivergenceAddLoss`: the KL it adds against closed forms, the draws it passes on.

The layer's Keras conventions (config, `.keras`, XLA, export, seeds, mixed
precision, MirroredStrategy) are checked by the battery in
tests/test_conformance.py; here, its numbers. Parameters are drawn fresh in
each test.
"""

import keras
import numpy as np
import pytest
import scipy.stats as st
import tensorflow as tf

import tfp_deepgen as tdg


def _latent_model(head, **kwargs):
    layer = tdg.layers.KLDivergenceAddLoss(head, **kwargs)
    model = keras.Sequential([keras.Input((head.input_size,)), layer])
    return model, layer


def test_diagonal_normal_kl_is_the_closed_form_averaged_over_the_batch():
    rng = np.random.default_rng(41)
    head = tdg.heads.IndependentNormal(3)
    params = rng.normal(size=(16, head.input_size)).astype("float32")
    prior_loc, prior_scale, weight = 0.3, 1.7, 0.25
    model, _ = _latent_model(
        head, prior=tdg.priors.Normal(prior_loc, prior_scale), kl_weight=weight, seed=1
    )
    model(params)
    mu = head.mean(params).numpy().astype("float64")
    sigma = head.stddev(params).numpy().astype("float64")
    kl = np.sum(
        np.log(prior_scale / sigma)
        + (sigma**2 + (mu - prior_loc) ** 2) / (2 * prior_scale**2)
        - 0.5,
        axis=-1,
    )
    np.testing.assert_allclose(float(model.losses[0]), weight * kl.mean(), rtol=1e-5)


def test_full_covariance_kl_is_the_closed_form():
    rng = np.random.default_rng(43)
    head = tdg.heads.MultivariateNormalTriL(3)
    params = rng.normal(size=(8, head.input_size)).astype("float32")
    prior_scale = 0.8
    model, layer = _latent_model(head, prior=tdg.priors.Normal(0.0, prior_scale), seed=2)
    model(params, training=True)
    q = head.distribution(params)
    mu = q.mean().numpy().astype("float64")
    covariance = q.covariance().numpy().astype("float64")
    d = 3
    expected = 0.5 * (
        np.trace(covariance, axis1=-2, axis2=-1) / prior_scale**2
        + np.sum(mu**2, -1) / prior_scale**2
        - d
        + 2 * d * np.log(prior_scale)
        - np.linalg.slogdet(covariance)[1]
    )
    np.testing.assert_allclose(float(model.losses[0]), expected.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(layer.last_kl), expected.mean(), rtol=1e-4)


def test_prior_without_closed_form_gets_an_unbiased_single_draw_estimate():
    rng = np.random.default_rng(47)
    head = tdg.heads.IndependentNormal(2, scale=0.7)
    params = rng.normal(size=(1, head.input_size)).astype("float32")
    prior = tdg.priors.ScaleMixtureNormal(0.4, 1.5, 0.2)
    model, _ = _latent_model(head, prior=prior, seed=3)

    def log_prior(z):
        return np.sum(np.log(0.4 * st.norm.pdf(z, 0.0, 1.5) + 0.6 * st.norm.pdf(z, 0.0, 0.2)), -1)

    mu = head.mean(params).numpy()[0].astype("float64")
    # The estimate is log q(z) - log p(z) at the z the layer passes on.
    z = model(params).numpy()[0].astype("float64")
    estimate = np.sum(st.norm.logpdf(z, mu, 0.7)) - log_prior(z)
    np.testing.assert_allclose(float(model.losses[0]), estimate, rtol=1e-4)
    # Unbiased: its mean over many calls is the KL (a large independent MC here).
    calls = []
    for _ in range(400):
        model(params)
        calls.append(float(model.losses[0]))
    calls = np.array(calls)
    draws = rng.normal(mu, 0.7, size=(200_000, 2))
    reference = np.mean(np.sum(st.norm.logpdf(draws, mu, 0.7), -1) - log_prior(draws))
    standard_error = calls.std() / np.sqrt(len(calls))
    assert abs(calls.mean() - reference) < 4 * standard_error + 1e-3


def test_passes_on_draws_of_the_latent_and_its_mean_in_mean_mode():
    rng = np.random.default_rng(53)
    head = tdg.heads.IndependentNormal(2)
    row = rng.normal(size=(1, head.input_size)).astype("float32")
    params = np.repeat(row, 4000, axis=0)
    model, _ = _latent_model(head, seed=4)
    z = model(params).numpy()
    mu, sigma = head.mean(row).numpy()[0], head.stddev(row).numpy()[0]
    np.testing.assert_allclose(z.mean(0), mu, atol=4 * sigma.max() / np.sqrt(4000))
    np.testing.assert_allclose(z.std(0), sigma, rtol=0.05)
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(model(params[:3]).numpy(), head.mean(params[:3]).numpy())
        assert len(model.losses) == 1  # the KL still counts while training in mean mode


def test_monte_carlo_predictive_draws_one_latent_per_copy_and_adds_no_kl():
    head = tdg.heads.IndependentNormal(2, scale=1.0)
    latent = tdg.layers.KLDivergenceAddLoss(tdg.heads.IndependentNormal(2), seed=5)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), latent, keras.layers.Dense(2), head]
    )
    x = np.random.default_rng(59).normal(size=(5, 3)).astype("float32")
    out = tdg.predictive.predict(model, x, num_samples=64, seed=0)
    assert np.all(out["epistemic_variance"] > 0)
    with tdg.layers.monte_carlo_mode(model, 2):
        model(np.concatenate([x, x]))
        assert not model.losses


def test_a_variational_autoencoder_of_plain_layers_trains_with_fit():
    (x, _), _ = tdg.datasets.load_digits(seed=7)
    x = (x[:512] > 0.5).astype("float32")
    latent = tdg.heads.IndependentNormal(2)
    pixels = tdg.heads.IndependentBernoulli(64)
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(latent.input_size),
            tdg.layers.KLDivergenceAddLoss(latent, seed=11),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(pixels.input_size),
            pixels,
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), loss=pixels.loss, jit_compile=True)
    history = model.fit(x, x, batch_size=64, epochs=15, verbose=0).history["loss"]
    # Uniform pixels cost 64 log 2 = 44.4 nats; the negative ELBO falls well below.
    assert history[0] > history[-1] and history[-1] < 35.0
    kl = float(model.layers[2].last_kl)
    assert 0.0 < kl < history[-1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head": tdg.heads.Poisson()}, "`head` must be a tfp_deepgen.heads head"),
        ({"head": "normal"}, "`head` must be a tfp_deepgen.heads head"),
        (
            {"head": tdg.heads.IndependentNormal(2), "prior": tdg.priors.LogUniform()},
            "`prior` must have a proper density",
        ),
        ({"head": tdg.heads.IndependentNormal(2), "prior": 1.0}, "`prior` must be"),
        ({"head": tdg.heads.IndependentNormal(2), "kl_weight": -1.0}, "kl_weight"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tdg.layers.KLDivergenceAddLoss(**kwargs)


def test_wrong_input_size_names_the_head_size():
    model_input = keras.Input((5,))
    with pytest.raises(ValueError, match="last dimension 4"):
        tdg.layers.KLDivergenceAddLoss(tdg.heads.IndependentNormal(2))(model_input)


def test_float_inputs_under_mixed_precision_give_compute_dtype_draws():
    layer = tdg.layers.KLDivergenceAddLoss(
        tdg.heads.IndependentNormal(2), dtype="mixed_bfloat16", seed=6
    )
    z = layer(tf.ones((3, 4), "bfloat16"))
    assert z.dtype == tf.bfloat16
    assert layer.last_kl.dtype == tf.float32


@pytest.mark.parametrize(
    "head_class", [tdg.heads.IndependentNormal, tdg.heads.MultivariateNormalTriL]
)
def test_fits_under_xla_with_a_ragged_last_batch(head_class):
    """The batch size is unknown to XLA; the full-covariance head once failed to compile."""
    rng = np.random.default_rng()
    head = head_class(3)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(head.input_size),
            tdg.layers.KLDivergenceAddLoss(head, seed=0),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse", jit_compile=True)
    x, y = rng.normal(size=(40, 5)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 16, 16, 8
    history = model.fit(batches, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
