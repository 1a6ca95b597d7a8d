"""Correctness of the distribution-output heads (`tfp_deepgen.heads`).

tests/test_head_conformance.py runs the generic layer battery (config,
`.keras`, XLA, export, mixed precision, MirroredStrategy). This file checks
what that battery cannot:

1. the negative log-likelihood is the right number: every head's `loss` and
   `log_prob` equal a TFP distribution built *here* from each head's
   documented parameter layout and transforms, and scipy.stats (or plain
   numpy) where it has the family;
2. the loss trains the right thing: a linear model fitted by maximum
   likelihood on synthetic data recovers the generating distribution;
3. bad input gets a clear error, and bad labels in a compiled step give an
   infinite loss (never NaN) without spoiling the other examples' gradients.
"""

import dataclasses
import re

import keras
import numpy as np
import pytest
import scipy.stats as st
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import expit, log_softmax, logsumexp

from tfp_deepgen import heads, losses
from tfp_deepgen.heads.base import DEFAULT_SCALE_SLOPE

#: The Normal truths below are written for scale = softplus(t) and divided by
#: the default slope, so the true scales are the same whatever the default.
_S = DEFAULT_SCALE_SLOPE

tfd = tfp.distributions

BATCH = 16


def softplus(x):
    return np.logaddexp(0.0, x)


def f32(x):
    return np.asarray(x, np.float32)


def fill_scale_tril(x, diag_shift, slope=1.0):
    """TFP's `FillScaleTriL` in numpy, following `tfb.FillTriangular`'s documented order.

    For 3 entries `[a, b, c]` the factor is `[[c, 0], [b, a]]`: not row-major.
    The diagonal goes through `softplus(slope * .) + diag_shift`.
    """
    m = x.shape[-1]
    n = int(np.sqrt(0.25 + 2 * m) - 0.5)
    tail = x[..., m - (n * n - m) :]
    tril = np.tril(np.concatenate([tail, x[..., ::-1]], -1).reshape(*x.shape[:-1], n, n))
    diag = np.einsum("...ii->...i", tril)
    return (
        tril
        - diag[..., None] * np.eye(n)
        + (softplus(slope * diag) + diag_shift)[..., None] * np.eye(n)
    )


# -- the distributions each head should build, written out independently ----


def constrained(head, p):
    """Each head's constrained parameters (float64), from its docstring's layout."""
    p = np.asarray(p, np.float64)
    d = head.event_size
    slope = getattr(head, "scale_slope", None)
    if isinstance(head, heads.IndependentNormal):
        if isinstance(head.scale, float):
            return {"loc": p, "scale": np.full_like(p, head.scale)}
        return {"loc": p[..., :d], "scale": softplus(slope * p[..., d:]) + head.min_scale}
    if isinstance(head, heads.StudentT):
        df = 2.0 + softplus(p[..., 2 * d :]) if head.df == "learned" else head.df
        loc, scale = p[..., :d], softplus(slope * p[..., d : 2 * d]) + head.min_scale
        return {"df": np.broadcast_to(df, loc.shape), "loc": loc, "scale": scale}
    if isinstance(head, heads.Gamma):
        return {
            "concentration": softplus(p[..., :d]) + head.min_value,
            "rate": softplus(p[..., d:]) + head.min_value,
        }
    if isinstance(head, heads.Poisson):
        return {"rate": np.exp(p)}
    if isinstance(head, heads.NegativeBinomial):
        return {"total_count": softplus(p[..., :d]) + head.min_count, "probs": expit(p[..., d:])}
    if isinstance(head, (heads.IndependentBernoulli, heads.Categorical)):
        return {"logits": p}
    if isinstance(head, heads.MixtureNormal):
        k = head.num_components
        shape = (*p.shape[:-1], k, d)
        return {
            "logits": p[..., :k],
            "loc": p[..., k : k + k * d].reshape(shape),
            "scale": softplus(slope * p[..., k + k * d :]).reshape(shape) + head.min_scale,
        }
    if isinstance(head, heads.MultivariateNormalTriL):
        tril = fill_scale_tril(p[..., d:], head.min_scale, slope)
        return {"loc": p[..., :d], "scale_tril": tril}
    raise AssertionError(f"no reference for {head}")


def reference(head, p):
    """The TFP distribution (float32) `head.distribution(p)` should equal."""
    c = {name: f32(v) for name, v in constrained(head, p).items()}
    if isinstance(head, heads.IndependentNormal):
        return tfd.Independent(tfd.Normal(c["loc"], c["scale"]), 1)
    if isinstance(head, heads.StudentT):
        return tfd.Independent(tfd.StudentT(c["df"], c["loc"], c["scale"]), 1)
    if isinstance(head, heads.Gamma):
        return tfd.Independent(tfd.Gamma(c["concentration"], c["rate"]), 1)
    if isinstance(head, heads.Poisson):
        return tfd.Independent(tfd.Poisson(rate=c["rate"]), 1)
    if isinstance(head, heads.NegativeBinomial):
        return tfd.Independent(tfd.NegativeBinomial(c["total_count"], probs=c["probs"]), 1)
    if isinstance(head, heads.IndependentBernoulli):
        return tfd.Independent(tfd.Bernoulli(logits=c["logits"], dtype=tf.float32), 1)
    if isinstance(head, heads.Categorical):
        return tfd.Categorical(logits=c["logits"], dtype=tf.float32)
    if isinstance(head, heads.MixtureNormal):
        components = tfd.Independent(tfd.Normal(c["loc"], c["scale"]), 1)
        return tfd.MixtureSameFamily(tfd.Categorical(logits=c["logits"]), components)
    if isinstance(head, heads.MultivariateNormalTriL):
        return tfd.MultivariateNormalTriL(c["loc"], c["scale_tril"])
    raise AssertionError(f"no reference for {head}")


def scipy_log_prob(head, y, p):
    """Log-likelihood per example from scipy.stats / numpy in float64 (no TFP)."""
    c = constrained(head, p)
    if isinstance(head, heads.Categorical):
        y = np.asarray(y).reshape(-1).astype(int)
        return log_softmax(c["logits"], -1)[np.arange(len(y)), y]
    y = np.asarray(y, np.float64).reshape(len(p), head.event_size)
    if isinstance(head, heads.IndependentNormal):
        return st.norm.logpdf(y, c["loc"], c["scale"]).sum(-1)
    if isinstance(head, heads.StudentT):
        return st.t.logpdf(y, c["df"], c["loc"], c["scale"]).sum(-1)
    if isinstance(head, heads.Gamma):
        return st.gamma.logpdf(y, c["concentration"], scale=1 / c["rate"]).sum(-1)
    if isinstance(head, heads.Poisson):
        return st.poisson.logpmf(y, c["rate"]).sum(-1)
    if isinstance(head, heads.NegativeBinomial):
        # TFP counts successes (probability `probs`) before `total_count`
        # failures; scipy counts failures before `n` successes.
        return st.nbinom.logpmf(y, c["total_count"], 1 - c["probs"]).sum(-1)
    if isinstance(head, heads.IndependentBernoulli):
        return st.bernoulli.logpmf(y, expit(c["logits"])).sum(-1)
    if isinstance(head, heads.MixtureNormal):
        per_component = st.norm.logpdf(y[:, None, :], c["loc"], c["scale"]).sum(-1)
        return logsumexp(log_softmax(c["logits"], -1) + per_component, -1)
    if isinstance(head, heads.MultivariateNormalTriL):
        return np.array(
            [
                st.multivariate_normal.logpdf(y_i, loc_i, tril_i @ tril_i.T)
                for y_i, loc_i, tril_i in zip(y, c["loc"], c["scale_tril"], strict=True)
            ]
        )
    raise AssertionError(f"no scipy reference for {head}")


# -- 1. the NLL is the right number ------------------------------------------


def _real(shape):
    return lambda rng: rng.normal(0.0, 2.0, shape)


def _counts(shape):
    return lambda rng: rng.poisson(3.0, shape).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class NLLCase:
    make: object  # () -> head
    labels: object  # rng -> labels of BATCH examples, in the head's support
    id: str


NLL_CASES = [
    NLLCase(lambda: heads.IndependentNormal(2), _real((BATCH, 2)), "Normal"),
    NLLCase(lambda: heads.IndependentNormal(), _real((BATCH,)), "Normal-rank1-labels"),
    NLLCase(
        lambda: heads.IndependentNormal(2, scale=0.5, min_scale=0.01),
        _real((BATCH, 2)),
        "Normal-fixed-scale",
    ),
    NLLCase(lambda: heads.IndependentNormal(min_scale=0.3), _real((BATCH, 1)), "Normal-min_scale"),
    NLLCase(
        lambda: heads.IndependentBernoulli(3),
        lambda rng: rng.integers(0, 2, (BATCH, 3)).astype(np.float64),
        "Bernoulli",
    ),
    NLLCase(
        lambda: heads.IndependentBernoulli(),
        lambda rng: rng.integers(0, 2, BATCH).astype(np.float64),
        "Bernoulli-rank1-labels",
    ),
    NLLCase(
        lambda: heads.Categorical(4),
        lambda rng: rng.integers(0, 4, BATCH).astype(np.float64),
        "Categorical-labels-(B,)",
    ),
    NLLCase(
        lambda: heads.Categorical(4),
        lambda rng: rng.integers(0, 4, (BATCH, 1)).astype(np.float64),
        "Categorical-labels-(B,1)",
    ),
    NLLCase(
        lambda: heads.Categorical(5),
        lambda rng: rng.integers(0, 5, BATCH).astype(np.int64),
        "Categorical-int-labels",
    ),
    NLLCase(lambda: heads.Poisson(2), _counts((BATCH, 2)), "Poisson"),
    NLLCase(lambda: heads.Poisson(), _counts((BATCH,)), "Poisson-rank1-labels"),
    NLLCase(lambda: heads.NegativeBinomial(2), _counts((BATCH, 2)), "NegativeBinomial"),
    NLLCase(lambda: heads.NegativeBinomial(), _counts((BATCH,)), "NegativeBinomial-rank1"),
    NLLCase(
        lambda: heads.Gamma(2, min_value=0.1),
        lambda rng: rng.gamma(2.0, 1.0, (BATCH, 2)),
        "Gamma",
    ),
    NLLCase(lambda: heads.Gamma(), lambda rng: rng.gamma(2.0, 1.0, BATCH), "Gamma-rank1-labels"),
    NLLCase(lambda: heads.StudentT(2), _real((BATCH, 2)), "StudentT"),
    NLLCase(lambda: heads.StudentT(df=3.0), _real((BATCH,)), "StudentT-fixed-df-rank1"),
    NLLCase(lambda: heads.MixtureNormal(3, event_size=2), _real((BATCH, 2)), "MixtureNormal"),
    NLLCase(lambda: heads.MixtureNormal(2), _real((BATCH,)), "MixtureNormal-rank1-labels"),
    NLLCase(lambda: heads.MultivariateNormalTriL(3), _real((BATCH, 3)), "MVNTriL"),
    NLLCase(
        lambda: heads.MultivariateNormalTriL(2, min_scale=0.2),
        _real((BATCH, 2)),
        "MVNTriL-min_scale",
    ),
    # TFP's regression tutorial: scale = 1e-3 + softplus(0.05 * t).
    NLLCase(
        lambda: heads.IndependentNormal(2, min_scale=1e-3, scale_slope=0.05),
        _real((BATCH, 2)),
        "Normal-tutorial-transform",
    ),
    NLLCase(lambda: heads.StudentT(1, scale_slope=2.0), _real((BATCH,)), "StudentT-slope"),
    NLLCase(lambda: heads.MixtureNormal(2, scale_slope=0.5), _real((BATCH,)), "Mixture-slope"),
    NLLCase(
        lambda: heads.MultivariateNormalTriL(2, scale_slope=0.1), _real((BATCH, 2)), "MVN-slope"
    ),
]


def _draw(case, seed=0):
    rng = np.random.default_rng(seed)
    head = case.make()
    params = f32(rng.normal(0.0, 1.5, (BATCH, head.output_size)))
    return head, case.labels(rng), params


def _event_labels(head, y):
    """Labels in the layout of the reference distribution's events."""
    if isinstance(head, heads.Categorical):
        return f32(np.reshape(y, -1))
    return f32(np.reshape(y, (len(y), head.event_size)))


@pytest.mark.parametrize("case", NLL_CASES, ids=lambda c: c.id)
def test_nll_equals_tfp_log_prob_of_documented_parameterization(case):
    head, y, params = _draw(case)
    expected = reference(head, params).log_prob(_event_labels(head, y)).numpy()
    assert expected.shape == (BATCH,)

    np.testing.assert_allclose(head.log_prob(y, params).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.checked_nll(y, params).numpy(), -expected, rtol=1e-5, atol=1e-6)
    # The Keras loss averages over the batch, `head.loss` and the class alike.
    np.testing.assert_allclose(float(head.loss(y, params)), -expected.mean(), rtol=1e-5)
    nll = losses.NegativeLogLikelihood(head)
    np.testing.assert_allclose(float(nll(y, params)), -expected.mean(), rtol=1e-5)


def test_nll_loss_refuses_what_is_not_a_head_and_rebuilds_from_its_config():
    with pytest.raises(ValueError, match="`head` must be a tfp_deepgen.heads head"):
        losses.NegativeLogLikelihood("normal")
    loss = losses.NegativeLogLikelihood(heads.StudentT(1))
    again = losses.NegativeLogLikelihood.from_config(loss.get_config())
    y, params = f32([[0.5]]), f32([[0.1, -0.3, 0.7]])
    np.testing.assert_allclose(float(again(y, params)), float(loss(y, params)))


@pytest.mark.parametrize("case", NLL_CASES, ids=lambda c: c.id)
def test_log_prob_matches_scipy(case):
    head, y, params = _draw(case, seed=1)
    expected = scipy_log_prob(head, y, params)
    # float32 against float64: a few ulps of log-likelihoods of size ~1-30.
    np.testing.assert_allclose(head.log_prob(y, params).numpy(), expected, rtol=2e-5, atol=2e-5)


def test_log_prob_at_hand_computed_values():
    # A handful of hand-written points, so the references above are checked too.
    normal = heads.IndependentNormal(scale_slope=1.0)
    # softplus(log(e - 1)) = 1: standard normal at 0.
    params = f32([[0.0, np.log(np.e - 1)]])
    np.testing.assert_allclose(
        normal.log_prob(np.array([0.0]), params), [-0.5 * np.log(2 * np.pi)], rtol=1e-5
    )
    poisson = heads.Poisson()  # log-rate log(2): P(y=3) = e^-2 2^3 / 3!
    np.testing.assert_allclose(
        poisson.log_prob(np.array([3.0]), f32([[np.log(2.0)]])),
        [np.log(np.exp(-2) * 8 / 6)],
        rtol=1e-6,
    )
    nb = heads.NegativeBinomial()  # total count 1, p = 1/2: P(y=k) = 2^-(k+1)
    np.testing.assert_allclose(
        nb.log_prob(np.array([2.0]), f32([[np.log(np.e - 1), 0.0]])), [-3 * np.log(2)], rtol=1e-5
    )
    gamma = heads.Gamma()  # concentration 1, rate 1: Exponential(1)
    one = np.log(np.e - 1)
    np.testing.assert_allclose(
        gamma.log_prob(np.array([2.0]), f32([[one, one]])), [-2.0], rtol=1e-5
    )
    mvn = heads.MultivariateNormalTriL(2, scale_slope=1.0)
    # [a, b, c] fills [[c, 0], [b, a]]: L = [[1, 0], [0.5, 2]].
    raw = [np.log(np.expm1(2.0 - 1e-5)), 0.5, np.log(np.expm1(1.0 - 1e-5))]
    params = f32([[0.0, 0.0, *raw]])
    cov = np.array([[1.0, 0.5], [0.5, 4.25]])
    np.testing.assert_allclose(
        mvn.log_prob(np.array([[0.3, -1.0]]), params),
        [st.multivariate_normal.logpdf([0.3, -1.0], [0.0, 0.0], cov)],
        rtol=1e-5,
    )


def test_homoscedastic_normal_uses_its_own_scale_variable():
    rng = np.random.default_rng(2)
    head = heads.IndependentNormal(2, scale="homoscedastic", min_scale=1e-3)
    assert head.input_size == 2 and head.output_size == 4
    # Initially 1 (before min_scale), whatever the slope.
    np.testing.assert_allclose(softplus(_S * head.raw_scale.numpy()), [1.0, 1.0], rtol=1e-6)
    head.raw_scale.assign(f32([0.3, -1.2]))
    loc = f32(rng.normal(size=(BATCH, 2)))
    y = f32(rng.normal(size=(BATCH, 2)))
    params = head(loc).numpy()
    np.testing.assert_array_equal(params[:, :2], loc)
    np.testing.assert_array_equal(params[:, 2:], np.broadcast_to(f32([0.3, -1.2]), (BATCH, 2)))
    scale = softplus(_S * np.array([0.3, -1.2])) + 1e-3
    expected = st.norm.logpdf(y, loc, scale).sum(-1)
    np.testing.assert_allclose(head.log_prob(y, params).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(float(head.loss(y, params)), -expected.mean(), rtol=1e-5)

    # Trained through the loss: the raw scale gets a gradient.
    with tf.GradientTape() as tape:
        loss = head.loss(y, head(loc))
    (grad,) = tape.gradient(loss, [head.raw_scale])
    assert np.all(np.isfinite(grad)) and np.all(grad.numpy() != 0)


def test_bernoulli_soft_labels_give_binary_cross_entropy():
    rng = np.random.default_rng(3)
    head = heads.IndependentBernoulli(2)
    logits = f32(rng.normal(size=(BATCH, 2)))
    y = f32(rng.uniform(size=(BATCH, 2)))
    prob = expit(logits.astype(np.float64))
    bce = -(y * np.log(prob) + (1 - y) * np.log1p(-prob)).sum(-1)
    np.testing.assert_allclose(head.checked_nll(y, logits).numpy(), bce, rtol=1e-5)


# -- 2. maximum likelihood recovers the generating distribution --------------

N_FIT = 16000
FIT_STEPS = 400  # full batch; 1500 steps give the same errors to 3 decimals
GRID = np.linspace(-1.0, 1.0, 21)[:, None]

# Tolerances on the worst point of GRID (x = +-1, where a fitted line is least
# certain). With the fixed seeds the fitted model is the maximum-likelihood
# estimate (the errors do not shrink with more steps), so what remains is
# sampling error; over data seeds 0-7 the largest errors were: mean 0.055 sd;
# sd 2.3% (Normal, Poisson, MVN) and 4.5% (StudentT, Gamma, NegativeBinomial,
# mixture: df, shape and dispersion are estimated too); probabilities 0.022;
# MVN correlation 0.022; mixture total variation 0.016 (one seed's
# initialisation converged slower: 0.081; seed 0 gives 0.012). Each tolerance
# is 2-4 times those, and the MSE fit misses the Normal sd by 400%.
_MOMENTS = {"mean": 0.1, "sd": 0.05}  # mean error in true sds; relative sd error
_MOMENTS_HEAVY = {"mean": 0.1, "sd": 0.1}
FIT_TOL = {
    "Normal": _MOMENTS,
    "Normal-homoscedastic": _MOMENTS,
    "StudentT": _MOMENTS_HEAVY,
    "Gamma": _MOMENTS_HEAVY,
    "Poisson": _MOMENTS,
    "NegativeBinomial": _MOMENTS_HEAVY,
    "Bernoulli": {"probs": 0.05},  # absolute
    "Categorical": {"probs": 0.05},
    "MixtureNormal": {**_MOMENTS_HEAVY, "tv": 0.05},  # total-variation distance
    "MVNTriL": {**_MOMENTS, "corr": 0.05},  # absolute, on the correlation
}


@dataclasses.dataclass(frozen=True)
class FitCase:
    make: object  # () -> head
    slope: tuple  # true unconstrained params = slope * x + intercept
    intercept: tuple
    id: str
    raw_scale: tuple = ()  # homoscedastic Normal: the true raw scale


FIT_CASES = [
    FitCase(lambda: heads.IndependentNormal(), (2.0, 1.5 / _S), (0.5, -0.5 / _S), "Normal"),
    FitCase(
        lambda: heads.IndependentNormal(scale="homoscedastic"),
        (2.0,),
        (0.5,),
        "Normal-homoscedastic",
        raw_scale=(-0.5 / _S,),
    ),
    FitCase(lambda: heads.StudentT(), (1.0, 0.5, 0.0), (0.0, -0.5, 1.5), "StudentT"),
    FitCase(lambda: heads.Gamma(), (0.5, -1.0), (1.0, 0.3), "Gamma"),
    FitCase(lambda: heads.Poisson(), (1.0,), (1.0,), "Poisson"),
    FitCase(lambda: heads.NegativeBinomial(), (0.5, 1.0), (1.0, 0.5), "NegativeBinomial"),
    FitCase(lambda: heads.IndependentBernoulli(2), (3.0, -2.0), (-0.5, 1.0), "Bernoulli"),
    FitCase(lambda: heads.Categorical(3), (2.0, -1.0, 0.0), (0.0, 0.5, 0.0), "Categorical"),
    FitCase(
        lambda: heads.MixtureNormal(2),
        (1.0, -1.0, 1.0, 0.5, 0.0, 0.0),
        (0.0, 0.0, -2.0, 2.0, -0.5, 0.0),
        "MixtureNormal",
    ),
    FitCase(
        lambda: heads.MultivariateNormalTriL(2),
        (1.0, -1.0, 0.5, 0.3, 0.0),
        (0.0, 1.0, 0.2, 0.5, -0.3),
        "MVNTriL",
    ),
]


def _true_params(case, x):
    params = np.asarray(case.slope) * x + np.asarray(case.intercept)
    if case.raw_scale:
        params = np.concatenate([params, np.broadcast_to(case.raw_scale, params.shape)], -1)
    return f32(params)


def _fit(case, seed=0):
    """Synthetic data from the reference distribution; a linear model fitted by its NLL."""
    head = case.make()
    x = f32(np.random.default_rng(seed).uniform(-1.0, 1.0, (N_FIT, 1)))
    y = reference(head, _true_params(case, x)).sample(seed=tf.constant([seed, 7])).numpy()
    if isinstance(head, heads.Categorical) or head.event_size == 1:
        y = y.reshape(N_FIT)  # the rank-1 label convention
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(
                head.input_size,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed),
                bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1),
            ),
            head,
        ]
    )
    schedule = keras.optimizers.schedules.CosineDecay(0.1, FIT_STEPS, alpha=0.01)
    model.compile(
        keras.optimizers.Adam(schedule),
        head.loss,
        jit_compile=True,
        steps_per_execution=FIT_STEPS,
    )
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=FIT_STEPS, epochs=1, verbose=0)
    return head, x, y, model(f32(GRID)).numpy()


def _relative_error(estimate, truth):
    return float(np.max(np.abs(np.asarray(estimate) / np.asarray(truth) - 1.0)))


def _correlation(dist):
    cov = dist.covariance().numpy()
    return cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])


def fit_errors(case, head, x, y, fitted_params):
    """The worst discrepancy over the x grid, per checked quantity."""
    truth = reference(head, _true_params(case, GRID))
    fitted = head.distribution(fitted_params)
    if isinstance(head, heads.IndependentBernoulli):
        true_probs = expit(_true_params(case, GRID).astype(np.float64))
        return {
            "probs": float(np.max(np.abs(head.probabilities(fitted_params).numpy() - true_probs)))
        }
    if isinstance(head, heads.Categorical):
        true_probs = np.exp(log_softmax(_true_params(case, GRID).astype(np.float64), -1))
        return {
            "probs": float(np.max(np.abs(head.probabilities(fitted_params).numpy() - true_probs)))
        }

    mean, sd = truth.mean().numpy(), truth.stddev().numpy()
    errors = {
        "mean": float(np.max(np.abs(fitted.mean().numpy() - mean) / sd)),
        "sd": _relative_error(fitted.stddev().numpy(), sd),
    }
    if isinstance(head, heads.IndependentNormal) and head.scale == "heteroscedastic":
        # What an MSE-trained model gives: least squares, with the pooled
        # residual sd as its one scale. The sd check must reject it.
        slope, intercept = np.polyfit(x[:, 0], y, 1)
        pooled_sd = np.std(y - (slope * x[:, 0] + intercept))
        errors["mse_sd"] = _relative_error(np.full(sd.shape, pooled_sd), sd)
    if isinstance(head, heads.MultivariateNormalTriL):
        errors["corr"] = float(np.max(np.abs(_correlation(fitted) - _correlation(truth))))
    if isinstance(head, heads.MixtureNormal):
        # Label-switching-proof: compare the densities, not the components.
        y_grid = np.linspace(-6.0, 6.0, 601)
        points = f32(y_grid[:, None, None])  # (y, x, event)
        gap = np.abs(fitted.prob(points).numpy() - truth.prob(points).numpy())
        errors["tv"] = float(0.5 * np.max(np.trapezoid(gap, y_grid, axis=0)))
    return errors


@pytest.mark.parametrize("case", FIT_CASES, ids=lambda c: c.id)
def test_fit_recovers_generating_distribution(case):
    head, x, y, fitted_params = _fit(case)
    errors = fit_errors(case, head, x, y, fitted_params)
    tolerances = FIT_TOL[case.id]
    mse_sd = errors.pop("mse_sd", None)
    assert set(errors) == set(tolerances)
    for quantity, tolerance in tolerances.items():
        assert errors[quantity] < tolerance, f"{quantity}: {errors[quantity]:.3f} >= {tolerance}"
    if case.id == "Normal":
        assert mse_sd > 10 * tolerances["sd"], mse_sd
    if case.raw_scale:  # the head's own variable learned the scale
        np.testing.assert_allclose(
            softplus(_S * head.raw_scale.numpy()),
            softplus(_S * np.array(case.raw_scale)),
            rtol=0.05,
        )


# -- 3. bad input -------------------------------------------------------------

ALL_HEADS = [
    pytest.param(lambda: heads.IndependentNormal(2), id="Normal"),
    pytest.param(lambda: heads.IndependentNormal(2, scale=0.5), id="Normal-fixed-scale"),
    pytest.param(lambda: heads.IndependentNormal(3, scale="homoscedastic"), id="Normal-homosc"),
    pytest.param(lambda: heads.IndependentBernoulli(3), id="Bernoulli"),
    pytest.param(lambda: heads.Categorical(4), id="Categorical"),
    pytest.param(lambda: heads.Poisson(2), id="Poisson"),
    pytest.param(lambda: heads.NegativeBinomial(), id="NegativeBinomial"),
    pytest.param(lambda: heads.Gamma(2), id="Gamma"),
    pytest.param(lambda: heads.StudentT(), id="StudentT"),
    pytest.param(lambda: heads.MixtureNormal(3, 2), id="MixtureNormal"),
    pytest.param(lambda: heads.MultivariateNormalTriL(3), id="MVNTriL"),
]


@pytest.mark.parametrize("make", ALL_HEADS)
def test_wrong_param_size_names_both_sizes(make):
    head = make()
    wrong = head.output_size + 1
    with pytest.raises(ValueError, match=rf"dimension {head.output_size}\b.*got {wrong}\b"):
        head.distribution(np.zeros((2, wrong), np.float32))
    with pytest.raises(ValueError, match=rf"dimension {head.output_size}\b.*got {wrong}\b"):
        head.loss(np.ones((2,)), np.zeros((2, wrong), np.float32))

    wrong = head.input_size + 1
    with pytest.raises(ValueError, match=rf"dimension {head.input_size}\b.*got {wrong}\b"):
        keras.Sequential([keras.Input((1,)), keras.layers.Dense(wrong), make()])


LABEL_SHAPE_ERRORS = [
    pytest.param(
        lambda: heads.IndependentNormal(2), (BATCH,), "last dimension 2", id="Normal-rank1"
    ),
    pytest.param(lambda: heads.IndependentNormal(2), (BATCH, 1), "last dimension 2", id="Normal"),
    pytest.param(lambda: heads.Poisson(), (BATCH, 3), "last dimension 1", id="Poisson"),
    pytest.param(
        lambda: heads.MultivariateNormalTriL(3), (BATCH, 2), "last dimension 3", id="MVNTriL"
    ),
    pytest.param(lambda: heads.Categorical(4), (BATCH, 4), "one class id", id="Categorical-1hot"),
]


@pytest.mark.parametrize("make, label_shape, message", LABEL_SHAPE_ERRORS)
def test_labels_of_the_wrong_event_size_raise_instead_of_broadcasting(make, label_shape, message):
    head = make()
    y = np.zeros(label_shape, np.float32)
    params = np.zeros((BATCH, head.output_size), np.float32)
    shape = re.escape(str(label_shape))
    with pytest.raises(ValueError, match=f"{message}.*{shape}"):
        head.loss(y, params)
    with pytest.raises(ValueError, match=message):
        head.log_prob(y, params)


def test_one_hot_labels_fail_compiled_fit_with_a_clear_error():
    head = heads.Categorical(3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3), head])
    model.compile("sgd", head.loss)
    with pytest.raises(ValueError, match="one class id"):
        model.fit(np.zeros((6, 1)), np.eye(3)[[0, 1, 2, 0, 1, 2]], batch_size=6, verbose=0)


_COUNTS = "non-negative integer counts"
_CLASS_IDS = "class ids 0, 1, ..., 2"
BAD_LABELS = [
    pytest.param(lambda: heads.Poisson(), [2.0, -1.0], _COUNTS, id="Poisson-negative"),
    pytest.param(lambda: heads.Poisson(), [1.5, 2.0], _COUNTS, id="Poisson-fraction"),
    pytest.param(lambda: heads.Poisson(), [np.inf, 2.0], _COUNTS, id="Poisson-inf"),
    pytest.param(lambda: heads.NegativeBinomial(), [-3.0, 1.0], _COUNTS, id="NegBin-negative"),
    pytest.param(lambda: heads.NegativeBinomial(), [0.0, 0.5], _COUNTS, id="NegBin-fraction"),
    pytest.param(lambda: heads.NegativeBinomial(), [np.inf, 0.0], _COUNTS, id="NegBin-inf"),
    pytest.param(lambda: heads.Categorical(3), [0, 3], _CLASS_IDS, id="Categorical-too-large"),
    pytest.param(lambda: heads.Categorical(3), [[-1], [2]], _CLASS_IDS, id="Categorical-negative"),
    pytest.param(lambda: heads.Categorical(3), [0.5, 1.0], _CLASS_IDS, id="Categorical-fraction"),
    pytest.param(lambda: heads.Gamma(), [0.0, 1.0], "positive numbers", id="Gamma-zero"),
    pytest.param(lambda: heads.Gamma(), [-2.0, 1.0], "positive numbers", id="Gamma-negative"),
    pytest.param(
        lambda: heads.IndependentBernoulli(), [1.5, 1.0], r"values in \[0, 1\]", id="Bernoulli-1.5"
    ),
    pytest.param(
        lambda: heads.IndependentBernoulli(),
        [0.0, -0.1],
        r"values in \[0, 1\]",
        id="Bernoulli--0.1",
    ),
    pytest.param(
        lambda: heads.IndependentNormal(), [np.nan, 1.0], "finite real numbers", id="Normal-nan"
    ),
    pytest.param(lambda: heads.StudentT(), [1.0, np.inf], "finite real numbers", id="StudentT-inf"),
    pytest.param(
        lambda: heads.MultivariateNormalTriL(2),
        [[0.0, np.nan], [1.0, 2.0]],
        "finite real numbers",
        id="MVNTriL-nan",
    ),
]


@pytest.mark.parametrize("make, labels, support", BAD_LABELS)
def test_label_outside_support_raises_eagerly_naming_the_support(make, labels, support):
    head = make()
    y = np.asarray(labels, np.float64)
    params = np.zeros((len(y), head.output_size), np.float32)
    for loss in (head.loss, losses.NegativeLogLikelihood(head), head.checked_nll):
        with pytest.raises(ValueError, match=support):
            loss(y, params)


# Each with one bad label among 8 examples (index 5).
COMPILED_BAD_LABELS = [
    pytest.param(lambda: heads.Poisson(), -1.0, id="Poisson-negative"),
    pytest.param(lambda: heads.Poisson(), np.inf, id="Poisson-inf"),
    pytest.param(lambda: heads.NegativeBinomial(), 2.5, id="NegativeBinomial-fraction"),
    pytest.param(lambda: heads.Categorical(3), 3.0, id="Categorical-too-large"),
    pytest.param(lambda: heads.Gamma(), 0.0, id="Gamma-zero"),
    pytest.param(lambda: heads.IndependentBernoulli(), 1.5, id="Bernoulli-above-1"),
    pytest.param(lambda: heads.IndependentNormal(), np.nan, id="Normal-nan"),
]


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("make, bad", COMPILED_BAD_LABELS)
def test_bad_label_in_compiled_step_gives_inf_loss_and_clean_gradients(make, bad, jit_compile):
    head = make()
    rng = np.random.default_rng(4)
    x = f32(rng.uniform(-1, 1, (8, 1)))
    y = np.ones(8, np.float32)  # in every head's support
    y[5] = bad
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(head.input_size), head])
    lr = 0.1
    model.compile(keras.optimizers.SGD(lr), head.loss, jit_compile=jit_compile)
    before = [w.numpy() for w in model.trainable_weights]

    loss = model.evaluate(x, y, batch_size=8, verbose=0)
    assert np.isposinf(loss)

    # The 7 valid examples' mean gradient, eagerly and without the bad one.
    valid = np.arange(8) != 5
    with tf.GradientTape() as tape:
        valid_loss = head.loss(y[valid], model(x[valid]))
    grads = tape.gradient(valid_loss, model.trainable_weights)

    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isposinf(history.history["loss"][0])
    for w0, w, g in zip(before, model.trainable_weights, grads, strict=True):
        assert np.all(np.isfinite(w.numpy()))
        # The bad example's gradient is zero; the batch mean still divides by 8.
        np.testing.assert_allclose(w.numpy() - w0, -lr * g.numpy() * 7 / 8, rtol=1e-4, atol=1e-7)
    assert any(
        np.any(w.numpy() != w0) for w0, w in zip(before, model.trainable_weights, strict=True)
    )


INVALID_ARGUMENTS = [
    ("IndependentNormal", {"event_size": 0}),
    ("IndependentNormal", {"event_size": -2}),
    ("IndependentNormal", {"event_size": 1.5}),
    ("IndependentBernoulli", {"event_size": 0}),
    ("Poisson", {"event_size": -1}),
    ("NegativeBinomial", {"event_size": 0}),
    ("Gamma", {"event_size": -3}),
    ("StudentT", {"event_size": 0}),
    ("MixtureNormal", {"num_components": 2, "event_size": 0}),
    ("MultivariateNormalTriL", {"event_size": -1}),
    ("MultivariateNormalTriL", {"event_size": 0}),
    ("Categorical", {"num_classes": 1}),
    ("Categorical", {"num_classes": 0}),
    ("MixtureNormal", {"num_components": 0}),
    ("IndependentNormal", {"scale": "bogus"}),
    ("IndependentNormal", {"scale": 0.0}),
    ("IndependentNormal", {"scale": -1.0}),
    ("IndependentNormal", {"scale": None}),
    ("StudentT", {"df": "x"}),
    ("StudentT", {"df": 0.0}),
    ("IndependentNormal", {"min_scale": 0}),
    ("StudentT", {"min_scale": 0}),
    ("MixtureNormal", {"num_components": 2, "min_scale": 0}),
    ("MultivariateNormalTriL", {"event_size": 2, "min_scale": -1e-3}),
    ("Gamma", {"min_value": 0}),
    ("NegativeBinomial", {"min_count": 0}),
]


@pytest.mark.parametrize(
    "name, kwargs",
    INVALID_ARGUMENTS,
    ids=[f"{n}-{list(k)[-1]}={list(k.values())[-1]!r}" for n, k in INVALID_ARGUMENTS],
)
def test_invalid_constructor_argument_is_named(name, kwargs):
    argument = list(kwargs)[-1]  # the bad one; any before it are valid
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        getattr(heads, name)(**kwargs)


# -- a user's own head, written as the README shows ---------------------------


@keras.saving.register_keras_serializable(package="my_project")
class LogNormalHead(heads.DistributionHead):
    """`y ~ LogNormal(loc, scale)`: the README's subclassing example."""

    support = "positive numbers"
    _safe_label = 1.0

    @staticmethod
    def params_size(event_size=1):
        return 2 * event_size

    @property
    def _param_count(self):
        return 2 * self.event_size

    def _in_support(self, y):
        return tf.math.is_finite(y) & (y > 0)

    def marginal(self, params):
        loc, raw_scale = self._split(params, [self.event_size] * 2)
        return tfd.LogNormal(loc, heads.base.positive(raw_scale, 1e-6, DEFAULT_SCALE_SLOPE))


def test_a_subclassed_head_trains_checks_labels_and_round_trips(tmp_path):
    head = LogNormalHead(2)
    rng = np.random.default_rng(5)
    x = f32(rng.normal(size=(256, 3)))
    y = f32(np.exp(x[:, :2] * 0.5 + 0.1 * rng.normal(size=(256, 2))))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
    model.compile(keras.optimizers.Adam(0.05), head.loss, jit_compile=True)
    history = model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 1.0
    params = model(x[:4])
    expected = tfd.Independent(head.marginal(params), 1).log_prob(y[:4])
    np.testing.assert_allclose(head.log_prob(y[:4], params), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="must hold positive numbers"):
        head.loss(-y[:4], params)
    path = tmp_path / "lognormal.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x[:4]), params, rtol=1e-6)


def test_multivariate_normal_scale_is_tfps_fill_scale_tril():
    """Our static-mask construction equals TFP's FillScaleTriL, entry for entry."""
    rng = np.random.default_rng()
    head = heads.MultivariateNormalTriL(4, min_scale=1e-3, scale_slope=0.7)
    params = rng.normal(size=(6, head.input_size)).astype("float32")
    diagonal = tfp.bijectors.Chain([tfp.bijectors.Softplus(), tfp.bijectors.Scale(0.7)])
    expected = tfp.bijectors.FillScaleTriL(diagonal, diag_shift=1e-3)(params[:, 4:])
    np.testing.assert_allclose(head.distribution(params).scale.to_dense(), expected, rtol=1e-6)
