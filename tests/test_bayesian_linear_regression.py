"""Variational dense layers recover the closed-form Bayesian linear regression posterior.

Model: `y = X w + noise`, `noise ~ N(0, sigma^2)` with `sigma` known, prior
`w ~ N(0, s0^2 I)`. The exact posterior is Gaussian with precision
`Lambda = X^T X / sigma^2 + I / s0^2` and mean `Lambda^{-1} X^T y / sigma^2`.
For a mean-field Gaussian `q(w) = prod_i N(m_i, v_i)` the ELBO is

    E_q[log p(y | X, w)] - KL(q || p)
      = -1/2 (m - mu)^T Lambda (m - mu) - 1/2 sum_i Lambda_ii v_i + 1/2 sum_i log v_i + const,

so its maximiser is `m = mu` (the exact posterior mean) and `v_i = 1 / Lambda_ii`.

A `Dense*(1, use_bias=False, kernel_prior=Normal(0, s0), kl_weight=1/N)`
trained with `model.fit` on the per-example Gaussian NLL
`0.5 * (y - f)^2 / sigma^2` minimises exactly `-ELBO / N` (up to a constant),
so its posterior must reach these values. The full batch is used on every
step, so the only gradient noise is the estimator's own weight noise; the
learning rate decays 100-fold, which leaves a stationary SGD jitter of a few
hundredths of a posterior standard deviation (measured over 5 seeds per
estimator: mean error <= 0.11 posterior std, std relative error <= 4%).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_deepgen import layers, priors

N = 200  # examples
D = 4  # features
SIGMA = 2.0  # known noise standard deviation
S0 = 0.3  # prior standard deviation: strong enough to shrink the means visibly
STEPS = 3000
LEARNING_RATE = 0.05

# Tolerances (see the module docstring for the measured SGD jitter).
MEAN_TOL_IN_STDS = 0.25  # per-coordinate |m - mu| <= 0.25 posterior std
MEAN_REL_TOL = 0.04  # ||m - mu|| / ||mu|| <= 4%
STD_REL_TOL = 0.12  # |s - 1/sqrt(Lambda_ii)| / (1/sqrt(Lambda_ii)) <= 12%


def _data():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(D, D)) * 0.3 + np.eye(D)  # correlated features
    x = rng.normal(size=(N, D)) @ mixing
    w_true = np.array([0.8, -0.5, 0.3, 0.1])
    y = x @ w_true + SIGMA * rng.normal(size=N)
    return x, y


def _exact_posterior(x, y):
    precision = x.T @ x / SIGMA**2 + np.eye(D) / S0**2
    mean = np.linalg.solve(precision, x.T @ y / SIGMA**2)
    mean_field_std = 1.0 / np.sqrt(np.diag(precision))
    return mean, mean_field_std, precision


def _gaussian_nll(y_true, y_pred):
    # Per-example negative log-likelihood with known sigma, up to a constant.
    return 0.5 * tf.reduce_mean(tf.square(y_true - y_pred), axis=-1) / SIGMA**2


def test_problem_is_discriminating():
    """The tolerances are far tighter than the gaps to plausible wrong answers."""
    x, y = _data()
    mean, std, precision = _exact_posterior(x, y)
    # Maximum likelihood (no prior / kl_weight=0) is > 0.5 posterior std away.
    ols = np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.linalg.norm(ols - mean) / np.linalg.norm(mean) > 3 * MEAN_REL_TOL
    # Doubling or halving the prior's weight (a wrong kl_weight) moves the mean
    # by more than the tolerance.
    for factor in (0.5, 2.0):
        wrong = np.linalg.solve(x.T @ x / SIGMA**2 + factor * np.eye(D) / S0**2, x.T @ y / SIGMA**2)
        assert np.linalg.norm(wrong - mean) / np.linalg.norm(mean) > 2 * MEAN_REL_TOL
    # An ELBO scaled wrongly by N (kl_weight=1 instead of 1/N) would give a
    # variance dominated by the prior: far outside the std tolerance.
    wrong_std = 1.0 / np.sqrt(np.diag(x.T @ x / SIGMA**2 / N + np.eye(D) / S0**2))
    assert np.all(np.abs(wrong_std - std) / std > 5 * STD_REL_TOL)
    # The mean-field stds are the inverse diagonal of the precision, not the
    # marginal stds of the full posterior (features are correlated).
    marginal_std = np.sqrt(np.diag(np.linalg.inv(precision)))
    assert np.all(marginal_std > std)


@pytest.mark.parametrize(
    "layer_cls",
    [layers.DenseReparameterization, layers.DenseFlipout, layers.DenseLocalReparameterization],
    ids=lambda c: c.__name__,
)
def test_learned_posterior_matches_closed_form(layer_cls):
    x, y = _data()
    mean, std, _ = _exact_posterior(x, y)

    keras.utils.set_random_seed(1)
    layer = layer_cls(
        1,
        use_bias=False,
        kernel_prior=priors.Normal(0.0, S0),
        kl_weight=1.0 / N,
        kernel_initializer="zeros",
        kernel_posterior_scale_init=0.1,
        seed=1,
    )
    model = keras.Sequential([keras.Input((D,)), layer])
    schedule = keras.optimizers.schedules.ExponentialDecay(LEARNING_RATE, STEPS, 0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=_gaussian_nll,
        jit_compile=True,
        steps_per_execution=100,
    )
    # STEPS full-batch steps in one epoch: every batch is the whole data set.
    x_rep = np.tile(x.astype("float32"), (STEPS, 1))
    y_rep = np.tile(y.astype("float32")[:, None], (STEPS, 1))
    history = model.fit(x_rep, y_rep, batch_size=N, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])

    q = layer.kernel_posterior()
    assert q.event_shape == (D, 1)
    learned_mean = q.mean().numpy()[:, 0].astype(np.float64)
    learned_std = q.stddev().numpy()[:, 0].astype(np.float64)

    mean_err_in_stds = np.abs(learned_mean - mean) / std
    mean_rel_err = np.linalg.norm(learned_mean - mean) / np.linalg.norm(mean)
    std_rel_err = np.abs(learned_std - std) / std
    print(
        f"{layer_cls.__name__}: mean error / posterior std = {np.round(mean_err_in_stds, 3)}, "
        f"||mean error|| / ||mean|| = {mean_rel_err:.4f}, "
        f"std relative error = {np.round(std_rel_err, 3)}"
    )
    assert np.all(mean_err_in_stds < MEAN_TOL_IN_STDS), (learned_mean, mean)
    assert mean_rel_err < MEAN_REL_TOL, (learned_mean, mean)
    assert np.all(std_rel_err < STD_REL_TOL), (learned_std, std)

    # The KL the layer reports for its final posterior is the analytic one.
    model(x[:2].astype("float32"))
    expected_kl = np.sum(
        np.log(S0 / learned_std) + (learned_std**2 + learned_mean**2) / (2 * S0**2) - 0.5
    )
    np.testing.assert_allclose(float(layer.last_kl), expected_kl, rtol=1e-4)
