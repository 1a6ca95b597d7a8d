"""A user's own heads work wherever a built-in head does.

Each head below is written as a user would: it defines only its sizes and
its distribution (and, for a VAE encoder, `reparameterized_sample`). The
loss, the Monte-Carlo predictive, `tdg.metrics.for_head` and the VAE ask the
head what it is (`kind`, `integer_labels`, `mean`, `stddev`, `probabilities`,
...), never its class, so these heads get the same treatment as ours.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_deepgen as tdg

tfd = tfp.distributions


def f32(x):
    return np.asarray(x, "float32")


@keras.saving.register_keras_serializable(package="test_custom_heads")
class LaplaceHead(tdg.heads.DistributionHead):
    """`y ~ Laplace(loc, softplus(s))`, independently over `event_size` outputs."""

    @staticmethod
    def params_size(event_size=1):
        return 2 * event_size

    @property
    def _param_count(self):
        return 2 * self.event_size

    def marginal(self, params):
        loc, raw_scale = self._split(params, [self.event_size] * 2)
        return tfd.Laplace(loc, tdg.heads.base.positive(raw_scale, 1e-6))


@keras.saving.register_keras_serializable(package="test_custom_heads")
class TemperedCategorical(tdg.heads.DistributionHead):
    """`y ~ Categorical(softmax(logits / 2))`: one class id per example."""

    kind = "classifier"
    integer_labels = True

    def __init__(self, num_classes, **kwargs):
        kwargs.pop("event_size", None)
        super().__init__(1, **kwargs)
        self.num_classes = num_classes
        self.support = f"class ids 0, ..., {num_classes - 1}"

    @property
    def _param_count(self):
        return self.num_classes

    def _in_support(self, y):
        return (y >= 0) & (y < self.num_classes) & tf.equal(y, tf.round(y))

    def _distribution(self, params):
        return tfd.Categorical(logits=params / 2.0, dtype=tf.float32)

    def get_config(self):
        config = super().get_config()
        del config["event_size"]
        return {**config, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="test_custom_heads")
class LogScaleNormal(tdg.heads.DistributionHead):
    """A diagonal Normal with `scale = exp(s)`, usable as a VAE encoder's head."""

    @property
    def _param_count(self):
        return 2 * self.event_size

    def marginal(self, params):
        loc, log_scale = self._split(params, [self.event_size] * 2)
        return tfd.Normal(loc, tf.exp(log_scale))

    def reparameterized_sample(self, params, noise):
        marginal = self.marginal(tf.convert_to_tensor(params, "float32"))
        return marginal.loc + marginal.scale * noise


def _model(head, inputs=3, seed=0):
    dense = keras.layers.Dense(
        head.input_size, kernel_initializer=keras.initializers.GlorotUniform(seed)
    )
    return keras.Sequential([keras.Input((inputs,)), dense, head])


def test_the_heads_say_what_they_are_without_extra_code():
    laplace, tempered = LaplaceHead(2), TemperedCategorical(3)
    assert (laplace.kind, laplace.integer_labels, laplace.reparameterizable) == (
        "continuous",
        False,
        False,
    )
    assert (tempered.kind, tempered.integer_labels) == ("classifier", True)
    assert LogScaleNormal(2).reparameterizable
    params = f32(np.random.default_rng(0).normal(size=(5, 4)))
    expected = tfd.Laplace(params[:, :2], tf.math.softplus(params[:, 2:]) + 1e-6)
    np.testing.assert_allclose(laplace.mean(params), expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(laplace.stddev(params), expected.stddev(), rtol=1e-6)
    np.testing.assert_allclose(laplace.variance(params), expected.variance(), rtol=1e-6)
    logits = params[:, :3]
    np.testing.assert_allclose(
        tempered.probabilities(logits), tf.nn.softmax(logits / 2.0), rtol=1e-6
    )
    with pytest.raises(NotImplementedError, match="class ids"):
        tempered.mean(logits)
    with pytest.raises(NotImplementedError, match="not 'classifier'"):
        laplace.probabilities(params)
    with pytest.raises(NotImplementedError, match="reparameterized_sample"):
        laplace.reparameterized_sample(params, np.zeros((1, 5, 2), "float32"))


def test_a_custom_continuous_head_trains_predicts_and_is_measured():
    rng = np.random.default_rng(1)
    x = f32(rng.normal(size=(256, 3)))
    y = f32(x[:, :1] + rng.laplace(scale=0.3, size=(256, 1)))
    head = LaplaceHead()
    model = _model(head)
    metrics = tdg.metrics.for_head(head, "mae")
    model.compile(keras.optimizers.Adam(0.05), head.loss, metrics=metrics)
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The MAE metric sees the head's mean, the Laplace's loc.
    params = model(x)
    logs = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
    mae = np.mean(np.abs(y - head.mean(params).numpy()))
    np.testing.assert_allclose(logs["mae"], mae, rtol=1e-5)
    # A deterministic model: the predictive is the head's distribution itself.
    out = tdg.predictive.predict(model, x[:8], num_samples=4, seed=0)
    exact = tfd.Laplace(*[t.numpy() for t in _loc_scale(head, params[:8])])
    np.testing.assert_allclose(out["mean"], exact.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["stddev"], exact.stddev(), rtol=1e-5)
    levels = np.array(tdg.predictive.DEFAULT_QUANTILES, "float32")[:, None, None]
    quantiles = np.moveaxis(exact.quantile(levels).numpy(), 0, 1)
    np.testing.assert_allclose(out["quantiles"], quantiles, rtol=1e-4, atol=1e-4)
    assert out["samples"].shape == (8, 4, 1)


def _loc_scale(head, params):
    marginal = head.marginal(params)
    return marginal.loc, marginal.scale


def test_a_custom_classifier_gets_probabilities_entropies_and_accuracy():
    rng = np.random.default_rng(2)
    x = f32(rng.normal(size=(128, 3)))
    labels = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    head = TemperedCategorical(3)
    model = _model(head)
    metrics = tdg.metrics.for_head(head, "accuracy")
    assert isinstance(metrics[0].wrapped, keras.metrics.SparseCategoricalAccuracy)
    model.compile(keras.optimizers.Adam(0.05), head.loss, metrics=metrics)
    history = model.fit(x, labels, epochs=5, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.6
    params = model(x[:8])
    probabilities = tf.nn.softmax(params / 2.0).numpy()
    out = tdg.predictive.predict(model, x[:8], num_samples=4, seed=0)
    assert set(out) == {
        "probabilities",
        "predictive_entropy",
        "expected_entropy",
        "mutual_information",
        "samples",
    }
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5)
    entropy = -np.sum(probabilities * np.log(probabilities), -1)
    np.testing.assert_allclose(out["predictive_entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(out["expected_entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(out["mutual_information"], 0.0, atol=1e-6)
    assert set(np.unique(out["samples"])) <= {0.0, 1.0, 2.0}


def test_custom_heads_are_a_vaes_encoder_and_decoder():
    rng = np.random.default_rng(3)
    x = f32(rng.laplace(size=(64, 4)) @ rng.normal(size=(4, 4)))
    encoder_head, decoder_head = LogScaleNormal(2), LaplaceHead(4)
    encoder = _model(encoder_head, inputs=4, seed=1)
    decoder = _model(decoder_head, inputs=2, seed=2)
    vae = tdg.models.VAE(encoder, decoder, seed=0)
    vae.compile(keras.optimizers.Adam(0.01))
    history = vae.fit(x, epochs=3, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    elbo = vae.elbo(x, num_samples=2)
    log_likelihood = vae.log_likelihood(x, num_samples=16)
    assert elbo.shape == log_likelihood.shape == (64,)
    assert np.all(np.isfinite(elbo)) and np.mean(log_likelihood) >= np.mean(elbo) - 0.5
    # The analytic KL of the custom encoder is the closed-form KL of two
    # diagonal Normals, q = N(mu, sigma^2) and the prior N(m, s^2), summed over z.
    params = encoder(x[:4])
    mu, sigma = params[:, :2].numpy(), np.exp(params[:, 2:].numpy())
    m, s = vae.prior.loc, vae.prior.scale
    closed_form = np.sum(np.log(s / sigma) + (sigma**2 + (mu - m) ** 2) / (2 * s**2) - 0.5, axis=-1)
    np.testing.assert_allclose(
        tdg.models.latent.analytic_kl(encoder_head, params, vae.prior),
        closed_form,
        rtol=1e-5,
        atol=1e-6,
    )
    # generate and reconstruct use the decoder head's mean (the Laplace's loc).
    assert vae.generate(3).shape == (3, 4)
    assert vae.reconstruct(x[:5]).shape == (5, 4)
    with tdg.layers.sampling_mode(vae, "mean"):
        z = vae.latent_sampler.posterior_sample(encoder_head, params, 2)
        reconstruction = vae.reconstruct(x[:5])
    np.testing.assert_allclose(z[1], encoder_head.mean(params), rtol=1e-6)
    # At z = E[z | x], the reconstruction is the Laplace's loc of decoder(z).
    latent_mean = encoder_head.mean(encoder(x[:5]))
    decoder_params = decoder(latent_mean)
    np.testing.assert_allclose(
        reconstruction, decoder_head.mean(decoder_params), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(reconstruction, decoder_params[:, :4], rtol=1e-5, atol=1e-6)


@keras.saving.register_keras_serializable(package="test_custom_heads")
class ShiftedLaplace(LaplaceHead):
    """A Laplace head whose `mean` and `variance` are its own, not the distribution's."""

    def mean(self, params):
        return super().mean(params) + 100.0

    def variance(self, params):
        return 4.0 * super().variance(params)


def test_the_predictive_uses_a_heads_own_mean_and_variance():
    x = f32(np.random.default_rng(4).normal(size=(8, 3)))
    head = ShiftedLaplace()
    model = _model(head)
    params = model(x)
    loc, scale = _loc_scale(head, params)
    out = tdg.predictive.predict(model, x, num_samples=4, seed=0)
    # A deterministic model: the predictive moments are the head's own.
    np.testing.assert_allclose(out["mean"], loc.numpy() + 100.0, rtol=1e-5)
    laplace_variance = 2.0 * scale.numpy() ** 2
    np.testing.assert_allclose(out["variance"], 4.0 * laplace_variance, rtol=1e-5)
    np.testing.assert_allclose(out["stddev"], 2.0 * np.sqrt(laplace_variance), rtol=1e-5)
