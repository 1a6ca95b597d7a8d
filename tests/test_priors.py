"""Correctness of the weight priors against exact answers.

- `Normal`: the analytic KL against a mean-field Normal posterior equals TFP's
  registered KL, the closed form, and a large Monte-Carlo estimate.
- `ScaleMixtureNormal`: the hand-written log-density equals TFP's
  `MixtureSameFamily`; the one-sample Monte-Carlo KL is unbiased (its average
  over many draws matches the KL obtained by numerical integration).
- Flags, config round-trips and argument validation.
"""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_deepgen import priors

tfd = tfp.distributions


def _normal_kl_closed_form(q_loc, q_scale, p_loc, p_scale):
    """Elementwise KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2)) in float64."""
    return np.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def _mixture_log_prob_np(w, pi, scale1, scale2):
    """log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)) in float64."""
    w = np.asarray(w, np.float64)[..., None]
    scales = np.array([scale1, scale2])
    log_mix = np.log([pi, 1.0 - pi])
    log_n = -0.5 * (w / scales) ** 2 - np.log(scales) - 0.5 * np.log(2 * np.pi)
    a = log_mix + log_n
    m = a.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=-1, keepdims=True)))[..., 0]


def _kl_normal_vs_mixture_quadrature(loc, scale, pi, scale1, scale2, points=400_001):
    """KL(N(loc, scale^2) || mixture) per entry by trapezoidal integration (float64)."""
    out = []
    for m, s in zip(np.ravel(loc), np.ravel(scale), strict=True):
        w = np.linspace(m - 14 * s, m + 14 * s, points)
        log_q = -0.5 * ((w - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        integrand = np.exp(log_q) * (log_q - _mixture_log_prob_np(w, pi, scale1, scale2))
        out.append(np.trapezoid(integrand, w))
    return np.array(out).reshape(np.shape(loc))


# --------------------------------------------------------------------------
# Normal prior: analytic KL
# --------------------------------------------------------------------------

NORMAL_CASES = [(0.0, 1.0), (0.3, 1.5), (-1.0, 0.1)]


@pytest.mark.parametrize("p_loc,p_scale", NORMAL_CASES)
def test_normal_kl_matches_tfp_and_closed_form(p_loc, p_scale):
    rng = np.random.default_rng(0)
    q_loc = rng.normal(size=(3, 4)).astype(np.float32)
    q_scale = rng.uniform(0.05, 2.0, size=(3, 4)).astype(np.float32)
    prior = priors.Normal(p_loc, p_scale)

    kl = prior.kl_divergence(tf.constant(q_loc), tf.constant(q_scale))
    assert kl.shape == ()
    assert kl.dtype == tf.float32

    tfp_kl = tf.reduce_sum(
        tfd.kl_divergence(tfd.Normal(q_loc, q_scale), tfd.Normal(np.float32(p_loc), p_scale))
    )
    np.testing.assert_allclose(float(kl), float(tfp_kl), rtol=1e-5)

    exact = _normal_kl_closed_form(
        q_loc.astype(np.float64), q_scale.astype(np.float64), p_loc, p_scale
    ).sum()
    np.testing.assert_allclose(float(kl), exact, rtol=1e-5)


@pytest.mark.parametrize("p_loc,p_scale", NORMAL_CASES)
def test_normal_kl_matches_monte_carlo(p_loc, p_scale):
    rng = np.random.default_rng(1)
    q_loc = rng.normal(size=(2, 3)).astype(np.float32)
    q_scale = rng.uniform(0.05, 2.0, size=(2, 3)).astype(np.float32)
    prior = priors.Normal(p_loc, p_scale)
    analytic = float(prior.kl_divergence(tf.constant(q_loc), tf.constant(q_scale)))

    # log q(w) - log p(w), summed over entries, for 200k independent draws.
    n = 200_000
    m, s = q_loc.astype(np.float64), q_scale.astype(np.float64)
    w = m + s * rng.standard_normal(size=(n, *q_loc.shape))
    log_q = -0.5 * ((w - m) / s) ** 2 - np.log(s)
    log_p = -0.5 * ((w - p_loc) / p_scale) ** 2 - np.log(p_scale)
    per_draw = (log_q - log_p).reshape(n, -1).sum(axis=1)
    mc = per_draw.mean()
    stderr = per_draw.std(ddof=1) / math.sqrt(n)
    # 4 standard errors: a false failure has probability ~6e-5 (and the seed is fixed).
    assert abs(mc - analytic) < 4 * stderr + 1e-4 * abs(analytic), (mc, analytic, stderr)


@pytest.mark.parametrize("p_loc,p_scale", NORMAL_CASES)
def test_normal_kl_gradient_matches_autodiff_of_tfp(p_loc, p_scale):
    # The prior writes the KL's gradient by hand; TFP's KL through autodiff is the reference.
    rng = np.random.default_rng(2)
    loc = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
    scale = tf.constant(rng.uniform(0.05, 2.0, size=(4, 3)).astype(np.float32))
    prior = priors.Normal(p_loc, p_scale)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([loc, scale])
        ours = 3.0 * prior.kl_divergence(loc, scale)
        reference = 3.0 * tf.reduce_sum(
            tfd.kl_divergence(tfd.Normal(loc, scale), tfd.Normal(np.float32(p_loc), p_scale))
        )
    for ours_grad, reference_grad in zip(
        tape.gradient(ours, [loc, scale]), tape.gradient(reference, [loc, scale]), strict=True
    ):
        np.testing.assert_allclose(ours_grad.numpy(), reference_grad.numpy(), rtol=1e-5, atol=1e-6)


def test_normal_analytic_kl_ignores_sample():
    prior = priors.Normal(0.0, 1.0)
    loc = tf.constant([0.5, -0.2])
    scale = tf.constant([0.3, 0.7])
    without = prior.kl_divergence(loc, scale)
    with_sample = prior.kl_divergence(loc, scale, sample=tf.constant([100.0, -100.0]))
    assert float(without) == float(with_sample)


def test_normal_kl_is_zero_when_posterior_equals_prior():
    prior = priors.Normal(0.4, 0.8)
    kl = prior.kl_divergence(tf.fill([5], 0.4), tf.fill([5], 0.8))
    assert abs(float(kl)) < 1e-6


def test_normal_distribution_and_log_prob():
    prior = priors.Normal(0.5, 2.0)
    dist = prior.distribution((2, 3))
    assert dist.batch_shape == (2, 3)
    w = tf.constant(np.linspace(-3, 3, 6).reshape(2, 3), tf.float32)
    expected = -0.5 * ((w.numpy() - 0.5) / 2.0) ** 2 - np.log(2.0) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(prior.log_prob(w).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(dist.log_prob(w).numpy(), expected, rtol=1e-6)


# --------------------------------------------------------------------------
# Scale-mixture prior
# --------------------------------------------------------------------------

MIXTURE_CASES = [(0.5, 1.0, math.exp(-6)), (0.25, 2.0, 0.1), (0.9, 0.3, 1.5)]


@pytest.mark.parametrize("pi,scale1,scale2", MIXTURE_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scale_mixture_log_prob_matches_mixture_same_family(pi, scale1, scale2, dtype):
    prior = priors.ScaleMixtureNormal(pi, scale1, scale2)
    # Includes 0 (narrow spike dominates), tails far beyond both scales
    # (the narrow component underflows) and values in between.
    w_np = np.array(
        [[0.0, 1e-3, -2e-3, 0.05], [-0.5, 1.0, 3.0, -7.5], [20.0, -40.0, 1e-6, 0.2]],
        dtype=dtype,
    )
    w = tf.constant(w_np)
    got = prior.log_prob(w)
    assert got.dtype == w.dtype
    assert got.shape == w.shape

    reference = tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(probs=tf.constant([pi, 1.0 - pi], dtype)),
        components_distribution=tfd.Normal(
            tf.zeros([2], dtype), tf.constant([scale1, scale2], dtype)
        ),
    )
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got.numpy(), reference.log_prob(w).numpy(), rtol=rtol, atol=rtol)
    # The prior's own `distribution(shape)` is the same density.
    np.testing.assert_allclose(
        got.numpy(), prior.distribution(w.shape, dtype).log_prob(w).numpy(), rtol=rtol, atol=rtol
    )
    # And both equal an independent float64 implementation.
    np.testing.assert_allclose(
        got.numpy(), _mixture_log_prob_np(w_np, pi, scale1, scale2), rtol=rtol, atol=rtol
    )
    assert np.all(np.isfinite(got.numpy()))


def test_scale_mixture_distribution_shape_and_normalisation():
    prior = priors.ScaleMixtureNormal(0.3, 1.0, 0.2)
    dist = prior.distribution((4, 2))
    assert dist.batch_shape == (4, 2)
    assert dist.event_shape == ()
    # The density integrates to 1.
    w = np.linspace(-12, 12, 200_001)
    density = np.exp(prior.log_prob(tf.constant(w)).numpy())
    np.testing.assert_allclose(np.trapezoid(density, w), 1.0, rtol=1e-6)


def test_scale_mixture_kl_needs_a_sample():
    prior = priors.ScaleMixtureNormal()
    with pytest.raises(ValueError, match="sample"):
        prior.kl_divergence(tf.zeros([3]), tf.ones([3]))


def test_scale_mixture_single_sample_kl_is_exact_log_ratio():
    prior = priors.ScaleMixtureNormal(0.25, 2.0, 0.1)
    loc = np.array([0.3, -0.1, 0.0], np.float64)
    scale = np.array([0.2, 0.05, 1.0], np.float64)
    sample = np.array([0.25, -0.12, 1.3], np.float64)
    got = prior.kl_divergence(tf.constant(loc), tf.constant(scale), sample=tf.constant(sample))
    log_q = -0.5 * ((sample - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(log_q - _mixture_log_prob_np(sample, 0.25, 2.0, 0.1))
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


@pytest.mark.parametrize("pi,scale1,scale2", MIXTURE_CASES)
def test_scale_mixture_monte_carlo_kl_is_unbiased(pi, scale1, scale2):
    prior = priors.ScaleMixtureNormal(pi, scale1, scale2)
    loc = np.array([0.4, -0.05, 0.0, 1.2], np.float64)
    scale = np.array([0.3, 0.02, 0.5, 0.1], np.float64)
    exact = _kl_normal_vs_mixture_quadrature(loc, scale, pi, scale1, scale2).sum()

    # Many independent single-sample estimates from the library's estimator.
    n = 20_000
    eps = tf.random.stateless_normal([n, 4], seed=[3, 7], dtype=tf.float64)
    samples = loc + scale * eps
    loc_t, scale_t = tf.constant(loc), tf.constant(scale)
    estimates = tf.vectorized_map(
        lambda s: prior.kl_divergence(loc_t, scale_t, sample=s), samples
    ).numpy()
    assert estimates.shape == (n,)
    mean = estimates.mean()
    stderr = estimates.std(ddof=1) / math.sqrt(n)
    assert stderr < 0.05 * abs(exact) + 0.05  # the check below is meaningfully tight
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)


# --------------------------------------------------------------------------
# Flags, configs, resolution
# --------------------------------------------------------------------------


def test_has_analytic_kl_flags():
    assert priors.Normal().has_analytic_kl is True
    assert priors.ScaleMixtureNormal().has_analytic_kl is False
    assert priors.Prior.has_analytic_kl is False


def test_scale_mixture_defaults():
    prior = priors.ScaleMixtureNormal()
    assert prior.pi == 0.5
    assert prior.scale1 == 1.0
    np.testing.assert_allclose(prior.scale2, math.exp(-6))


@pytest.mark.parametrize(
    "prior",
    [
        priors.Normal(),
        priors.Normal(-0.25, 3.0),
        priors.ScaleMixtureNormal(),
        priors.ScaleMixtureNormal(0.75, 2.5, 0.01),
    ],
    ids=repr,
)
def test_config_round_trip(prior):
    serialized = keras.saving.serialize_keras_object(prior)
    # The serialized form is plain JSON.
    serialized = json.loads(json.dumps(serialized))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(prior)
    assert restored.get_config() == prior.get_config()
    assert restored == prior
    assert hash(restored) == hash(prior)
    # from_config / get_config
    again = type(prior).from_config(prior.get_config())
    assert again == prior
    # `priors.get` resolves the serialized dict.
    resolved = priors.get(serialized)
    assert resolved == prior
    # The restored prior computes the same density.
    w = tf.constant([0.0, 0.1, -1.0, 2.0])
    np.testing.assert_allclose(restored.log_prob(w).numpy(), prior.log_prob(w).numpy())


def test_priors_differ_by_config():
    assert priors.Normal(0.0, 1.0) != priors.Normal(0.0, 2.0)
    assert priors.Normal(0.0, 1.0) != priors.ScaleMixtureNormal()


def test_get_passes_through_priors_and_none():
    p = priors.ScaleMixtureNormal()
    assert priors.get(p) is p
    assert priors.get(None) is None


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

INVALID = [
    (priors.Normal, {"scale": 0.0}, "scale"),
    (priors.Normal, {"scale": -1.0}, "scale"),
    (priors.Normal, {"scale": float("nan")}, "scale"),
    (priors.Normal, {"scale": float("inf")}, "scale"),
    (priors.Normal, {"scale": "1.0"}, "scale"),
    (priors.Normal, {"scale": None}, "scale"),
    (priors.Normal, {"scale": True}, "scale"),
    (priors.Normal, {"scale": [1.0]}, "scale"),
    (priors.Normal, {"loc": float("nan")}, "loc"),
    (priors.Normal, {"loc": float("-inf")}, "loc"),
    (priors.Normal, {"loc": "0"}, "loc"),
    (priors.Normal, {"loc": False}, "loc"),
    (priors.ScaleMixtureNormal, {"pi": 0.0}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": 1.0}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": -0.1}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": 1.5}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": float("nan")}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": "0.5"}, "pi"),
    (priors.ScaleMixtureNormal, {"pi": None}, "pi"),
    (priors.ScaleMixtureNormal, {"scale1": 0.0}, "scale1"),
    (priors.ScaleMixtureNormal, {"scale1": -2.0}, "scale1"),
    (priors.ScaleMixtureNormal, {"scale1": float("nan")}, "scale1"),
    (priors.ScaleMixtureNormal, {"scale1": "big"}, "scale1"),
    (priors.ScaleMixtureNormal, {"scale2": 0.0}, "scale2"),
    (priors.ScaleMixtureNormal, {"scale2": -1e-3}, "scale2"),
    (priors.ScaleMixtureNormal, {"scale2": float("inf")}, "scale2"),
    (priors.ScaleMixtureNormal, {"scale2": None}, "scale2"),
]


@pytest.mark.parametrize(
    "cls,kwargs,name", INVALID, ids=[f"{c.__name__}-{k}" for c, k, _ in INVALID]
)
def test_invalid_arguments_raise_naming_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(**kwargs)


def test_numpy_scalars_are_accepted():
    prior = priors.ScaleMixtureNormal(np.float32(0.5), np.float64(1.0), np.float32(0.01))
    assert isinstance(prior.pi, float)
    assert priors.Normal(np.int64(0), np.float32(2.0)).scale == 2.0


WRONG_KINDS = {
    "string": "normal",
    "int": 3,
    "float": 1.0,
    "prior-class-not-instance": priors.Normal,
    "tfd-distribution": tfd.Normal(0.0, 1.0),
    "keras-layer": keras.layers.Dense(2),
    "dict-without-class": {"foo": 1},
    "serialized-keras-layer": keras.saving.serialize_keras_object(keras.layers.Dense(2)),
    # A config naming a class Keras cannot locate is a wrong kind too: it must
    # not leak Keras's TypeError.
    "serialized-unknown-class": {"class_name": "NoSuchPrior", "config": {}},
}


@pytest.mark.parametrize("identifier", list(WRONG_KINDS.values()), ids=list(WRONG_KINDS))
def test_get_rejects_wrong_kinds_naming_the_argument(identifier):
    with pytest.raises(ValueError, match="`kernel_prior`"):
        priors.get(identifier, "kernel_prior")
    with pytest.raises(ValueError, match="`prior`"):
        priors.get(identifier)


def test_a_tampered_keras_file_says_which_prior_argument_is_wrong(tmp_path):
    import zipfile

    import tfp_deepgen as tdg

    model = keras.Sequential(
        [keras.Input((3,)), tdg.layers.DenseFlipout(2, kernel_prior=tdg.priors.Normal(0.0, 2.0))]
    )
    path, tampered = tmp_path / "model.keras", tmp_path / "tampered.keras"
    model.save(path)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert text.count('"scale": 2.0') == 1
                data = text.replace('"scale": 2.0', '"scale": -2.0').encode()
                json.loads(data)
            target.writestr(item, data)
    # Keras wraps the layer's error in TypeErrors naming each enclosing object.
    with pytest.raises((TypeError, ValueError)) as raised:
        keras.saving.load_model(tampered, safe_mode=True)
    message = str(raised.value)
    assert "`kernel_prior` holds an invalid Normal prior" in message, message
    assert "`scale` must be a finite number > 0. Received: scale=-2.0" in message, message
