"""VariationalGaussianProcess: exact GP answers, the closed-form KL, training, arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_deepgen as tdg

tfd = tfp.distributions


def fresh_seed():
    return int(np.random.SeedSequence().generate_state(1)[0])


def kernel_matrix(name, a, b, amplitude, length_scale):
    """The kernels of the layer's registry, in numpy float64."""
    r = np.sqrt(np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)) / length_scale
    if name == "exponentiated_quadratic":
        k = np.exp(-0.5 * r**2)
    elif name == "matern_one_half":
        k = np.exp(-r)
    elif name == "matern_three_halves":
        k = (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
    else:
        k = (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
    return amplitude**2 * k


def exact_gp_posterior(kernel, x, y, x_test, noise_variance, prior_mean=0.0):
    """Mean and variance of f(x_test) | y for y = f(x) + N(0, noise_variance), float64."""
    gram = kernel(x, x) + noise_variance * np.eye(len(x))
    cross = kernel(x_test, x)
    mean = prior_mean + cross @ np.linalg.solve(gram, y - prior_mean)
    variance = np.diag(kernel(x_test, x_test)) - np.sum(
        cross * np.linalg.solve(gram, cross.T).T, axis=1
    )
    return mean, variance


def marginals(layer, x):
    mean, variance = layer.posterior_marginals(x.astype("float32"))
    return mean.numpy().astype("float64"), variance.numpy().astype("float64")


@pytest.mark.parametrize(
    "kernel_name,mean_function",
    [("exponentiated_quadratic", "zero"), ("matern_five_halves", "constant")],
)
def test_optimal_variational_posterior_is_the_exact_gp_posterior(kernel_name, mean_function):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    n, units, noise_variance = 10, 2, 0.1
    amplitude, length_scale = 1.3, 0.9
    # Spread-out inputs keep K(x, x) well conditioned for the float32 layer.
    x = np.linspace(-4.0, 4.0, n)[:, None] + rng.uniform(-0.2, 0.2, (n, 1))
    y = rng.normal(size=(n, units))
    x_test = rng.uniform(-5.0, 5.0, (30, 1))
    layer = tdg.layers.VariationalGaussianProcess(
        units,
        n,
        kernel=kernel_name,
        amplitude_init=amplitude,
        length_scale_init=length_scale,
        mean=mean_function,
        jitter=1e-7,
        seed=seed % 1000,
    )
    layer.build((None, 1))
    layer.inducing_points.assign(x.astype("float32"))
    prior_mean = 0.0
    if mean_function == "constant":
        prior_mean = np.array([0.7, -0.4])
        layer.constant_mean.assign(prior_mean.astype("float32"))
    layer.set_variational_posterior(*layer.optimal_variational_posterior(x, y, noise_variance))

    # The layer's float32 hyperparameters, exactly as it uses them.
    amplitude, length_scale = float(layer.amplitude), float(layer.length_scale)

    def kernel(a, b):
        return kernel_matrix(kernel_name, a, b, amplitude, length_scale)

    mean, variance = marginals(layer, x_test)
    for unit in range(units):
        exact_mean, exact_variance = exact_gp_posterior(
            kernel, x, y[:, unit], x_test, noise_variance, np.broadcast_to(prior_mean, units)[unit]
        )
        # float32 algebra against float64: measured errors 1e-6 to 1.4e-5.
        np.testing.assert_allclose(mean[:, unit], exact_mean, atol=2e-4, err_msg=f"seed {seed}")
        np.testing.assert_allclose(
            variance[:, unit], exact_variance, atol=2e-4, err_msg=f"seed {seed}"
        )


def test_fit_reaches_the_exact_gp_posterior():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    n, noise = 20, 0.3
    x = np.sort(rng.uniform(-3.0, 3.0, (n, 1)), axis=0)

    def kernel(a, b):
        return kernel_matrix("exponentiated_quadratic", a, b, 1.0, 1.0)

    f = np.linalg.cholesky(kernel(x, x) + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    y = (f + noise * rng.normal(size=n))[:, None]
    x_test = np.linspace(-3.5, 3.5, 50)[:, None]
    exact_mean, exact_variance = exact_gp_posterior(kernel, x, y[:, 0], x_test, noise**2)

    layer = tdg.layers.VariationalGaussianProcess(
        1, n, kl_weight=1 / n, jitter=1e-6, seed=seed % 1000
    )
    model = keras.Sequential(
        [keras.Input((1,)), layer, tdg.heads.IndependentNormal(1, scale=noise)]
    )
    layer.inducing_points.assign(x.astype("float32"))
    # Kernel, inducing points and noise at their true values: only q(v) trains.
    for variable in (layer.inducing_points, layer.raw_amplitude, layer.raw_length_scale):
        variable.trainable = False
    steps = 3000
    schedule = keras.optimizers.schedules.PolynomialDecay(0.05, steps, 5e-5, power=2.0)
    model.compile(keras.optimizers.Adam(schedule), model.layers[-1].loss, jit_compile=True)
    full_batch = tf.data.Dataset.from_tensors((x.astype("float32"), y.astype("float32")))
    model.fit(full_batch.repeat(steps), epochs=1, verbose=0)

    mean, variance = marginals(layer, x_test)
    mean_error = np.max(np.abs(mean[:, 0] - exact_mean) / np.sqrt(exact_variance))
    variance_error = np.max(np.abs(variance[:, 0] / exact_variance - 1))
    # Measured over 6 seeds: mean error 0.03-0.055 posterior SDs, variance 4-13 %.
    assert mean_error < 0.15, f"seed {seed}: mean off by {mean_error:.3f} posterior SDs"
    assert variance_error < 0.25, f"seed {seed}: variance off by {variance_error:.1%}"


def test_kl_is_tfps_kl_to_the_whitened_prior():
    layer = tdg.layers.VariationalGaussianProcess(2, 5, seed=fresh_seed() % 1000)
    layer.build((None, 3))
    rng = np.random.default_rng(fresh_seed())
    scale = np.tril(rng.normal(size=(2, 5, 5))) * 0.3
    scale[:, np.arange(5), np.arange(5)] = rng.uniform(0.2, 1.5, (2, 5))
    layer.set_variational_posterior(rng.normal(size=(2, 5)), scale)
    prior = tfd.MultivariateNormalDiag(tf.zeros(5), tf.ones(5))
    expected = tf.reduce_sum(tfd.kl_divergence(layer.variational_posterior(), prior))
    np.testing.assert_allclose(float(layer.kl_divergence()), float(expected), rtol=1e-5)
    layer(rng.normal(size=(4, 3)).astype("float32"), training=True)
    np.testing.assert_allclose(float(layer.last_kl), float(expected), rtol=1e-5)


def test_kl_is_zero_at_the_prior_and_added_with_its_weight():
    layer = tdg.layers.VariationalGaussianProcess(3, 4, kl_weight=0.25, seed=0)
    layer(np.zeros((2, 1), "float32"))
    assert abs(float(layer.kl_divergence())) < 1e-5
    layer.variational_loc.assign(np.ones((3, 4), "float32"))
    layer(np.zeros((2, 1), "float32"))
    # KL = |m|^2 / 2 = 3 * 4 / 2 = 6, weighted by 0.25.
    np.testing.assert_allclose(float(layer.losses[-1]), 1.5, rtol=1e-5)


def test_mean_mode_returns_the_posterior_mean_and_samples_follow_the_marginals():
    layer = tdg.layers.VariationalGaussianProcess(2, 6, seed=3)
    x = np.random.default_rng(0).normal(size=(500, 2)).astype("float32")
    layer.build(x.shape)
    layer.variational_loc.assign(np.full((2, 6), 0.5, "float32"))
    mean, variance = marginals(layer, x)
    with tdg.layers.sampling_mode(layer, "mean"):
        np.testing.assert_allclose(layer(x), mean, rtol=1e-6, atol=1e-6)
    mean_layer = tdg.layers.VariationalGaussianProcess(2, 6, sampling="mean", seed=3)
    mean_layer.build(x.shape)
    mean_layer.set_weights(layer.get_weights())
    np.testing.assert_allclose(mean_layer(x), mean, rtol=1e-6, atol=1e-6)
    standardized = (layer(x).numpy() - mean) / np.sqrt(variance)
    # 1,000 standard normals: mean within 4 SE, SD within 10 %.
    assert abs(standardized.mean()) < 4 / np.sqrt(standardized.size)
    assert abs(standardized.std() - 1) < 0.1


def test_monte_carlo_pass_draws_each_copy_from_the_marginals():
    layer = tdg.layers.VariationalGaussianProcess(1, 4, seed=5)
    x = np.linspace(-1, 1, 3)[:, None].astype("float32")
    layer.build(x.shape)
    mean, variance = marginals(layer, x)
    stacked = tdg.layers.StackedBatch(x, 2000)
    with tdg.layers.monte_carlo_mode(layer, 2000, stacked):
        draws = layer(stacked.copies).numpy().reshape(2000, 3)
    assert not layer.losses, "a Monte-Carlo pass must not add the KL"
    np.testing.assert_allclose(draws.mean(0), mean[:, 0], atol=4 * np.sqrt(variance.max() / 2000))
    np.testing.assert_allclose(draws.var(0), variance[:, 0], rtol=0.15)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"num_inducing_points": 0}, "num_inducing_points"),
        ({"kernel": "rbf"}, "kernel"),
        ({"mean": "linear"}, "mean"),
        ({"amplitude_init": 0.0}, "amplitude_init"),
        ({"jitter": -1.0}, "jitter"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, argument):
    arguments = {"units": 1, "num_inducing_points": 4, **kwargs}
    with pytest.raises(ValueError, match=argument) as error:
        tdg.layers.VariationalGaussianProcess(**arguments)
    if argument == "kernel":
        assert "exponentiated_quadratic" in str(error.value)
        assert "matern_five_halves" in str(error.value)


def test_wrong_input_rank_raises_with_the_shape():
    with pytest.raises(ValueError, match="3, 2"):
        tdg.layers.VariationalGaussianProcess(1, 4).build((None, 3, 2))


def test_default_model_fits_nonlinear_regression_to_the_noise_level():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    noise = 0.2

    def true_function(x):
        return 0.5 * x * (1 + np.sin(2 * x))

    def data(n):
        x = rng.uniform(-3.0, 3.0, (n, 1))
        y = true_function(x) + noise * rng.normal(size=(n, 1))
        return x.astype("float32"), y.astype("float32")

    (x, y), (x_test, y_test) = data(400), data(2000)
    head = tdg.heads.IndependentNormal(1, scale="homoscedastic")
    model = keras.Sequential(
        [
            keras.Input((1,)),
            tdg.layers.VariationalGaussianProcess(1, 16, kl_weight=1 / len(x), seed=seed % 1000),
            head,
        ]
    )
    model.compile(keras.optimizers.Adam(0.02), head.loss, jit_compile=True)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed % 1000)
    model.fit(batches.repeat().batch(100), steps_per_epoch=1500, epochs=1, verbose=0)

    predictive = tdg.predictive.predict(model, x_test, num_samples=200, outputs=["mean", "stddev"])
    nll = -np.mean(tfd.Normal(predictive["mean"], predictive["stddev"]).log_prob(y_test))
    # The NLL of the true function and noise on the same test points.
    noise_nll = -np.mean(tfd.Normal(true_function(x_test), noise).log_prob(y_test))
    # The predictive adds the GP's posterior variance and its fit error to the noise.
    # Measured over 6 seeds: 0.013-0.028 nats above the noise's NLL.
    assert nll < noise_nll + 0.075, f"seed {seed}: NLL {nll:.3f} vs noise NLL {noise_nll:.3f}"
