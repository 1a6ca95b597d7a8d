"""HMC and NUTS against the exact posterior of Bayesian linear regression with known noise."""

import keras
import numpy as np
import pytest

import tfp_deepgen as tdg

SIGMA = 0.5
PRIOR_PRECISION = 2.0


def _problem(seed, size=50):
    """Fresh teacher data, a `Dense(1)` model with a fixed-scale head, and the exact posterior."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 2))
    y = x @ rng.normal(size=(2, 1)) + rng.normal() + SIGMA * rng.normal(size=(size, 1))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1), tdg.heads.IndependentNormal(1, scale=SIGMA)]
    )
    x1 = np.concatenate([x, np.ones((size, 1))], 1)  # kernel then bias: the flat order
    cov = np.linalg.inv(x1.T @ x1 / SIGMA**2 + PRIOR_PRECISION * np.eye(3))
    mean = cov @ x1.T @ y[:, 0] / SIGMA**2
    return x.astype("float32"), y.astype("float32"), model, mean, cov


def _check_against_exact(sampler, posterior, mean, cov):
    chains = sampler.chains.reshape(-1, 3).astype("float64")
    ess = sampler.diagnostics["ess"].astype("float64")
    assert sampler.diagnostics["max_r_hat"] < 1.05
    assert np.all(ess > 100)
    # Monte-Carlo standard error of a mean: sqrt(var / ESS); allow 4 of them.
    assert np.all(np.abs(chains.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / ess))
    # Sample covariance entry (i, j) has variance (S_ii S_jj + S_ij^2) / n: allow 5 SE.
    n = ess.min()
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(chains.T) - cov) < 5 * se)
    # The SampleSet holds the same samples, in (kernel, bias) variables.
    kernel, bias = (s.numpy() for s in posterior.samples)
    np.testing.assert_allclose(np.concatenate([kernel[:, :, 0], bias], 1), chains, rtol=1e-6)
    rates = sampler.diagnostics["acceptance_rate"]
    assert rates.shape == (sampler.num_chains,) and np.all((rates > 0.5) & (rates <= 1.0))
    assert np.all(sampler.diagnostics["step_size"] > 0)


def test_hmc_matches_exact_linear_regression_posterior():
    x, y, model, mean, cov = _problem(seed=11)
    # XLA compilation costs more than it saves on runs this small (see the module docstring).
    hmc = tdg.inference.HMC(
        model,
        prior_precision=PRIOR_PRECISION,
        num_burnin_steps=300,
        num_results=400,
        jit_compile=False,
        seed=1,
    )
    posterior = hmc.sample(x, y)
    assert isinstance(posterior, tdg.inference.SampleSet) and posterior.num_stored == 1600
    _check_against_exact(hmc, posterior, mean, cov)
    # The predictive over the set: its mean is the posterior-mean line's.
    x_new = np.array([[1.0, -1.0]], "float32")
    out = tdg.predictive.predict(posterior, x_new, num_samples=1600)
    expected = np.concatenate([x_new[0], [1.0]]) @ hmc.chains.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(out["mean"][0, 0], expected, atol=1e-4)


def test_nuts_matches_exact_linear_regression_posterior():
    x, y, model, mean, cov = _problem(seed=12)
    nuts = tdg.inference.NUTS(
        model,
        prior_precision=PRIOR_PRECISION,
        init="prior",
        num_burnin_steps=200,
        num_results=250,
        jit_compile=False,
        seed=2,
    )
    _check_against_exact(nuts, nuts.sample(x, y), mean, cov)
    assert nuts.diagnostics["step_size"].shape == (4,)


def test_runs_under_xla_and_seeds_reproduce():
    x, y, model, mean, cov = _problem(seed=13)

    def run(jit_compile):
        hmc = tdg.inference.HMC(
            model,
            prior_precision=PRIOR_PRECISION,
            num_chains=2,
            num_burnin_steps=100,
            num_results=20,
            jit_compile=jit_compile,
            seed=3,
        )
        hmc.sample(x, y)
        return hmc.chains

    xla = run(True)
    assert xla.shape == (20, 2, 3) and np.all(np.isfinite(xla))
    # After 100 adapted steps the chains are in the posterior's bulk (within 6 sd).
    assert np.all(np.abs(xla.reshape(-1, 3) - mean) < 6 * np.sqrt(np.diag(cov)))
    eager = run(False)
    np.testing.assert_array_equal(eager, run(False))


def test_classifier_mlp_runs_with_defaults():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 2)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("int32")
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(2),
            tdg.heads.Categorical(2),
        ]
    )
    hmc = tdg.inference.HMC(model, num_burnin_steps=60, num_results=10, seed=0)  # XLA
    posterior = hmc.sample(x, y)
    probabilities = tdg.predictive.predict(posterior, x, num_samples=40)["probabilities"]
    assert probabilities.shape == (40, 2) and np.all(np.isfinite(probabilities))
    assert np.all(hmc.diagnostics["acceptance_rate"] > 0.3)


def test_bad_arguments():
    _, _, model, _, _ = _problem(seed=0)
    with pytest.raises(ValueError, match="prior_precision"):
        tdg.inference.HMC(model, prior_precision=0.0)
    with pytest.raises(ValueError, match="kernel"):
        tdg.inference.HMC(model, kernel="mala")
    with pytest.raises(ValueError, match="num_chains"):
        tdg.inference.HMC(model, num_chains=0)
    with pytest.raises(ValueError, match="target_accept_prob"):
        tdg.inference.HMC(model, target_accept_prob=1.0)
    with pytest.raises(ValueError, match="init"):
        tdg.inference.HMC(model, init="zeros")
    with pytest.raises(ValueError, match="kernel"):
        tdg.inference.NUTS(model, kernel="hmc")
    with pytest.raises(ValueError, match="model"):
        tdg.inference.HMC(keras.Sequential([keras.layers.Dense(1)]))
    big = keras.Sequential(
        [keras.Input((200,)), keras.layers.Dense(50), tdg.heads.IndependentNormal(50, scale=1.0)]
    )
    with pytest.raises(ValueError, match="SGLD"):
        tdg.inference.HMC(big)
