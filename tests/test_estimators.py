"""The three gradient estimators of the variational linear layers behave as specified.

- flipout cuts the gradient variance against plain reparameterization on the
  same model and weights (its signs are tested in test_random.py);
- every estimator gives each output its exact marginal `N(x.mu + b, x^2.sigma^2)`;
- reparameterization shares one kernel sample across the batch, flipout and
  local reparameterization do not;
- `sampling="mean"` is deterministic and equals the layer with posterior means;
- a variational bias is sampled; `last_kl` is the KL of the current posterior;
- the Monte-Carlo KL path (scale-mixture prior) is finite, differentiable and
  unbiased.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from layer_classes import ALL, CONV, DENSE, set_posterior, variable

from tfp_deepgen import layers, posteriors, priors

tfd = tfp.distributions

SHARED_SAMPLE = {
    layers.DenseReparameterization,
    layers.Conv1DReparameterization,
    layers.Conv2DReparameterization,
    layers.Conv3DReparameterization,
}


def _name(cls):
    return cls.__name__


def _make(cls, seed=0, **kwargs):
    """A layer of `cls` with 3 outputs (units or filters)."""
    if cls in DENSE:
        return cls(3, seed=seed, **kwargs)
    return cls(3, 2, seed=seed, **kwargs)


def _input_shape(cls, batch):
    if cls in DENSE:
        return (batch, 5)
    return (batch,) + (4,) * cls.rank + (2,)


# --------------------------------------------------------------------------
# Gradient variance: flipout vs reparameterization
# --------------------------------------------------------------------------


def _gradient_draws(cls, x, y, loc, scale, repeats):
    layer = cls(y.shape[-1], kernel_posterior_scale_init=scale, kl_weight=0.0, seed=3)
    layer.build(x.shape)
    variable(layer, "kernel_loc").assign(loc)
    variables = [variable(layer, "kernel_loc"), variable(layer, "kernel_log_scale")]

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x) - y))
        return tape.gradient(loss, variables)

    draws = [gradient() for _ in range(repeats)]
    return [np.stack([d[i].numpy() for d in draws]).astype(np.float64) for i in range(2)]


def test_flipout_gradient_variance_is_lower_than_reparameterization():
    rng = np.random.default_rng(0)
    batch, d_in, d_out, repeats = 256, 16, 8, 500
    x = tf.constant(rng.normal(size=(batch, d_in)), tf.float32)
    y = tf.constant(rng.normal(size=(batch, d_out)), tf.float32)
    loc = (0.3 * rng.normal(size=(d_in, d_out))).astype(np.float32)
    scale = 0.1

    rep_loc, rep_scale = _gradient_draws(layers.DenseReparameterization, x, y, loc, scale, repeats)
    flip_loc, flip_scale = _gradient_draws(layers.DenseFlipout, x, y, loc, scale, repeats)

    # Total variance over the entries of each gradient, across noise draws.
    rep_loc_var = rep_loc.var(axis=0, ddof=1).sum()
    flip_loc_var = flip_loc.var(axis=0, ddof=1).sum()
    rep_scale_var = rep_scale.var(axis=0, ddof=1).sum()
    flip_scale_var = flip_scale.var(axis=0, ddof=1).sum()
    loc_ratio = rep_loc_var / flip_loc_var
    scale_ratio = rep_scale_var / flip_scale_var
    print(
        f"gradient variance reparameterization / flipout (batch {batch}): "
        f"kernel loc {loc_ratio:.2f}x, kernel scale {scale_ratio:.2f}x"
    )
    # Measured ~15x (loc) and ~4.4x (scale). Flipout removes the part of the
    # variance shared by the examples of a batch; it cannot remove the eps^2
    # term of the scale gradient, hence the smaller scale ratio.
    assert flip_loc_var > 0 and flip_scale_var > 0
    assert loc_ratio > 5.0
    assert scale_ratio > 2.0

    # Both estimators are unbiased for the same gradient: their means agree
    # within the Monte-Carlo error of the noisier one.
    for rep, flip in ((rep_loc, flip_loc), (rep_scale, flip_scale)):
        stderr = np.sqrt((rep.var(axis=0, ddof=1) + flip.var(axis=0, ddof=1)) / repeats)
        z = (rep.mean(axis=0) - flip.mean(axis=0)) / stderr
        assert np.max(np.abs(z)) < 5.0, np.max(np.abs(z))
        assert np.mean(np.abs(z) < 2.0) > 0.85


# --------------------------------------------------------------------------
# Output marginals
# --------------------------------------------------------------------------


def _dense_with_known_posterior(cls, bias_prior=None, seed=5):
    rng = np.random.default_rng(1)
    layer = cls(3, seed=seed, bias_prior=bias_prior)
    layer.build((None, 4))
    loc = rng.normal(size=(4, 3))
    scale = rng.uniform(0.1, 0.6, size=(4, 3))
    set_posterior(layer, "kernel", loc, scale)
    bias = np.array([0.5, -1.0, 2.0])
    if bias_prior is None:
        variable(layer, "bias").assign(bias.astype(np.float32))
    return layer, loc, scale, bias


def test_local_reparameterization_marginals_in_one_batch():
    """Independent noise per example: one big batch of identical rows suffices."""
    layer, loc, scale, bias = _dense_with_known_posterior(layers.DenseLocalReparameterization)
    x = np.array([0.7, -1.2, 0.4, 2.0])
    n = 40_000
    out = layer(np.tile(x, (n, 1)).astype(np.float32)).numpy().astype(np.float64)
    mean = x @ loc + bias
    var = (x**2) @ scale**2
    mean_se = np.sqrt(var / n)
    var_se = var * math.sqrt(2 / (n - 1))
    np.testing.assert_array_less(np.abs(out.mean(axis=0) - mean), 4 * mean_se)
    np.testing.assert_array_less(np.abs(out.var(axis=0, ddof=1) - var), 4 * var_se)
    # Units are sampled independently.
    corr = np.corrcoef(out.T)
    off_diagonal = corr[~np.eye(3, dtype=bool)]
    assert np.all(np.abs(off_diagonal) < 4 / math.sqrt(n))


@pytest.mark.parametrize("cls", DENSE, ids=_name)
def test_output_marginals_match_analytic(cls):
    """Per unit, every estimator gives N(x.mu + b, x^2.sigma^2) over many draws."""
    layer, loc, scale, bias = _dense_with_known_posterior(cls)
    x = np.array([0.7, -1.2, 0.4, 2.0])
    batch, calls = 32, 1500
    xb = tf.constant(np.tile(x, (batch, 1)), tf.float32)
    call = tf.function(lambda: layer(xb))
    out = np.stack([call().numpy() for _ in range(calls)]).astype(np.float64)  # [calls, batch, 3]
    mean = x @ loc + bias
    var = (x**2) @ scale**2
    # Calls are independent, examples within a call may not be: use one
    # statistic per call and their spread across calls as the error.
    call_means = out.mean(axis=1)
    call_vars = np.mean((out - mean) ** 2, axis=1)  # unbiased for `var` given the true mean
    mean_err = np.abs(call_means.mean(axis=0) - mean)
    var_err = np.abs(call_vars.mean(axis=0) - var)
    mean_se = call_means.std(axis=0, ddof=1) / math.sqrt(calls)
    var_se = call_vars.std(axis=0, ddof=1) / math.sqrt(calls)
    np.testing.assert_array_less(mean_err, 4 * mean_se)
    np.testing.assert_array_less(var_err, 4 * var_se)
    # The test can tell a wrong variance (e.g. sigma instead of sigma^2) apart.
    np.testing.assert_array_less(4 * var_se, 0.2 * var)


# --------------------------------------------------------------------------
# Shared vs per-example noise
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_identical_examples(cls):
    # Wide enough that flipout's sign patterns cannot collide by chance: two
    # examples get the same perturbation only if all 16 + 8 signs agree up to
    # a global flip (probability 2^-23 per pair).
    if cls in DENSE:
        layer = cls(8, kernel_posterior_scale_init=0.1, seed=0)
        shape = (1, 16)
    else:
        layer = cls(8, 2, kernel_posterior_scale_init=0.1, seed=0)
        shape = (1,) + (4,) * cls.rank + (16,)
    rng = np.random.default_rng(2)
    one = rng.normal(size=shape).astype(np.float32)
    batch = np.repeat(one, 8, axis=0)
    out = layer(batch).numpy()
    flat = out.reshape(8, -1)
    if cls in SHARED_SAMPLE:
        # One kernel sample per call, shared by every example (up to float
        # rounding of the batched matmul / conv).
        np.testing.assert_allclose(
            flat, np.broadcast_to(flat[:1], flat.shape), rtol=1e-5, atol=1e-5
        )
    else:
        # Per-example noise: no two examples get the same output.
        for i in range(8):
            for j in range(i + 1, 8):
                assert np.max(np.abs(flat[i] - flat[j])) > 1e-3, (i, j)
    # Whatever the estimator, the outputs are noisy (differ from the mean
    # output) and successive calls draw new noise.
    with layers.sampling_mode(layer, "mean"):
        mean_output = layer(batch).numpy().reshape(8, -1)
    assert np.min(np.max(np.abs(flat - mean_output), axis=1)) > 1e-3
    again = layer(batch).numpy()
    assert np.max(np.abs(again - out)) > 1e-3


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_same_seed_same_outputs(cls):
    x = np.random.default_rng(3).normal(size=_input_shape(cls, 4)).astype(np.float32)
    a = _make(cls, seed=11, kernel_posterior_scale_init=0.1)
    b = _make(cls, seed=11, kernel_posterior_scale_init=0.1)
    a.build(x.shape)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


# --------------------------------------------------------------------------
# sampling="mean"
# --------------------------------------------------------------------------


@pytest.mark.parametrize("variational_bias", [False, True])
@pytest.mark.parametrize("cls", DENSE, ids=_name)
def test_mean_mode_dense_equals_x_loc_plus_b(cls, variational_bias):
    bias_prior = priors.Normal(0.0, 1.0) if variational_bias else None
    layer = cls(
        3,
        sampling="mean",
        bias_prior=bias_prior,
        kernel_posterior_scale_init=0.5,
        bias_posterior_scale_init=0.5,
        bias_initializer="random_normal",
        seed=0,
    )
    x = np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32)
    first = layer(x).numpy()
    second = layer(x).numpy()
    np.testing.assert_array_equal(first, second)
    loc = variable(layer, "kernel_loc").numpy()
    bias = variable(layer, "bias_loc" if variational_bias else "bias").numpy()
    assert np.any(bias != 0)
    np.testing.assert_allclose(first, x @ loc + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_mean_mode_conv_equals_deterministic_conv(cls):
    layer = cls(
        3,
        2,
        padding="same",
        sampling="mean",
        kernel_posterior_scale_init=0.5,
        bias_initializer="random_normal",
        seed=0,
    )
    x = np.random.default_rng(5).normal(size=_input_shape(cls, 2)).astype(np.float32)
    first = layer(x).numpy()
    np.testing.assert_array_equal(first, layer(x).numpy())
    reference = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[cls.rank](
        3, 2, padding="same"
    )
    reference.build(x.shape)
    reference.set_weights([variable(layer, "kernel_loc").numpy(), variable(layer, "bias").numpy()])
    np.testing.assert_allclose(first, reference(x).numpy(), rtol=1e-5, atol=1e-5)


def test_sampling_mode_context_switches_to_means():
    layer = layers.DenseFlipout(2, kernel_posterior_scale_init=0.5, seed=0)
    model = keras.Sequential([keras.Input((3,)), layer])
    x = np.ones((4, 3), np.float32)
    with layers.sampling_mode(model, "mean"):
        out = model(x).numpy()
        np.testing.assert_array_equal(out, model(x).numpy())
        np.testing.assert_allclose(out, x @ variable(layer, "kernel_loc").numpy(), atol=1e-6)
    assert layer.sampling == "sample"
    assert np.max(np.abs(model(x).numpy() - out)) > 1e-3


# --------------------------------------------------------------------------
# Variational bias
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", DENSE, ids=_name)
def test_variational_bias_is_sampled(cls):
    bias_loc = np.array([1.0, -2.0, 0.5])
    bias_scale = np.array([0.5, 0.2, 1.0])
    layer = cls(3, bias_prior=priors.Normal(0.0, 1.0), seed=6)
    layer.build((None, 4))
    assert layer.bias is None
    assert layer.bias_posterior() is not None
    set_posterior(layer, "bias", bias_loc, bias_scale)
    # Zero inputs: the output is the bias alone.
    x = tf.zeros((16, 4))
    call = tf.function(lambda: layer(x))
    calls = 600
    out = np.stack([call().numpy() for _ in range(calls)]).astype(np.float64)
    call_means = out.mean(axis=1)
    call_vars = np.mean((out - bias_loc) ** 2, axis=1)
    mean_se = call_means.std(axis=0, ddof=1) / math.sqrt(calls)
    var_se = call_vars.std(axis=0, ddof=1) / math.sqrt(calls)
    np.testing.assert_array_less(np.abs(call_means.mean(axis=0) - bias_loc), 4 * mean_se)
    np.testing.assert_array_less(np.abs(call_vars.mean(axis=0) - bias_scale**2), 4 * var_se)

    # The bias noise is part of the graph: the loss reaches the bias scale.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x)))
    grad = tape.gradient(loss, variable(layer, "bias_log_scale"))
    assert grad is not None and np.all(np.abs(grad.numpy()) > 0)


# --------------------------------------------------------------------------
# KL bookkeeping
# --------------------------------------------------------------------------


@pytest.mark.parametrize("variational_bias", [False, True])
@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_last_kl_equals_prior_kl_of_posterior(cls, variational_bias):
    kernel_prior = priors.Normal(0.2, 0.7)
    bias_prior = priors.Normal(-0.1, 2.0) if variational_bias else None
    layer = _make(
        cls,
        kernel_prior=kernel_prior,
        bias_prior=bias_prior,
        kl_weight=0.01,
        kernel_posterior_scale_init=0.3,
        bias_posterior_scale_init=0.4,
    )
    x = np.random.default_rng(7).normal(size=_input_shape(cls, 2)).astype(np.float32)
    layer(x)

    q = layer.kernel_posterior()
    expected = tf.reduce_sum(
        tfd.kl_divergence(q.distribution, kernel_prior.distribution(q.event_shape))
    )
    if variational_bias:
        qb = layer.bias_posterior()
        expected += tf.reduce_sum(
            tfd.kl_divergence(qb.distribution, bias_prior.distribution(qb.event_shape))
        )
    else:
        assert layer.bias_posterior() is None
    assert float(expected) > 1.0
    np.testing.assert_allclose(float(layer.last_kl), float(expected), rtol=1e-5)
    # The layer adds kl_weight * KL as its loss.
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.01 * float(expected), rtol=1e-5)


def _mixture_kl_quadrature(loc, scale, prior, points=100_001):
    """Exact KL(N(loc, scale^2) || prior), summed over entries, in float64."""
    total = 0.0
    for m, s in zip(np.ravel(loc), np.ravel(scale), strict=True):
        w = np.linspace(m - 12 * s, m + 12 * s, points)
        log_q = -0.5 * ((w - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        log_p = prior.log_prob(tf.constant(w)).numpy()
        total += np.trapezoid(np.exp(log_q) * (log_q - log_p), w)
    return total


@pytest.mark.parametrize("sampling", ["sample", "mean"])
@pytest.mark.parametrize("cls", DENSE, ids=_name)
def test_monte_carlo_kl_with_scale_mixture_prior(cls, sampling):
    prior = priors.ScaleMixtureNormal(0.5, 1.0, 0.05)
    bias_prior = priors.ScaleMixtureNormal(0.25, 2.0, 0.1)
    layer = cls(
        2,
        kernel_prior=prior,
        bias_prior=bias_prior,
        kl_weight=0.5,
        kernel_posterior_scale_init=0.2,
        bias_posterior_scale_init=0.3,
        sampling=sampling,
        seed=8,
    )
    x = tf.constant(np.random.default_rng(8).normal(size=(4, 3)), tf.float32)
    layer.build(x.shape)

    # Finite KL and finite, non-zero gradients for every trainable variable.
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_sum(out) + tf.add_n(layer.losses)
    assert np.isfinite(float(layer.last_kl))
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * float(layer.last_kl), rtol=1e-6)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(grads) == 4  # kernel loc/scale, bias loc/scale
    for var, grad in zip(layer.trainable_variables, grads, strict=True):
        assert grad is not None, var.name
        assert np.all(np.isfinite(grad.numpy())), var.name
        assert np.any(grad.numpy() != 0), var.name

    # The KL alone is differentiable w.r.t. the posterior scales.
    with tf.GradientTape() as tape:
        layer(x)
        kl = layer.losses[0]
    scale_grads = tape.gradient(
        kl, [variable(layer, "kernel_log_scale"), variable(layer, "bias_log_scale")]
    )
    for grad in scale_grads:
        assert np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)

    # Each call draws a fresh posterior sample: averaged over calls the
    # reported KL is the exact KL (unbiased one-sample estimate).
    @tf.function
    def kl_draw():
        layer(x)
        return layer.last_kl

    calls = 1500
    draws = np.array([float(kl_draw()) for _ in range(calls)])
    assert np.all(np.isfinite(draws))
    assert np.std(draws) > 0
    kernel_q, bias_q = layer.kernel_posterior(), layer.bias_posterior()
    exact = _mixture_kl_quadrature(
        kernel_q.mean().numpy(), kernel_q.stddev().numpy(), prior
    ) + _mixture_kl_quadrature(bias_q.mean().numpy(), bias_q.stddev().numpy(), bias_prior)
    stderr = draws.std(ddof=1) / math.sqrt(calls)
    assert abs(draws.mean() - exact) < 4 * stderr, (draws.mean(), exact, stderr)


@pytest.mark.parametrize("cls", DENSE)
def test_inference_calls_add_the_kl_but_do_not_record_it(cls):
    layer = cls(2, kl_weight=0.5, seed=0)
    x = tf.ones((3, 4))
    layer(x, training=True)
    recorded = float(layer.last_kl)
    assert recorded > 0
    # Shrink the posterior: a recording call would now report another KL.
    variable(layer, "kernel_log_scale").assign(tf.fill((4, 2), -20.0))
    layer(x, training=False)
    assert float(layer.last_kl) == recorded
    # The loss term is still added (evaluate() reports the negative ELBO).
    (inference_loss,) = layer.losses
    layer(x)  # training=None, e.g. a direct call: recorded
    assert float(layer.last_kl) != recorded
    # Normal prior: the KL is analytic, the same at every call.
    np.testing.assert_allclose(float(inference_loss), 0.5 * float(layer.last_kl), rtol=1e-6)


@pytest.mark.parametrize("cls", DENSE, ids=lambda c: c.__name__)
def test_posterior_params_hold_the_layers_variables(cls):
    layer = cls(3, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    layer(x)
    q = layer.kernel_posterior_params
    assert any(q.loc is v for v in layer.trainable_variables)
    assert layer.bias_posterior_params is None  # point-estimated bias
    kernel = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    q.loc.assign(kernel)
    with layers.sampling_mode(layer, "mean"):
        np.testing.assert_allclose(layer(x), x @ kernel + layer.bias.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.kernel_posterior().mean(), kernel)
    with_bias = cls(3, bias_prior=priors.Normal(), seed=0)
    with_bias(x)
    assert with_bias.bias_posterior_params.loc.shape == (3,)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_posterior_kl_and_its_gradients_are_tfps(jit_compile):
    """`scale = exp(log_scale)`; the KL reads the log scale: TFP's values and gradients."""
    layer = keras.layers.Layer()
    rng = np.random.default_rng()
    log_scale = rng.uniform(-9.0, 1.0, 64).astype("float32")
    loc = rng.normal(0.0, 1.0, 64).astype("float32")
    q = posteriors.MeanFieldNormal(layer, "kernel", loc.shape)
    q.loc.assign(loc)
    q.log_scale.assign(log_scale)
    prior = priors.Normal(0.3, 0.7)
    variables = [q.loc, q.log_scale]

    @tf.function(jit_compile=jit_compile)
    def kls_and_gradients():
        with tf.GradientTape(persistent=True) as tape:
            ours = q.kl_divergence(prior, q.scale())
            posterior = tfd.Normal(q.loc, tf.exp(q.log_scale))
            reference = tf.reduce_sum(tfd.kl_divergence(posterior, prior.distribution()))
        return ours, reference, tape.gradient(ours, variables), tape.gradient(reference, variables)

    ours, reference, gradients, reference_gradients = kls_and_gradients()
    np.testing.assert_allclose(q.scale(), np.exp(log_scale), rtol=1e-6)
    np.testing.assert_allclose(ours, reference, rtol=1e-5)
    for gradient, expected in zip(gradients, reference_gradients, strict=True):
        np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-5)


def test_a_vanishing_posterior_scale_keeps_the_kl_finite():
    """Below exp(-87) the float32 scale is 0; the KL still reads the log scale."""
    layer = keras.layers.Layer()
    q = posteriors.MeanFieldNormal(layer, "kernel", (3,))
    log_scale = np.array([-200.0, -100.0, -5.0])
    q.log_scale.assign(log_scale.astype("float32"))
    with tf.GradientTape() as tape:
        kl = q.kl_divergence(priors.Normal(), q.scale())
    gradient = tape.gradient(kl, q.log_scale).numpy()
    expected = np.sum(0.5 * (np.exp(2 * log_scale) + q.loc.numpy() ** 2) - log_scale - 0.5)
    np.testing.assert_allclose(float(kl), expected, rtol=1e-6)
    np.testing.assert_allclose(gradient, np.exp(2 * log_scale) - 1.0, rtol=1e-6)
