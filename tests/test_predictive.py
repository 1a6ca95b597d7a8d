"""The Monte-Carlo predictive against exact answers.

- one variational dense layer into a fixed-scale Normal head has a Gaussian
  predictive in closed form: mean, the aleatoric/epistemic split, stddev,
  quantiles and samples agree with it within Monte-Carlo error;
- every estimator, dense and conv, draws independent posterior samples for
  the stacked copies, with the per-example distribution of one kernel draw
  per sample (checked against kernels drawn in numpy), and a copy's kernel is
  shared by every position of a convolution;
- classifier summaries (probabilities, entropies, mutual information) follow
  their formulas from the parameter samples;
- mixture quantiles equal scipy's for Poisson, NegativeBinomial, StudentT,
  Gamma and MixtureNormal heads on a (near) deterministic model;
- batching, argument checks and XLA.

Monte-Carlo bounds. Every statistical check allows `Z = 5` standard errors
(a false alarm has probability ~6e-7 per check for a Gaussian estimator; the
seeds are fixed anyway, so the tests are deterministic) of the estimator at
hand, with `S` draws:

- a mean: `sqrt(var / S)`;
- the plug-in variance `1/S sum (y - ybar)^2`: `sqrt((mu4 - var^2) / S)`,
  i.e. `var * sqrt(2 / S)` for a Gaussian, plus its bias `var / S`;
- a standard deviation: the variance bound divided by `2 * sd` (delta method);
- a correlation: `(1 - rho^2) / sqrt(S)`;
- a quantile at level `p` of a mixture of `S` iid components: the mixture
  CDF at a point is a mean of `S` iid terms in [0, 1] whose variance is at
  most `p (1 - p)`, so the quantile is off by at most
  `Z * sqrt(p (1 - p) / S) / f(q_p)` (delta method, `f` the exact density).

Two-sample comparisons (ours against a numpy reference of the same size) add
the two squared standard errors.

Float32: the predictive averages over samples in float64, but its inputs are
float32; the Gaussian checks allow `S * 2**-24 * |mean|` where it matters (a
row whose output is deterministic), the worst case of a float32 sum.
"""

import re

import keras
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
import tensorflow as tf
from layer_classes import set_posterior, variable

from tfp_deepgen import heads, layers, predictive, priors
from tfp_deepgen.heads.base import DEFAULT_SCALE_SLOPE
from tfp_deepgen.predictive import monte_carlo

Z = 5.0  # standard errors allowed by every Monte-Carlo check
F32 = 2.0**-24  # float32 unit roundoff


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _kernel_scale(layer):
    """The posterior stddev of the kernel exactly as the layer uses it."""
    return layer.kernel_posterior().distribution.scale.numpy().astype(np.float64)


def _bias_scale(layer):
    return layer.bias_posterior().distribution.scale.numpy().astype(np.float64)


def _plugin_var_bound(var, n, mu4=None):
    """Z standard errors of the plug-in variance, plus its bias."""
    if mu4 is None:  # Gaussian
        mu4 = 3.0 * var**2
    return Z * np.sqrt(np.maximum(mu4 - var**2, 0.0) / n) + var / n


def _assert_same_distribution(ours, reference, what):
    """Per entry, mean and stddev of draws `ours` match draws `reference`.

    Both arrays have the draws on axis 0. The fourth moment for the standard
    error of the variance is taken from the reference.
    """
    n, m = len(ours), len(reference)
    mean_a, mean_b = ours.mean(0), reference.mean(0)
    var_a, var_b = ours.var(0), reference.var(0)
    mu4 = ((reference - mean_b) ** 4).mean(0)
    se_mean = np.sqrt(var_a / n + var_b / m)
    se_var = np.sqrt(np.maximum(mu4 - var_b**2, 0.0) * (1.0 / n + 1.0 / m))
    se_sd = se_var / (2.0 * np.sqrt(var_b))
    np.testing.assert_array_less(np.abs(mean_a - mean_b), Z * se_mean, err_msg=f"{what}: mean")
    np.testing.assert_array_less(
        np.abs(np.sqrt(var_a) - np.sqrt(var_b)), Z * se_sd, err_msg=f"{what}: stddev"
    )


def _seed_states(model):
    return [layer.seed_generator.state.numpy() for layer in layers.stochastic_layers(model)]


def _restore_seed_states(model, states):
    for layer, state in zip(layers.stochastic_layers(model), states, strict=True):
        layer.seed_generator.state.assign(state)


def _one_hot_model(head, params, layer_cls=layers.DenseReparameterization, scale=1e-8):
    """A model whose head parameters for input `eye(B)[i]` are `params[i]`.

    The posterior scale is `scale` (tiny by default: near deterministic).
    """
    params = np.asarray(params, np.float32)
    layer = layer_cls(head.input_size, kernel_posterior_scale_init=scale, seed=11)
    model = keras.Sequential([keras.Input((len(params),)), layer, head])
    variable(layer, "kernel_loc").assign(params)
    variable(layer, "bias").assign(np.zeros(head.input_size, np.float32))
    return model, np.eye(len(params), dtype=np.float32)


def _softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


# --------------------------------------------------------------------------
# A Gaussian predictive in closed form
# --------------------------------------------------------------------------

MU = np.array([0.5, -1.0, 0.3])
SIGMA = np.array([0.3, 0.2, 0.5])
BIAS_LOC, BIAS_SCALE = 0.2, 0.4
NOISE_SCALE = 0.5
# The last row meets only the bias: no epistemic variance without a bias prior.
X_GAUSS = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
LEVELS = (0.05, 0.25, 0.5, 0.9)
S_GAUSS = 20_000


@pytest.fixture(scope="module", params=[None, "normal"], ids=["point_bias", "bayes_bias"])
def gaussian_case(request):
    """Predictive summaries and the exact predictive N(mean, epistemic + 0.25)."""
    bias_prior = priors.Normal(0.0, 1.0) if request.param else None
    layer = layers.DenseReparameterization(1, bias_prior=bias_prior, seed=5)
    model = keras.Sequential([keras.Input((3,)), layer, heads.IndependentNormal(scale=NOISE_SCALE)])
    set_posterior(layer, "kernel", MU[:, None], SIGMA[:, None])
    sigma = _kernel_scale(layer)[:, 0]
    x = X_GAUSS.astype(np.float64)
    mean = x @ MU + BIAS_LOC
    epistemic = np.square(x) @ np.square(sigma)
    if bias_prior is None:
        variable(layer, "bias").assign([BIAS_LOC])
    else:
        set_posterior(layer, "bias", [BIAS_LOC], [BIAS_SCALE])
        epistemic = epistemic + _bias_scale(layer)[0] ** 2
    out = predictive.MonteCarloPredictive(model, S_GAUSS, quantiles=LEVELS, seed=3)(X_GAUSS)
    out = {k: v.numpy().astype(np.float64) for k, v in out.items()}
    return out, mean[:, None], epistemic[:, None]


def test_gaussian_predictive_mean_and_variance_split(gaussian_case):
    out, mean, epistemic = gaussian_case
    aleatoric = NOISE_SCALE**2
    for key in ("mean", "stddev", "variance", "aleatoric_variance", "epistemic_variance"):
        assert out[key].shape == (3, 1), key
    # Mean of S draws of N(mean, epistemic), summed in float32.
    rounding = S_GAUSS * F32 * np.abs(mean)
    np.testing.assert_array_less(
        np.abs(out["mean"] - mean), Z * np.sqrt(epistemic / S_GAUSS) + rounding + 1e-6
    )
    # Every sample has the head's fixed variance: exact.
    np.testing.assert_allclose(out["aleatoric_variance"], aleatoric, rtol=1e-6)
    # Plug-in variance of S Gaussian draws (a row that meets no random weight
    # has the 1e-12 variance floor and the square of the mean's rounding).
    np.testing.assert_array_less(
        np.abs(out["epistemic_variance"] - epistemic),
        _plugin_var_bound(epistemic, S_GAUSS) + rounding**2 + 1e-11,
    )
    np.testing.assert_allclose(
        out["variance"], out["aleatoric_variance"] + out["epistemic_variance"], rtol=1e-6
    )
    np.testing.assert_allclose(out["stddev"] ** 2, out["variance"], rtol=1e-5)
    total_sd = np.sqrt(aleatoric + epistemic)
    sd_bound = (_plugin_var_bound(epistemic, S_GAUSS) + rounding**2) / (2 * total_sd) + 1e-9
    np.testing.assert_array_less(np.abs(out["stddev"] - total_sd), sd_bound)


def test_gaussian_predictive_quantiles(gaussian_case):
    out, mean, epistemic = gaussian_case
    total_sd = np.sqrt(NOISE_SCALE**2 + epistemic)  # (3, 1)
    p = np.array(LEVELS)[None, :, None]  # (1, Q, 1)
    exact = scipy.stats.norm.ppf(p, mean[:, None], total_sd[:, None])
    density = scipy.stats.norm.pdf(exact, mean[:, None], total_sd[:, None])
    bound = Z * np.sqrt(p * (1 - p) / S_GAUSS) / density + 1e-5  # 1e-5: bisection, float32
    assert out["quantiles"].shape == (3, len(LEVELS), 1)
    np.testing.assert_array_less(np.abs(out["quantiles"] - exact), bound)
    assert np.all(np.diff(out["quantiles"], axis=1) > 0)


def test_gaussian_predictive_samples(gaussian_case):
    out, mean, epistemic = gaussian_case
    samples = out["samples"]
    assert samples.shape == (3, S_GAUSS, 1)
    # Sample s is y ~ N(f(x; W_s), 0.25): iid draws of N(mean, 0.25 + epistemic).
    total = NOISE_SCALE**2 + epistemic
    np.testing.assert_array_less(np.abs(samples.mean(1) - mean), Z * np.sqrt(total / S_GAUSS))
    np.testing.assert_array_less(np.abs(samples.var(1) - total), _plugin_var_bound(total, S_GAUSS))


# --------------------------------------------------------------------------
# Independent posterior samples, one kernel per sample
# --------------------------------------------------------------------------

S_IND = 4000
DENSE_CLASSES = [
    layers.DenseReparameterization,
    layers.DenseFlipout,
    layers.DenseLocalReparameterization,
]
CONV_CLASSES = [
    layers.Conv2DReparameterization,
    layers.Conv2DFlipout,
    layers.Conv2DLocalReparameterization,
]


def _dense_case(cls):
    rng = np.random.default_rng(0)
    layer = cls(2, seed=7)
    model = keras.Sequential([keras.Input((4,)), layer, heads.IndependentNormal(2, scale=1.0)])
    mu = rng.normal(size=(4, 2))
    set_posterior(layer, "kernel", mu, rng.uniform(0.1, 0.5, size=(4, 2)))
    variable(layer, "bias").assign([0.3, -0.2])
    return model, layer, mu


@pytest.mark.parametrize("cls", DENSE_CLASSES, ids=lambda c: c.__name__)
def test_dense_samples_are_independent_draws_of_the_posterior(cls):
    model, layer, mu = _dense_case(cls)
    mc = predictive.MonteCarloPredictive(model, S_IND)
    # A batch of one: S different outputs, not S copies of one kernel draw.
    single = mc.parameter_samples(np.ones((1, 4), np.float32)).numpy()
    assert single.shape == (S_IND, 1, 2)
    # Distinct up to float32 ties (2**24 noise levels; identical copies give 1).
    assert len(np.unique(single[:, 0, 0])) > 0.99 * S_IND
    assert single[:, 0, 0].std() > 0.1
    # Two examples: each is distributed as x @ W_s + b, W_s ~ q, drawn in numpy.
    x = np.array([[1.0, -0.5, 2.0, 0.0], [0.3, 1.0, -1.0, 0.7]], np.float32)
    ours = mc.parameter_samples(x).numpy().astype(np.float64)  # (S, 2, 2)
    sigma = _kernel_scale(layer)
    kernels = mu + sigma * np.random.default_rng(1).standard_normal((S_IND, 4, 2))
    reference = np.einsum("bi,sio->sbo", x, kernels) + np.array([0.3, -0.2])
    _assert_same_distribution(ours, reference, cls.__name__)
    # Exact marginal moments too: N(x mu + b, x^2 sigma^2).
    exact_var = np.square(x) @ np.square(sigma)
    np.testing.assert_array_less(
        np.abs(ours.mean(0) - (x @ mu + [0.3, -0.2])), Z * np.sqrt(exact_var / S_IND)
    )
    np.testing.assert_array_less(
        np.abs(ours.var(0) - exact_var), _plugin_var_bound(exact_var, S_IND)
    )


def _conv_case(cls, rng):
    """Conv 2x2 'valid' on a 2x3x1 image: two output positions, then Flatten."""
    layer = cls(1, 2, bias_prior=priors.Normal(0.0, 1.0), seed=9)
    model = keras.Sequential(
        [
            keras.Input((2, 3, 1)),
            layer,
            keras.layers.Flatten(),
            heads.IndependentNormal(2, scale=1.0),
        ]
    )
    mu = rng.normal(size=(2, 2, 1, 1))
    set_posterior(layer, "kernel", mu, rng.uniform(0.2, 0.6, size=(2, 2, 1, 1)))
    set_posterior(layer, "bias", [0.1], [0.3])
    return model, layer, mu


def _conv_reference(images, mu, sigma, bias_loc, bias_sigma, num, rng):
    """Outputs (num, batch, 2) of the 2x2 'valid' conv under `num` kernel draws."""
    kernels = mu[..., 0, 0] + sigma[..., 0, 0] * rng.standard_normal((num, 2, 2))
    biases = bias_loc + bias_sigma * rng.standard_normal((num, 1, 1))
    patches = np.stack([images[:, :, 0:2, 0], images[:, :, 1:3, 0]], axis=1)  # (B, 2, 2, 2)
    return np.einsum("bphw,shw->sbp", patches, kernels) + biases


def _correlation(draws):
    """Correlation of the two output positions, per example: draws (S, B, 2)."""
    a = draws[..., 0] - draws[..., 0].mean(0)
    b = draws[..., 1] - draws[..., 1].mean(0)
    return (a * b).mean(0) / np.sqrt((a * a).mean(0) * (b * b).mean(0))


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.__name__)
def test_conv_samples_are_independent_kernel_draws(cls):
    rng = np.random.default_rng(2)
    model, layer, mu = _conv_case(cls, rng)
    mc = predictive.MonteCarloPredictive(model, S_IND)

    # A batch of one: the S copies differ.
    image = rng.normal(size=(1, 2, 3, 1)).astype(np.float32)
    single = mc.parameter_samples(image).numpy()
    assert single.shape == (S_IND, 1, 2)
    # Distinct up to float32 ties (2**24 noise levels; identical copies give 1).
    assert len(np.unique(single[:, 0, 0])) > 0.99 * S_IND
    assert single[:, 0, 0].std() > 0.1

    # A constant image: both positions see the same patch, so within a copy
    # they are equal (one kernel per copy), while copies differ.
    constant = mc.parameter_samples(np.ones((1, 2, 3, 1), np.float32)).numpy()[:, 0]
    np.testing.assert_allclose(constant[:, 0], constant[:, 1], rtol=0, atol=1e-5)
    assert constant[:, 0].std() > 0.1

    # Two random images: per example and position, the distribution of a
    # kernel drawn per copy, and the correlation between positions that a
    # shared kernel induces.
    images = rng.normal(size=(2, 2, 3, 1)).astype(np.float32)
    ours = mc.parameter_samples(images).numpy().astype(np.float64)  # (S, 2, 2)
    reference = _conv_reference(
        images.astype(np.float64),
        mu,
        _kernel_scale(layer),
        0.1,
        _bias_scale(layer)[0],
        S_IND,
        np.random.default_rng(3),
    )
    _assert_same_distribution(ours, reference, cls.__name__)
    rho_a, rho_b = _correlation(ours), _correlation(reference)
    se = (1 - rho_b**2) * np.sqrt(2.0 / S_IND)
    np.testing.assert_array_less(np.abs(rho_a - rho_b), Z * se + 1e-6)
    assert np.all(np.abs(rho_b) > 10 * se)  # the check has teeth: a real correlation


def test_dense_on_sequences_shares_one_kernel_per_copy():
    """A dense layer on rank-3 inputs meets the kernel at every time step."""
    layer = layers.DenseReparameterization(1, seed=4)
    model = keras.Sequential(
        [
            keras.Input((2, 3)),
            layer,
            keras.layers.Flatten(),
            heads.IndependentNormal(2, scale=1.0),
        ]
    )
    set_posterior(layer, "kernel", [[0.5], [-0.2], [1.0]], [[0.3], [0.4], [0.5]])
    mc = predictive.MonteCarloPredictive(model, 500)
    draws = mc.parameter_samples(np.ones((1, 2, 3), np.float32)).numpy()[:, 0]
    np.testing.assert_allclose(draws[:, 0], draws[:, 1], rtol=0, atol=1e-5)
    assert draws[:, 0].std() > 0.3  # exact: sqrt(0.09 + 0.16 + 0.25) = 0.71


# --------------------------------------------------------------------------
# Classifier heads
# --------------------------------------------------------------------------

X_CLS = np.array([[1.0, -0.5, 2.0, 0.0], [0.3, 1.0, -1.0, 0.7], [0.0, 0.0, 0.0, 0.0]], np.float32)


def _classifier_model(head, scale):
    rng = np.random.default_rng(4)
    layer = layers.DenseFlipout(head.input_size, kernel_posterior_scale_init=scale, seed=13)
    model = keras.Sequential([keras.Input((4,)), layer, head])
    variable(layer, "kernel_loc").assign(rng.normal(size=(4, head.input_size)).astype(np.float32))
    return model


def _summaries_and_parameters(model, num_samples, x):
    """`__call__(x)` and the parameter samples it was computed from."""
    mc = predictive.MonteCarloPredictive(model, num_samples, seed=1)
    states = _seed_states(model)
    params = mc.parameter_samples(x).numpy().astype(np.float64)
    _restore_seed_states(model, states)
    out = {k: v.numpy() for k, v in mc(x).items()}
    return out, params


def _entropy(p, axis=-1):
    return -np.sum(scipy.special.xlogy(p, p), axis=axis)


def test_categorical_summaries_follow_their_formulas():
    model = _classifier_model(heads.Categorical(3), scale=0.7)
    out, params = _summaries_and_parameters(model, 64, X_CLS)
    probs = scipy.special.softmax(params, axis=-1)  # (S, B, 3)
    assert params.std(0).max() > 0.1  # the samples differ
    np.testing.assert_allclose(out["probabilities"], probs.mean(0), atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-6)
    predictive_entropy = _entropy(probs.mean(0))
    expected_entropy = _entropy(probs).mean(0)
    np.testing.assert_allclose(out["predictive_entropy"], predictive_entropy, atol=1e-5)
    np.testing.assert_allclose(out["expected_entropy"], expected_entropy, atol=1e-5)
    mi = out["mutual_information"]
    np.testing.assert_allclose(mi, predictive_entropy - expected_entropy, atol=1e-5)
    assert np.all(mi >= 0) and mi[:2].min() > 1e-3  # epistemic uncertainty is there
    assert out["samples"].shape == (3, 64)
    assert set(np.unique(out["samples"])) <= {0.0, 1.0, 2.0}


def test_bernoulli_summaries_follow_their_formulas():
    model = _classifier_model(heads.IndependentBernoulli(2), scale=0.7)
    out, params = _summaries_and_parameters(model, 64, X_CLS)
    probs = scipy.special.expit(params)  # (S, B, 2)
    np.testing.assert_allclose(out["probabilities"], probs.mean(0), atol=1e-6)

    def entropy(p):
        return -scipy.special.xlogy(p, p) - scipy.special.xlogy(1 - p, 1 - p)

    predictive_entropy = entropy(probs.mean(0))
    expected_entropy = entropy(probs).mean(0)
    assert out["predictive_entropy"].shape == (3, 2)
    np.testing.assert_allclose(out["predictive_entropy"], predictive_entropy, atol=1e-5)
    np.testing.assert_allclose(out["expected_entropy"], expected_entropy, atol=1e-5)
    mi = out["mutual_information"]
    np.testing.assert_allclose(mi, predictive_entropy - expected_entropy, atol=1e-5)
    assert np.all(mi >= 0) and mi[:2].min() > 1e-3
    assert out["samples"].shape == (3, 64, 2)
    assert set(np.unique(out["samples"])) <= {0.0, 1.0}


@pytest.mark.parametrize("head_fn", [lambda: heads.Categorical(3), heads.IndependentBernoulli])
def test_deterministic_classifier_has_no_mutual_information(head_fn):
    head = head_fn()
    model = _classifier_model(head, scale=1e-8)
    # Averages over samples run in float64; in float32, summing S = 2000
    # identical probabilities was off by ~1.5e-5 relative, which showed up as
    # spurious mutual information of that order.
    num = 2000
    out = predictive.MonteCarloPredictive(model, num, seed=2)(X_CLS)
    out = {k: v.numpy().astype(np.float64) for k, v in out.items()}
    np.testing.assert_allclose(out["mutual_information"], 0.0, atol=1e-7)
    np.testing.assert_allclose(out["predictive_entropy"], out["expected_entropy"], atol=1e-6)
    # The labels drawn follow `probabilities` (binomial standard error).
    p = out["probabilities"]
    if isinstance(head, heads.Categorical):
        freq = np.stack([(out["samples"] == k).mean(1) for k in range(3)], -1)
    else:
        freq = out["samples"].mean(1)
    np.testing.assert_array_less(np.abs(freq - p), Z * np.sqrt(p * (1 - p) / num) + 1e-9)


# --------------------------------------------------------------------------
# Quantiles of the mixture against scipy
# --------------------------------------------------------------------------

Q_LEVELS = (0.05, 0.3, 0.5, 0.9, 0.99)


def _predicted_quantiles(head, params, num_samples=4):
    model, x = _one_hot_model(head, params)
    mc = predictive.MonteCarloPredictive(model, num_samples, quantiles=Q_LEVELS, seed=0)
    return mc(x)["quantiles"].numpy()[..., 0].astype(np.float64)  # (B, Q)


def _levels():
    return np.array(Q_LEVELS)[None, :]


# TFP's count CDFs interpolate between the integers (`Poisson(0.48).cdf(0.9)`
# is 0.90, not F(0) = 0.62; scipy's is 0.62), so bisecting them and flooring
# lands below the integer quantile, the smallest k with F(k) >= p.


def test_poisson_quantiles_are_the_integer_quantiles():
    rates = np.array([0.48, 3.0, 20.0])
    q = _predicted_quantiles(heads.Poisson(), np.log(rates)[:, None])
    np.testing.assert_array_equal(q, scipy.stats.poisson.ppf(_levels(), rates[:, None]))


def test_negative_binomial_quantiles_are_the_integer_quantiles():
    # NegativeBinomial(total_count, logits): scipy's nbinom counts failures
    # before n successes with success probability 1 - sigmoid(logits).
    raw = np.array([[1.0, -0.5], [3.0, 0.7], [0.0, 1.5]])
    q = _predicted_quantiles(heads.NegativeBinomial(), raw)
    n = _softplus(raw[:, 0]) + 1e-6
    p_fail = scipy.special.expit(raw[:, 1])
    expected = scipy.stats.nbinom.ppf(_levels(), n[:, None], 1 - p_fail[:, None])
    np.testing.assert_array_equal(q, expected)


def test_student_t_quantiles():
    raw = np.array([[1.0, 0.5, 0.3], [-2.0, -1.0, 2.0], [5.0, 1.5, -1.0]])
    q = _predicted_quantiles(heads.StudentT(), raw)
    df = _softplus(raw[:, 2]) + 2.0
    scale = _softplus(DEFAULT_SCALE_SLOPE * raw[:, 1]) + 1e-6
    expected = scipy.stats.t.ppf(_levels(), df[:, None], raw[:, :1], scale[:, None])
    np.testing.assert_allclose(q, expected, rtol=1e-3, atol=1e-4)
    # Fixed degrees of freedom.
    q = _predicted_quantiles(heads.StudentT(df=3.0), raw[:, :2])
    expected = scipy.stats.t.ppf(_levels(), 3.0, raw[:, :1], scale[:, None])
    np.testing.assert_allclose(q, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("df", [1.0, 1.5])
def test_student_t_quantiles_without_finite_variance(df):
    """Quantiles exist when the variance does not (Cauchy: df = 1).

    The bisection brackets its search with the per-sample stddev, which is
    inf (df <= 2) or NaN (df <= 1), so every quantile came out NaN.
    """
    raw = np.array([[1.0, 0.5], [-2.0, -1.0]])
    q = _predicted_quantiles(heads.StudentT(df=df), raw)
    scale = _softplus(DEFAULT_SCALE_SLOPE * raw[:, 1]) + 1e-6
    expected = scipy.stats.t.ppf(_levels(), df, raw[:, :1], scale[:, None])
    np.testing.assert_allclose(q, expected, rtol=1e-3, atol=1e-4)


def test_gamma_quantiles():
    raw = np.array([[1.0, 0.0], [3.0, 1.0], [0.0, -1.0]])
    q = _predicted_quantiles(heads.Gamma(), raw)
    concentration = _softplus(raw[:, 0]) + 1e-6
    rate = _softplus(raw[:, 1]) + 1e-6
    expected = scipy.stats.gamma.ppf(_levels(), concentration[:, None], scale=1 / rate[:, None])
    np.testing.assert_allclose(q, expected, rtol=1e-3, atol=1e-6)


def test_mixture_normal_quantiles():
    # [logit_0, logit_1, loc_0, loc_1, raw_scale_0, raw_scale_1] per example.
    raw = np.array([[0.0, 1.0, -1.0, 2.0, 0.0, -1.0], [2.0, -1.0, 3.0, -4.0, 1.0, 0.5]], np.float64)
    q = _predicted_quantiles(heads.MixtureNormal(2), raw)
    for i, row in enumerate(raw):
        weights = scipy.special.softmax(row[:2])
        locs, scales = row[2:4], _softplus(DEFAULT_SCALE_SLOPE * row[4:6]) + 1e-6

        def cdf(y, weights=weights, locs=locs, scales=scales):
            return np.sum(weights * scipy.stats.norm.cdf(y, locs, scales))

        expected = [scipy.optimize.brentq(lambda y, p=p: cdf(y) - p, -50, 50) for p in Q_LEVELS]
        np.testing.assert_allclose(q[i], expected, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------
# predict(): batching and argument checks
# --------------------------------------------------------------------------


def _small_model_and_inputs(kind, seed):
    """A one-layer model with a 2-output Normal or 3-class head, and 7 inputs."""
    rng = np.random.default_rng(seed)
    head = heads.IndependentNormal(2) if kind == "normal" else heads.Categorical(3)
    model, _ = _one_hot_model(head, rng.normal(size=(5, head.input_size)))
    return model, rng.normal(size=(7, 5)).astype(np.float32)


@pytest.mark.parametrize("kind", ["normal", "categorical"])
def test_predict_in_batches_equals_one_batch(kind):
    model, x = _small_model_and_inputs(kind, seed=6)
    one = predictive.predict(model, x, num_samples=6, batch_size=256, seed=0)
    chunked = predictive.predict(model, x, num_samples=6, batch_size=3, seed=0)
    assert one.keys() == chunked.keys()
    for key in one:
        assert one[key].shape == chunked[key].shape, key
        assert one[key].shape[0] == 7
        if key != "samples":  # labels are random whatever the weights
            np.testing.assert_allclose(one[key], chunked[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert one["samples"].shape[1] == 6


@pytest.mark.parametrize("kind", ["normal", "categorical"])
def test_predict_under_xla_equals_graph_mode(kind):
    model, x = _small_model_and_inputs(kind, seed=8)
    graph = predictive.predict(model, x, num_samples=6, batch_size=4, seed=0)
    xla = predictive.predict(model, x, num_samples=6, batch_size=4, seed=0, jit_compile=True)
    cached = monte_carlo._PREDICTIVES[model].values()
    compiled = [f for mc in cached for f in mc._functions.values()]
    assert sorted(run._jit_compile for run in compiled) == [False, True]
    assert graph.keys() == xla.keys()
    for key in graph:
        assert xla[key].shape == graph[key].shape, key
        # The label draws come from TFP's samplers, whose default stateless
        # algorithm differs under XLA; the posterior draws use Philox in both.
        if key != "samples":
            np.testing.assert_allclose(xla[key], graph[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_predict_restarts_the_seed_stream_keras_would_start():
    # predict() reseeds its cached predictive instead of making a generator per call.
    for seed in (0, 7, 123456789):
        expected = keras.random.SeedGenerator(seed).state.numpy()
        np.testing.assert_array_equal(monte_carlo._initial_seed_state(seed), expected)
    state = monte_carlo._initial_seed_state(None)
    assert 1 <= state[0] <= 10**9 and state[1] == 0
    model, x = _one_hot_model(heads.IndependentNormal(), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        predictive.predict(model, x, seed=1.5)


def test_predict_reuses_one_compiled_function_and_reads_current_weights():
    head = heads.IndependentNormal(1, scale=1.0)
    model, x = _one_hot_model(head, [[0.5], [-1.0]], layer_cls=layers.DenseFlipout, scale=1e-6)
    layer = model.layers[0]
    first = predictive.predict(model, x, num_samples=64, seed=0)
    (mc,) = monte_carlo._PREDICTIVES[model].values()
    (run,) = mc._functions.values()
    # A larger posterior between calls: the second call must see it, although
    # it reuses the compiled function and its snapshot of the scales.
    set_posterior(layer, "kernel", [[0.5], [-1.0]], [[3.0], [3.0]])
    second = predictive.predict(model, x, num_samples=64, seed=0)
    assert len(monte_carlo._PREDICTIVES[model]) == 1
    assert run.experimental_get_tracing_count() == 1
    assert np.all(first["epistemic_variance"] < 1e-8)
    # Var_s[x W_s] = 9 for a one-hot row; plug-in variance of 64 draws.
    bound = _plugin_var_bound(9.0, 64)
    np.testing.assert_array_less(np.abs(second["epistemic_variance"] - 9.0), bound)
    # Other settings compile their own function.
    predictive.predict(model, x, num_samples=8)
    assert len(monte_carlo._PREDICTIVES[model]) == 2


@pytest.mark.parametrize("jit", [False, True])
def test_cached_scales_follow_weight_changes(jit):
    head = heads.IndependentNormal(1, scale=1.0)
    model, x = _one_hot_model(head, [[0.5], [-1.0]], layer_cls=layers.DenseFlipout, scale=1e-6)
    layer = model.layers[0]
    mc = predictive.MonteCarloPredictive(model, 64, cache_scales=True)
    run = tf.function(lambda batch: mc(batch, ("epistemic_variance",)), jit_compile=jit)
    assert np.all(run(x)["epistemic_variance"].numpy() < 1e-8)
    set_posterior(layer, "kernel", [[0.5], [-1.0]], [[3.0], [3.0]])
    variance = run(x)["epistemic_variance"].numpy()
    np.testing.assert_array_less(np.abs(variance - 9.0), _plugin_var_bound(9.0, 64))
    kernel_copy = mc.scale_cache.weights[0]
    np.testing.assert_allclose(kernel_copy.numpy(), 3.0, rtol=1e-5)
    # Unchanged weights: the cache is reused, not recomputed (a planted value
    # in the cache survives the next call).
    kernel_copy.assign(tf.fill(kernel_copy.shape, 0.0))
    assert np.all(run(x)["epistemic_variance"].numpy() < 1e-8)
    with pytest.raises(ValueError, match="`cache_scales` must be True or False"):
        predictive.MonteCarloPredictive(model, 4, cache_scales="yes")


def test_target_units_map_every_continuous_summary_back():
    head = heads.IndependentNormal(2)
    rng = np.random.default_rng(9)
    model, x = _one_hot_model(head, rng.normal(size=(3, 4)), layers.DenseFlipout, scale=0.3)
    shift, factor = np.array([10.0, -5.0]), np.array([2.0, 3.0])
    states = _seed_states(model)
    plain = predictive.MonteCarloPredictive(model, 16, seed=3)(x)
    _restore_seed_states(model, states)
    scaled = predictive.MonteCarloPredictive(
        model, 16, seed=3, target_mean=shift, target_stddev=factor
    )(x)
    for name in ("mean", "quantiles", "samples"):
        np.testing.assert_allclose(scaled[name], shift + factor * plain[name], rtol=1e-5)
    np.testing.assert_allclose(scaled["stddev"], factor * plain["stddev"], rtol=1e-5)
    for name in ("variance", "aleatoric_variance", "epistemic_variance"):
        np.testing.assert_allclose(scaled[name], factor**2 * plain[name], rtol=1e-5)
    # predict() takes them too; a scalar applies to every output.
    out = predictive.predict(model, x, num_samples=4, target_mean=100.0, target_stddev=0.5)
    assert np.all(np.abs(out["mean"] - 100.0) < 0.5 * (np.abs(plain["mean"]) + 5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_stddev": 0.0}, "`target_stddev` must be a finite number > 0"),
        ({"target_stddev": -1.0}, "`target_stddev` must be a finite number > 0"),
        ({"target_mean": float("nan")}, "`target_mean` must be a finite number"),
        ({"target_mean": [1.0, 2.0, 3.0]}, "`target_mean` must be a number or a sequence of 2"),
        ({"target_stddev": [[1.0, 2.0]]}, "`target_stddev` must be a number or a sequence of 2"),
    ],
)
def test_bad_target_units_raise(kwargs, match):
    model, _ = _one_hot_model(heads.IndependentNormal(2), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=re.escape(match)):
        predictive.MonteCarloPredictive(model, 4, **kwargs)


def test_classifiers_refuse_target_units():
    model, _ = _one_hot_model(heads.Categorical(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="`target_mean` and `target_stddev` rescale"):
        predictive.MonteCarloPredictive(model, 4, target_stddev=2.0)


def test_posterior_scale_snapshot_is_read_only_while_active():
    layer = layers.DenseReparameterization(
        3, bias_prior=priors.Normal(0.0, 1.0), bias_posterior_scale_init=0.2
    )
    model = keras.Sequential([keras.Input((2,)), layer])
    snapshot = layers.PosteriorScaleSnapshot(model)
    kernel_copy, bias_copy = snapshot.weights
    np.testing.assert_allclose(kernel_copy.numpy(), _kernel_scale(layer), rtol=1e-6)
    np.testing.assert_allclose(bias_copy.numpy(), _bias_scale(layer), rtol=1e-6)
    assert len(model.weights) == 4  # the snapshot is not the model's state
    with snapshot.active():
        assert layer.posterior_scales() == (kernel_copy, bias_copy)
    set_posterior(layer, "kernel", np.zeros((2, 3)), np.full((2, 3), 0.7))
    np.testing.assert_allclose(layer.posterior_scales()[0].numpy(), 0.7, rtol=1e-6)
    assert not np.allclose(kernel_copy.numpy(), 0.7)  # stale until refreshed
    snapshot.refresh()
    np.testing.assert_allclose(kernel_copy.numpy(), 0.7, rtol=1e-6)
    with pytest.raises(ValueError, match="needs a snapshot made with track_changes=True"):
        snapshot.refresh_if_stale()
    with pytest.raises(ValueError, match="`track_changes` must be True or False"):
        layers.PosteriorScaleSnapshot(model, track_changes=1)


def test_bad_arguments_raise_naming_the_argument():
    model, x = _one_hot_model(heads.IndependentNormal(), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="num_samples"):
        predictive.predict(model, x, num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        predictive.MonteCarloPredictive(model, num_samples=-3)
    with pytest.raises(ValueError, match="quantiles"):
        predictive.predict(model, x, quantiles=(0, 1.5))
    with pytest.raises(ValueError, match="quantiles"):
        predictive.MonteCarloPredictive(model, quantiles=(0.5, 1.0))
    with pytest.raises(ValueError, match="batch_size"):
        predictive.predict(model, x, batch_size=0)
    with pytest.raises(ValueError, match="jit_compile"):
        predictive.predict(model, x, jit_compile="yes")
    inputs = keras.Input((1,))
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)]
    )
    with pytest.raises(ValueError, match="`model` must have one output"):
        predictive.predict(two_outputs, x[:, :1])


# --------------------------------------------------------------------------
# predict(): what `model(x)` takes, and errors in the caller's terms
# --------------------------------------------------------------------------


def _flipout_model(input_shape=(63,), with_input=True, seed=0):
    head = heads.IndependentNormal(2)
    stack = [layers.DenseFlipout(head.input_size, seed=seed), head]
    return keras.Sequential([keras.Input(input_shape), *stack] if with_input else stack)


def test_predict_builds_an_unbuilt_model_as_calling_it_would():
    model = _flipout_model(with_input=False)
    states = _seed_states(model)
    x = np.random.default_rng(0).normal(size=(4, 63)).astype(np.float32)
    out = predictive.predict(model, x, num_samples=8, seed=0)
    assert model.built and tuple(model.inputs[0].shape) == (None, 63)
    assert out["mean"].shape == (4, 2) and out["samples"].shape == (4, 8, 2)
    assert all(np.all(np.isfinite(v)) for v in out.values())
    # Building drew nothing: the weight draws start where the seeds did.
    twin = _flipout_model(with_input=False)
    twin(keras.KerasTensor((None, 63)))
    twin.set_weights(model.get_weights())
    _restore_seed_states(twin, states)
    _restore_seed_states(model, states)
    again = predictive.predict(model, x, num_samples=8, seed=0)
    np.testing.assert_allclose(
        predictive.predict(twin, x, num_samples=8, seed=0)["mean"], again["mean"]
    )
    # The predictive object builds too; caching scales needs the weights now.
    fresh = _flipout_model(with_input=False)
    assert predictive.MonteCarloPredictive(fresh, 4)(x)["mean"].shape == (4, 2)
    with pytest.raises(ValueError, match=re.escape("`cache_scales=True` copies the posterior")):
        predictive.MonteCarloPredictive(_flipout_model(with_input=False), 4, cache_scales=True)


@pytest.mark.parametrize(
    "shape, shown",
    [((4, 10), "(4, 10)"), ((63,), "(63,)"), ((4, 63, 1), "(4, 63, 1)"), ((), "a scalar")],
)
def test_wrong_input_shapes_are_reported_as_passed(shape, shown):
    model = _flipout_model()
    x = np.ones(shape, np.float32)
    if shape == ():
        message = "`x` must be a batch, with the examples along its first axis; received a scalar."
    else:
        message = f"`x` must have shape (batch, 63); received shape {shown}."
    with pytest.raises(ValueError) as raised:
        predictive.predict(model, x, num_samples=8)
    assert str(raised.value) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        predictive.MonteCarloPredictive(model, 8)(x)
    # Inside a traced function too (shapes are checked when it traces).
    with pytest.raises(ValueError, match=re.escape(message)):
        tf.function(predictive.MonteCarloPredictive(model, 8).__call__)(tf.constant(x))


def _two_input_model():
    """`{"a": (3,), "b": (2,)}` -> near-deterministic Normal head: params = concat(a, b) W."""
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    head = heads.IndependentNormal(1, scale=1.0)
    dense = layers.DenseReparameterization(head.input_size, seed=0)
    params = dense(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, head(params))
    set_posterior(dense, "kernel", np.arange(1.0, 6.0)[:, None], np.full((5, 1), 1e-6))
    return model


def test_predict_takes_a_dict_or_list_of_inputs_as_the_model_does():
    model = _two_input_model()
    rng = np.random.default_rng(1)
    x = {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(5, 2))}
    expected = np.concatenate([x["a"], x["b"]], 1) @ np.arange(1.0, 6.0)
    for batch_size in (256, 2):
        out = predictive.predict(model, x, num_samples=4, batch_size=batch_size)
        np.testing.assert_allclose(out["mean"][:, 0], expected, rtol=1e-5, atol=1e-5)
        assert out["samples"].shape == (5, 4, 1)
    mc = predictive.MonteCarloPredictive(model, 4)(x, ("mean",))["mean"]
    np.testing.assert_allclose(mc[:, 0], expected, rtol=1e-5, atol=1e-5)
    lists = keras.Model([model.inputs[0], model.inputs[1]], model.outputs)
    out = predictive.predict(lists, [x["a"], x["b"]], num_samples=4)
    np.testing.assert_allclose(out["mean"][:, 0], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ValueError, match=re.escape("`x['b']` must have shape (batch, 2); received shape (5, 3).")
    ):
        predictive.predict(model, {"a": x["a"], "b": x["a"]})
    with pytest.raises(
        ValueError, match=re.escape("`x[1]` must have shape (batch, 2); received shape (5, 3).")
    ):
        predictive.predict(lists, [x["a"], x["a"]])
    with pytest.raises(
        ValueError, match=re.escape("received batch sizes {\"x['a']\": 5, \"x['b']\": 4}")
    ):
        predictive.predict(model, {"a": x["a"], "b": x["b"][:4]})


def test_a_model_without_a_final_head_gets_point_predictions():
    """Its output is a point prediction: the spread over samples is all epistemic."""
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="last")])
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2, name="last")(inputs))
    x = np.ones((2, 3), np.float32)
    for model in (dense, functional):
        out = predictive.predict(model, x, num_samples=3)
        np.testing.assert_allclose(out["mean"], model(x), rtol=1e-6)
        np.testing.assert_array_equal(out["stddev"], 0.0)  # deterministic weights
    # A head inside a nested model is found.
    head = heads.IndependentNormal(1)
    body = keras.Sequential([keras.Input((3,)), layers.DenseFlipout(head.input_size), head])
    nested = keras.Sequential([keras.Input((3,)), body])
    assert predictive.predict(nested, np.ones((2, 3)), num_samples=2)["mean"].shape == (2, 1)


# --------------------------------------------------------------------------
# XLA
# --------------------------------------------------------------------------


def test_xla_gives_the_eager_shapes_and_finite_values():
    rng = np.random.default_rng(8)
    head = heads.IndependentNormal()
    model = keras.Sequential(
        [
            keras.Input((2, 3, 1)),
            layers.Conv2DFlipout(2, 2, bias_prior=priors.Normal(), seed=1),
            keras.layers.Flatten(),
            layers.DenseReparameterization(8, activation="relu", seed=2),
            layers.DenseLocalReparameterization(head.input_size, seed=3),
            head,
        ]
    )
    x = rng.normal(size=(3, 2, 3, 1)).astype(np.float32)
    mc = predictive.MonteCarloPredictive(model, 16, seed=0)
    eager = mc(x)
    xla = tf.function(mc.__call__, jit_compile=True)(tf.constant(x))
    assert eager.keys() == xla.keys()
    for key in eager:
        assert eager[key].shape == xla[key].shape, key
        assert np.all(np.isfinite(xla[key].numpy())), key
    assert np.all(xla["epistemic_variance"].numpy() > 0)


def test_xla_matches_eager_on_a_deterministic_model():
    rng = np.random.default_rng(9)
    head = heads.Categorical(3)
    model, x = _one_hot_model(head, rng.normal(size=(4, head.input_size)))
    mc = predictive.MonteCarloPredictive(model, 8, seed=0)
    eager = mc(x)
    xla = tf.function(mc.__call__, jit_compile=True)(tf.constant(x))
    assert eager.keys() == xla.keys()
    for key in eager:
        assert eager[key].shape == xla[key].shape, key
        if key != "samples":  # XLA and eager draw different labels
            np.testing.assert_allclose(
                xla[key].numpy(), eager[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key
            )
