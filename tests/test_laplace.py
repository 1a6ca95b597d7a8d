"""`tdg.inference.Laplace` against exact answers.

Bayesian linear regression with known noise is exact for a Laplace
approximation: the posterior is `N(m, P^-1)` with `P = X^T X / sigma^2 + alpha I`
(X with a column of ones for the bias, which the prior covers too) and the
evidence is `log N(y; 0, sigma^2 I + X X^T / alpha)`, all computed here in
float64 numpy. For a classifier the references are per-example Jacobians and
the softmax Hessian `diag(p) - p p^T` in closed form.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import optimize

import tfp_deepgen as tdg
from tfp_deepgen.inference.curvature import curvature_matrix

SIGMA = 0.4


def regression_problem(alpha, seed=0, size=40, num_inputs=3):
    """A random teacher's data, and a Dense model set to the exact posterior mean for `alpha`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, num_inputs))
    y = x @ rng.normal(size=(num_inputs, 1)) + 0.5 + SIGMA * rng.normal(size=(size, 1))
    x, y = x.astype("float32"), y.astype("float32")
    design = np.concatenate([x, np.ones((size, 1))], 1).astype("float64")
    model = keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(1),
            tdg.heads.IndependentNormal(scale=SIGMA),
        ]
    )
    mean, precision = exact_posterior(design, y, alpha)
    model.layers[0].kernel.assign(mean[:-1, None].astype("float32"))
    model.layers[0].bias.assign(mean[-1:].astype("float32"))
    return model, x, y, design, mean, precision


def exact_posterior(design, y, alpha):
    precision = design.T @ design / SIGMA**2 + alpha * np.eye(design.shape[1])
    mean = np.linalg.solve(precision, design.T @ y[:, 0].astype("float64") / SIGMA**2)
    return mean, precision


def exact_evidence(design, y, alpha):
    cov = SIGMA**2 * np.eye(len(design)) + design @ design.T / alpha
    target = y[:, 0].astype("float64")
    _, log_det = np.linalg.slogdet(cov)
    quad = target @ np.linalg.solve(cov, target)
    return -0.5 * (len(design) * math.log(2 * math.pi) + log_det + quad)


@pytest.mark.parametrize("hessian", ["full", "kron"])
def test_regression_posterior_and_evidence_are_exact(hessian):
    # A single Dense layer under a fixed-scale Normal head: KFAC is exact too.
    alpha = 2.0
    model, x, y, design, mean, precision = regression_problem(alpha)
    laplace = tdg.inference.Laplace(model, "all", hessian, prior_precision=alpha).fit(x, y)
    scale = np.abs(precision).max()
    assert np.abs(laplace.posterior_precision.numpy() - precision).max() < 1e-5 * scale
    assert np.abs(laplace.mean.numpy() - mean).max() < 1e-5
    evidence = exact_evidence(design, y, alpha)
    assert abs(float(laplace.log_marginal_likelihood()) - evidence) < 1e-4
    assert (
        abs(
            float(laplace.log_marginal_likelihood(5.0))
            - exact_laplace(mean, precision, design, y, alpha, 5.0)
        )
        < 1e-4
    )
    # Draws: whitened by the exact precision's Cholesky factor, standard Normal.
    draws = laplace.weight_samples(4000, tf.constant([1, 2]))
    flat = np.concatenate([d.numpy().reshape(4000, -1) for d in draws], 1)
    white = (flat - mean) @ np.linalg.cholesky(precision)
    assert np.abs(white.mean(0)).max() < 5 / math.sqrt(4000)
    assert np.abs(np.cov(white.T) - np.eye(4)).max() < 5 * math.sqrt(2 / 4000)


def exact_laplace(mean, precision, design, y, alpha, new_alpha):
    """The Laplace evidence at `new_alpha`, theta fixed at `mean` (laplace-torch's convention)."""
    residual = y[:, 0] - design @ mean
    log_lik = -0.5 * np.sum(residual**2) / SIGMA**2 - len(y) * math.log(
        SIGMA * math.sqrt(2 * math.pi)
    )
    dim = len(mean)
    hessian = precision - alpha * np.eye(dim)
    _, log_det = np.linalg.slogdet(hessian + new_alpha * np.eye(dim))
    return log_lik + 0.5 * dim * math.log(new_alpha) - 0.5 * new_alpha * mean @ mean - 0.5 * log_det


def test_regression_diag_is_the_exact_precision_diagonal():
    alpha = 0.5
    model, x, y, _, mean, precision = regression_problem(alpha, seed=1)
    laplace = tdg.inference.Laplace(model, "all", "diag", prior_precision=alpha).fit(x, y)
    got = laplace.posterior_precision.numpy()
    assert np.abs(got - np.diag(precision)).max() < 1e-5 * np.abs(precision).max()
    draws = laplace.weight_samples(4000, tf.constant([3, 4]))
    flat = np.concatenate([d.numpy().reshape(4000, -1) for d in draws], 1)
    ratio = flat.var(0) * np.diag(precision)
    assert np.abs(ratio - 1).max() < 5 * math.sqrt(2 / 4000)


def test_regression_ggn_and_empirical_fisher_closed_forms():
    model, x, y, design, mean, _ = regression_problem(1.0, seed=2)
    variables = model.trainable_variables
    ggn, log_lik = curvature_matrix(model, variables, x, y, "ggn", batch_size=7)
    ef, _ = curvature_matrix(model, variables, x, y, "ef", batch_size=7)
    residual = y[:, 0] - design @ mean
    assert np.abs(ggn.numpy() - design.T @ design / SIGMA**2).max() < 1e-3
    exact_ef = design.T @ (design * residual[:, None] ** 2) / SIGMA**4
    assert np.abs(ef.numpy() - exact_ef).max() < 1e-4 * np.abs(exact_ef).max()
    exact_log_lik = -0.5 * np.sum(residual**2) / SIGMA**2 - len(y) * math.log(
        SIGMA * math.sqrt(2 * math.pi)
    )
    assert abs(float(log_lik) - exact_log_lik) < 1e-4


def test_marglik_gradient_and_optimum_match_the_exact_evidence():
    design_model, x, y, design, _, _ = regression_problem(1.0, seed=3)
    del design_model

    def negative(log_alpha):
        return -exact_evidence(design, y, math.exp(log_alpha))

    best = math.exp(optimize.minimize_scalar(negative, bounds=(-8, 8), method="bounded").x)
    # At the posterior mode for alpha, d/d alpha of the Laplace evidence (theta fixed)
    # equals that of the exact evidence: check at another alpha, then the optimum.
    alpha = 3.0
    model, *_ = regression_problem(alpha, seed=3)
    laplace = tdg.inference.Laplace(model, "all", "full", prior_precision=alpha).fit(x, y)
    value = tf.constant(alpha, "float64")
    with tf.GradientTape() as tape:
        tape.watch(value)
        lml = laplace.log_marginal_likelihood(value)
    step = 1e-4
    exact = (exact_evidence(design, y, alpha + step) - exact_evidence(design, y, alpha - step)) / (
        2 * step
    )
    assert abs(float(tape.gradient(lml, value)) - exact) < 1e-3 * max(1.0, abs(exact))
    model, *_ = regression_problem(best, seed=3)
    for hessian in ("full", "kron", "diag"):
        laplace = tdg.inference.Laplace(model, "all", hessian, prior_precision=1.0).fit(x, y)
        found = laplace.optimize_prior_precision()
        assert found.shape == (1,)
        at = float(laplace.log_marginal_likelihood())
        for factor in (0.95, 1.05):  # a maximum of this structure's evidence
            assert float(laplace.log_marginal_likelihood(found * factor)) < at
        if hessian != "diag":  # exact structures (one Dense layer: KFAC is exact)
            assert abs(found[0] / best - 1) < 1e-3
            evidence = exact_evidence(design, y, best)
            assert abs(float(laplace.log_marginal_likelihood()) - evidence) < 1e-3


def classifier(num_inputs=3, hidden=6, num_classes=3, seed=0, linear=False):
    keras.utils.set_random_seed(seed)
    head = tdg.heads.Categorical(num_classes)
    body = [] if linear else [keras.layers.Dense(hidden, activation="tanh")]
    model = keras.Sequential(
        [keras.Input((num_inputs,)), *body, keras.layers.Dense(num_classes), head]
    )
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, num_inputs)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(num_inputs, num_classes)), -1).astype("int32")
    return model, x, y


def softmax(f):
    e = np.exp(f - f.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_classifier_ggn_matches_per_example_reference_and_diag():
    model, x, y = classifier()
    variables = model.trainable_variables
    full, _ = curvature_matrix(model, variables, x, y, "ggn", batch_size=8)
    diag, _ = curvature_matrix(model, variables, x, y, "ggn", diagonal=True, batch_size=8)
    with tf.GradientTape() as tape:
        logits = model(x)
    jac = tape.jacobian(logits, variables)
    jac = np.concatenate([j.numpy().reshape(len(x), 3, -1) for j in jac], -1).astype("float64")
    p = softmax(logits.numpy().astype("float64"))
    hessian = np.einsum("nk,kl->nkl", p, np.eye(3)) - p[:, :, None] * p[:, None, :]
    reference = np.einsum("nkd,nkl,nle->de", jac, hessian, jac)
    assert np.abs(full.numpy() - reference).max() < 1e-4 * np.abs(reference).max()
    assert np.abs(diag.numpy() - np.diag(full.numpy())).max() < 1e-6 * np.abs(reference).max()
    ef_full, _ = curvature_matrix(model, variables, x, y, "ef")
    ef_diag, _ = curvature_matrix(model, variables, x, y, "ef", diagonal=True)
    assert (
        np.abs(ef_diag.numpy() - np.diag(ef_full.numpy())).max()
        < 1e-6 * np.abs(ef_full.numpy()).max()
    )


def test_subsets_and_layer_priors():
    model, x, y = classifier()
    last = tdg.inference.Laplace(model, "last_layer", "diag")
    every = tdg.inference.Laplace(model, "all", "diag", prior_precision=[1.0, 2.0])
    assert (last.num_params, last.num_groups) == (6 * 3 + 3, 1)
    assert (every.num_params, every.num_groups) == (3 * 6 + 6 + 6 * 3 + 3, 2)
    every.fit(x, y)
    precision = every.posterior_precision.numpy()
    curvature, _ = curvature_matrix(model, model.trainable_variables, x, y, diagonal=True)
    prior = np.repeat([1.0, 2.0], [24, 21])
    assert np.abs(precision - curvature.numpy() - prior).max() < 1e-5
    before = float(every.log_marginal_likelihood())
    found = every.optimize_prior_precision(per_layer=True, steps=100)
    assert found.shape == (2,) and float(every.log_marginal_likelihood()) > before


def test_glm_of_a_linear_model_equals_the_weight_draws():
    model, x, y = classifier(linear=True, seed=1)
    outputs = {}
    for predictive in ("mc", "glm"):
        laplace = tdg.inference.Laplace(model, "all", "diag", predictive=predictive, seed=4)
        laplace.fit(x, y)
        outputs[predictive] = laplace.sampled_outputs(tf.constant(x), 16).numpy()
    # Linear in the weights: the linearisation is the model, draw for draw.
    assert np.abs(outputs["mc"] - outputs["glm"]).max() < 1e-4
    assert np.abs(outputs["mc"] - outputs["mc"][0]).max() > 0.1


def test_probit_logits_and_their_agreement_with_glm_draws():
    model, x, y = classifier(seed=2)
    probit = tdg.inference.Laplace(
        model, "last_layer", "full", prior_precision=5.0, predictive="probit"
    )
    probit.fit(x, y)
    logits = probit.sampled_outputs(tf.constant(x), 2).numpy()
    assert np.abs(logits[0] - logits[1]).max() == 0.0
    # Exact: the last layer's logits are phi^T W + b, so J = [phi, 1] (x) I.
    features = np.concatenate([model.layers[0](x).numpy(), np.ones((len(x), 1))], 1)
    jac = np.einsum("ni,kl->nkil", features, np.eye(3)).reshape(len(x), 3, -1).astype("float64")
    covariance = np.linalg.inv(probit.posterior_precision.numpy().astype("float64"))
    variance = np.einsum("nkd,de,nke->nk", jac, covariance, jac)
    mean_logits = model(x).numpy()
    expected = mean_logits / np.sqrt(1 + math.pi / 8 * variance)
    assert np.abs(logits[0] - expected).max() < 1e-4
    # Small variance: the probit probabilities approach the GLM predictive's mean.
    glm = tdg.inference.Laplace(
        model, "last_layer", "full", prior_precision=5.0, predictive="glm", seed=0
    )
    glm.fit(x, y)
    mc = tdg.predictive.predict(glm, x, num_samples=3000, seed=0)["probabilities"]
    assert np.abs(mc - softmax(expected)).max() < 0.02


def test_errors_name_the_argument():
    model, x, y = classifier()
    for kwargs, name in [
        ({"subset": "first"}, "subset"),
        ({"hessian": "dense"}, "hessian"),
        ({"curvature": "fisher"}, "curvature"),
        ({"predictive": "laplace"}, "predictive"),
        ({"prior_precision": -1.0}, "prior_precision"),
        ({"prior_precision": [1.0, 2.0, 3.0]}, "prior_precision"),
    ]:
        with pytest.raises(ValueError, match=name):
            tdg.inference.Laplace(model, **{"hessian": "diag", **kwargs})
    regression, *_ = regression_problem(1.0)
    with pytest.raises(ValueError, match="probit"):
        tdg.inference.Laplace(regression, hessian="diag", predictive="probit")
    big = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(80),
            keras.layers.Dense(3),
            tdg.heads.Categorical(3),
        ]
    )
    with pytest.raises(ValueError, match="hessian='full'.*5000"):
        tdg.inference.Laplace(big, "all", "full")
    laplace = tdg.inference.Laplace(model, hessian="diag")
    for call in (
        lambda: laplace.log_marginal_likelihood(),
        lambda: tdg.predictive.predict(laplace, x, num_samples=2),
        lambda: laplace.optimize_prior_precision(),
    ):
        with pytest.raises(ValueError, match="fit"):
            call()
    with pytest.raises(ValueError, match="batch_size"):
        laplace.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="same positive number"):
        laplace.fit(x, y[:5])
    with pytest.raises(ValueError, match="method"):
        laplace.fit(x, y).optimize_prior_precision(method="gridsearch")
