"""Variational and sparse variational dropout: the log-uniform KL, moments, pruning."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

import tfp_deepgen as tdg

LOG_ALPHAS = np.linspace(-8.0, 8.0, 81)


def exact_negative_kl(log_alpha):
    """`-KL(N(theta, alpha theta^2) || LogUniform)` by numerical integration.

    `-KL = log(alpha) / 2 - E[log|eps|] + C` with `eps ~ N(1, alpha)`
    (Kingma et al., 2015, appendix C); `C = -(euler_gamma + log 2) / 2` is
    the constant that makes it vanish as `alpha -> inf`, where
    `E[log|eps|] -> log(alpha) / 2 + E[log|N(0, 1)|]`.
    """
    s = math.exp(0.5 * log_alpha)
    # eps = 1 + s z: integrate over z, splitting at the log singularity z = -1/s.
    singular = -1.0 / s
    lo, hi = min(-40.0, singular - 40.0), 40.0

    def integrand(z):
        return math.log(abs(1.0 + s * z)) * stats.norm.pdf(z)

    points = [singular] if lo < singular < hi else None
    expected_log, _ = integrate.quad(integrand, lo, hi, points=points, limit=500)
    return 0.5 * log_alpha - expected_log - 0.5 * (np.euler_gamma + math.log(2.0))


def test_kl_approximation_matches_numerical_integration_within_001():
    approx = -tdg.priors.LogUniform().kl_from_log_alpha(LOG_ALPHAS).numpy()
    exact = np.array([exact_negative_kl(a) for a in LOG_ALPHAS])
    error = np.abs(approx - exact)
    assert error.max() < 0.01, (
        f"max error {error.max():.4f} at log alpha {LOG_ALPHAS[error.argmax()]}"
    )
    # The reference itself is sane: -KL is negative and increases towards 0.
    assert np.all(exact < 0) and np.all(np.diff(exact) > 0)


def test_kl_gradient_pushes_alpha_up():
    log_alpha = tf.constant(LOG_ALPHAS[1:-1], "float32")  # inside the clip range
    with tf.GradientTape() as tape:
        tape.watch(log_alpha)
        kl = tf.reduce_sum(tdg.priors.LogUniform().kl_from_log_alpha(log_alpha))
    grad = tape.gradient(kl, log_alpha).numpy()
    # Minimising the loss moves log alpha against the gradient: up.
    assert np.all(grad < 0)


def test_kl_from_posterior_parameters_equals_kl_from_log_alpha():
    loc = tf.constant([0.5, -2.0, 1.0])
    scale = tf.constant([0.1, 3.0, 1.0])
    prior = tdg.priors.LogUniform()
    log_alpha = np.log(scale.numpy() ** 2 / loc.numpy() ** 2)
    np.testing.assert_allclose(
        prior.kl_divergence(loc, scale), np.sum(prior.kl_from_log_alpha(log_alpha)), rtol=1e-5
    )


def _kl_gradients(layer, x):
    layer(x)
    with tf.GradientTape() as tape:
        layer(x, training=True)
        kl = tf.add_n(layer.losses)
    return dict(
        zip(
            [v.path for v in layer.trainable_variables],
            tape.gradient(kl, layer.trainable_variables),
            strict=True,
        )
    )


def test_sparse_layer_kl_gradient_raises_the_noise():
    layer = tdg.layers.DenseSparseVariationalDropout(4, seed=0)
    grads = _kl_gradients(layer, tf.ones((2, 5)))
    grad = grads[layer.kernel_posterior_params.log_variance.path].numpy()
    inside = np.abs(layer.log_alpha.numpy()) < 8
    assert inside.any() and np.all(grad[inside] < 0)


def test_variational_dropout_kl_gradient_raises_alpha():
    layer = tdg.layers.DenseVariationalDropout(4, initial_rate=0.2, seed=0)
    grads = _kl_gradients(layer, tf.ones((2, 5)))
    assert np.all(grads[layer.kernel_posterior_params.raw_log_alpha.path].numpy() < 0)


def _moments(layer, x, n=40_000):
    rows = np.tile(x, (n, 1))
    y = layer(rows, training=True).numpy().astype("float64")
    return y.mean(0), y.var(0)


def test_variational_dropout_samples_the_weight_noise_marginal():
    layer = tdg.layers.DenseVariationalDropout(3, initial_rate=0.3, max_rate=0.5, seed=1)
    x = np.array([[1.0, -2.0, 0.5, 3.0]], "float32")
    layer.build(x.shape)
    theta = np.random.RandomState(0).randn(4, 3).astype("float32")
    layer.kernel_posterior_params.loc.assign(theta)
    alpha = 0.3 / 0.7
    mean, var = _moments(layer, x)
    expected_var = (x**2) @ (alpha * theta**2)
    np.testing.assert_array_less(
        np.abs(mean - (x @ theta)[0]), 5 * np.sqrt(expected_var[0] / 40_000)
    )
    np.testing.assert_allclose(var, expected_var[0], rtol=0.05)
    np.testing.assert_allclose(layer.dropout_rate.numpy(), [0.3] * 3, rtol=1e-5)


def test_variational_dropout_rate_is_capped_and_keeps_its_gradient():
    layer = tdg.layers.DenseVariationalDropout(2, alpha_per="layer", initial_rate=0.2, max_rate=0.3)
    layer.build((None, 3))
    raw = layer.kernel_posterior_params.raw_log_alpha
    raw.assign(5.0)  # far past the cap
    rate = float(layer.dropout_rate.numpy()[0])
    assert 0.29 < rate < 0.3
    # A soft bound, not a clip: the loss still moves log alpha back down.
    x = tf.ones((4, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True))) + tf.add_n(layer.losses)
    assert float(tf.abs(tape.gradient(loss, raw))) > 0


def _sparse_layer_with_known_alpha():
    """4 -> 2 layer; weights in column 0 have log alpha = 6, column 1 has -4."""
    layer = tdg.layers.DenseSparseVariationalDropout(2, seed=3)
    layer.build((None, 4))
    theta = np.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [0.5, 1.0]], "float32")
    log_alpha = np.stack([np.full(4, 6.0), np.full(4, -4.0)], axis=1)
    q = layer.kernel_posterior_params
    q.loc.assign(theta)
    q.log_variance.assign(log_alpha + np.log(theta**2))
    layer.bias.assign([0.25, -0.5])
    return layer, theta


def test_sparse_training_samples_every_weight_by_local_reparameterization():
    layer, theta = _sparse_layer_with_known_alpha()
    x = np.array([[1.0, 0.5, -1.0, 2.0]], "float32")
    mean, var = _moments(layer, x)
    expected_var = (x**2) @ np.exp(layer.kernel_posterior_params.log_variance.numpy())
    np.testing.assert_allclose(var, expected_var[0], rtol=0.05)
    np.testing.assert_array_less(
        np.abs(mean - (x @ theta)[0] - [0.25, -0.5]), 5 * np.sqrt(expected_var[0] / 40_000)
    )


def test_sparse_inference_drops_weights_above_threshold():
    layer, theta = _sparse_layer_with_known_alpha()
    x = np.array([[1.0, 0.5, -1.0, 2.0]], "float32")
    assert layer.sparsity() == 0.5
    assert layer.sparsity(threshold=7.0) == 0.0
    mask = np.array([[0.0, 1.0]] * 4, "float32")
    with tdg.layers.sampling_mode(layer, "mean"):
        np.testing.assert_allclose(layer(x), x @ (theta * mask) + [0.25, -0.5], rtol=1e-6)
        # Training keeps every weight.
        np.testing.assert_allclose(layer(x, training=True), x @ theta + [0.25, -0.5], rtol=1e-6)
    # Sampling at inference: the dropped column is its bias (up to the 1e-6
    # stddev of the variance floor).
    draws = np.concatenate([layer(x).numpy() for _ in range(5)])
    np.testing.assert_allclose(draws[:, 0], 0.25, atol=1e-5)
    assert draws[:, 1].std() > 0


def _sparse_regression(n=400, dim=12, noise_std=0.5, seed=0):
    """`y = 2 x0 - 3 x1 + 1.5 x2 + noise`: 3 of `dim` inputs matter.

    The noise is made orthogonal to every input, so in this sample the
    irrelevant inputs have least-squares coefficient exactly 0. Without that,
    an irrelevant input whose chance correlation with the noise is about one
    standard error has a genuine local optimum of the ELBO near
    `log alpha ~ 1-2`: the KL's pull `kl_weight * |dKL/dlog alpha| * 2 / theta`
    falls off quickly as alpha grows and cannot beat the data term's pull
    towards the least-squares value. Pruning then depends on the noise draw
    rather than on the method.
    """
    rng = np.random.RandomState(seed)
    x = rng.randn(n, dim)
    coef = np.zeros(dim)
    coef[:3] = [2.0, -3.0, 1.5]
    noise = rng.randn(n)
    noise -= x @ np.linalg.lstsq(x, noise, rcond=None)[0]
    noise *= noise_std / noise.std()
    y = x @ coef + noise
    return x.astype("float32"), y.astype("float32")[:, None], coef.astype("float32")


@pytest.fixture(scope="module")
def fitted_sparse_regression():
    x, y, coef = _sparse_regression()
    keras.utils.set_random_seed(0)
    noise_var = 0.25
    # Gaussian likelihood with known variance: MSE / (2 var) + KL / n per
    # example, i.e. MSE + (2 var / n) KL.
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            tdg.layers.DenseSparseVariationalDropout(1, kl_weight=2 * noise_var / len(x), seed=0),
        ]
    )
    # Ten passes over the data per epoch, 100 epochs; the learning rate must
    # decay: Adam's jitter in theta at a constant rate keeps alpha small.
    repeats, batch_size, epochs = 10, 100, 100
    steps_per_epoch = repeats * len(x) // batch_size
    schedule = keras.optimizers.schedules.CosineDecay(0.02, steps_per_epoch * epochs)
    model.compile(
        keras.optimizers.Adam(schedule),
        "mse",
        jit_compile=True,
        steps_per_execution=steps_per_epoch,
    )
    history = model.fit(
        np.tile(x, (repeats, 1)),
        np.tile(y, (repeats, 1)),
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[tdg.callbacks.SparsityMonitor(per_layer=True)],
    )
    return model, history, x, coef


def test_sparse_vd_prunes_irrelevant_inputs_and_keeps_relevant_ones(fitted_sparse_regression):
    model, _, _, coef = fitted_sparse_regression
    log_alpha = model.layers[0].log_alpha.numpy()[:, 0]
    relevant = coef != 0
    assert np.all(log_alpha[relevant] < 3), log_alpha
    assert np.all(log_alpha[~relevant] > 3), log_alpha
    theta = model.layers[0].kernel_posterior_params.loc.numpy()[:, 0]
    np.testing.assert_allclose(theta[relevant], coef[relevant], atol=0.1)


def test_sparsity_monitor_prune_and_compression_agree(fitted_sparse_regression, tmp_path):
    model, history, x, coef = fitted_sparse_regression
    expected_sparsity = 1 - np.count_nonzero(coef) / coef.size
    layer_name = model.layers[0].name
    assert history.history["sparsity"][-1] == pytest.approx(expected_sparsity)
    assert history.history[f"sparsity_{layer_name}"][-1] == pytest.approx(expected_sparsity)
    assert history.history["sparsity"][0] < history.history["sparsity"][-1]
    ratio = tdg.pruning.compression_ratio(model)
    assert ratio == pytest.approx(coef.size / np.count_nonzero(coef))
    assert history.history["compression"][-1] == pytest.approx(ratio)

    pruned = tdg.pruning.prune(model)
    assert isinstance(pruned.layers[0], keras.layers.Dense)
    assert np.count_nonzero(pruned.layers[0].kernel.numpy()) == np.count_nonzero(coef)
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(
            pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
        )
    export_dir = str(tmp_path / "pruned")
    pruned.export(export_dir, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(export_dir)  # keep a reference: it owns the variables
    served = loaded.serve(tf.constant(x[:4]))
    np.testing.assert_allclose(served, pruned(x[:4]), rtol=1e-5, atol=1e-6)


def test_pruned_conv_network_matches_the_mean_network():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            tdg.layers.Conv2DSparseVariationalDropout(
                3, 3, strides=2, padding="same", activation="relu"
            ),
            keras.layers.Flatten(),
            tdg.layers.DenseSparseVariationalDropout(2),
        ]
    )
    conv = model.layers[0]
    q = conv.kernel_posterior_params
    # Drop about half of the conv weights.
    drop = np.random.RandomState(0).rand(*q.shape) < 0.5
    q.log_variance.assign(np.where(drop, 10.0, -10.0) + np.log(q.loc.numpy() ** 2 + 1e-8))
    x = np.random.RandomState(1).randn(4, 8, 8, 2).astype("float32")
    pruned = tdg.pruning.prune(model)
    assert [type(layer).__name__ for layer in pruned.layers] == ["Conv2D", "Flatten", "Dense"]
    assert conv.sparsity() == pytest.approx(drop.mean())
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: tdg.layers.DenseSparseVariationalDropout(2, kernel_prior=tdg.priors.Normal()),
            "kernel_prior",
        ),
        (lambda: tdg.layers.DenseSparseVariationalDropout(2, threshold=float("nan")), "threshold"),
        (
            lambda: tdg.layers.DenseVariationalDropout(2, initial_rate=0.6, max_rate=0.5),
            "initial_rate",
        ),
        (lambda: tdg.layers.DenseVariationalDropout(2, initial_rate=1e-4), "initial_rate"),
        (lambda: tdg.layers.DenseVariationalDropout(2, alpha_per="weight"), "alpha_per"),
        (lambda: tdg.layers.DenseVariationalDropout(2, max_rate=1.0), "max_rate"),
        (lambda: tdg.priors.LogUniform().distribution(), "improper"),
        (
            lambda: tdg.pruning.prune(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])),
            "sparse",
        ),
    ],
)
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_monte_carlo_predictive_sees_the_kept_weights_noise_only():
    layer = tdg.layers.DenseSparseVariationalDropout(1, seed=5)
    model = keras.Sequential([keras.Input((3,)), layer, tdg.heads.IndependentNormal(1, scale=1.0)])
    theta = np.array([[1.0], [-2.0], [0.5]], "float32")
    log_alpha = np.array([[6.0], [-2.0], [-1.0]], "float32")  # the first weight is dropped
    q = layer.kernel_posterior_params
    q.loc.assign(theta)
    q.log_variance.assign(log_alpha + np.log(theta**2))
    x = np.array([[2.0, 1.0, -1.0]], "float32")
    out = tdg.predictive.predict(model, x, num_samples=4000, outputs=["mean", "epistemic_variance"])
    kept = np.array([0.0, 1.0, 1.0])
    expected_mean = float((x[0] * kept) @ theta[:, 0])
    expected_var = float((x[0] ** 2 * kept) @ np.exp(q.log_variance.numpy()[:, 0]))
    assert abs(float(out["mean"][0, 0]) - expected_mean) < 5 * np.sqrt(expected_var / 4000)
    np.testing.assert_allclose(out["epistemic_variance"][0, 0], expected_var, rtol=0.1)
