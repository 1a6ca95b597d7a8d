"""`heads.MixtureSameFamily`: a mixture of any head, against mixtures computed by hand.

The head's Keras conventions are checked by the head battery
(tests/test_head_conformance.py); here its numbers, on parameters drawn fresh.
"""

import keras
import numpy as np
import pytest
import scipy.stats as st
from scipy.special import logsumexp, softmax

import tfp_deepgen as tdg


def _mixture_parts(head, params):
    """Mixture weights (B, K) and component parameters (B, K, P) as numpy."""
    k = head.num_components
    weights = softmax(params[:, :k], axis=-1)
    return weights, params[:, k:].reshape(len(params), k, -1)


def test_normal_mixture_log_likelihood_mean_and_variance_by_hand():
    rng = np.random.default_rng(81)
    component = tdg.heads.IndependentNormal(2)
    head = tdg.heads.MixtureSameFamily(component, num_components=3)
    params = rng.normal(size=(7, head.input_size)).astype("float32")
    y = rng.normal(size=(7, 2)).astype("float32")
    weights, parts = _mixture_parts(head, params)
    loc = component.mean(parts).numpy().astype("float64")  # (B, K, 2)
    scale = component.stddev(parts).numpy().astype("float64")
    log_components = st.norm.logpdf(y[:, None, :], loc, scale).sum(-1)  # (B, K)
    expected = logsumexp(np.log(weights) + log_components, axis=-1)
    np.testing.assert_allclose(head.log_prob(y, params).numpy(), expected, rtol=1e-5)
    mean = np.sum(weights[..., None] * loc, axis=1)
    second_moment = np.sum(weights[..., None] * (scale**2 + loc**2), axis=1)
    np.testing.assert_allclose(head.mean(params).numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        head.variance(params).numpy(), second_moment - mean**2, rtol=1e-4, atol=1e-6
    )


def test_predictive_median_solves_the_mixture_cdf():
    rng = np.random.default_rng(83)
    component = tdg.heads.IndependentNormal(1)
    head = tdg.heads.MixtureSameFamily(component, num_components=2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(head.input_size), head])
    x = rng.normal(size=(4, 3)).astype("float32")
    out = tdg.predictive.predict(model, x, num_samples=1, quantiles=(0.5,))
    weights, parts = _mixture_parts(head, model(x).numpy())
    loc = component.mean(parts).numpy()[..., 0]
    scale = component.stddev(parts).numpy()[..., 0]
    median = out["quantiles"][:, 0, 0]
    cdf = np.sum(weights * st.norm.cdf(median[:, None], loc, scale), axis=-1)
    np.testing.assert_allclose(cdf, 0.5, atol=1e-3)


def test_mixture_of_categoricals_has_the_mixed_probabilities():
    rng = np.random.default_rng(89)
    component = tdg.heads.Categorical(4)
    head = tdg.heads.MixtureSameFamily(component, num_components=3)
    assert (head.kind, head.integer_labels) == ("classifier", True)
    params = rng.normal(size=(6, head.input_size)).astype("float32")
    weights, parts = _mixture_parts(head, params)
    probabilities = np.sum(weights[..., None] * softmax(parts, axis=-1), axis=1)
    np.testing.assert_allclose(head.probabilities(params).numpy(), probabilities, rtol=1e-5)
    labels = rng.integers(0, 4, 6)
    np.testing.assert_allclose(
        head.log_prob(labels, params).numpy(),
        np.log(probabilities[np.arange(6), labels]),
        rtol=1e-5,
    )


def test_learns_a_two_branch_target_a_single_normal_cannot():
    """y = +x or -x with equal odds: two components fit, one Normal only the spread."""
    rng = np.random.default_rng(97)
    x = rng.uniform(-2, 2, (2000, 1)).astype("float32")
    sign = rng.choice([-1.0, 1.0], (2000, 1))
    y = (sign * x + 0.1 * rng.normal(size=(2000, 1))).astype("float32")
    x_test = rng.uniform(-2, 2, (500, 1)).astype("float32")
    y_test = rng.choice([-1.0, 1.0], (500, 1)) * x_test + 0.1 * rng.normal(size=(500, 1))
    losses = {}
    for name, head in (
        ("mixture", tdg.heads.MixtureSameFamily(tdg.heads.IndependentNormal(1), 2)),
        ("normal", tdg.heads.IndependentNormal(1)),
    ):
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(head.input_size),
                head,
            ]
        )
        model.compile(keras.optimizers.Adam(1e-2), loss=head.loss, jit_compile=True)
        model.fit(x, y, batch_size=100, epochs=60, verbose=0)
        losses[name] = float(model.evaluate(x_test, y_test.astype("float32"), verbose=0))
    true_density = 0.5 * (st.norm.pdf(y_test, x_test, 0.1) + st.norm.pdf(y_test, -x_test, 0.1))
    truth = -np.mean(np.log(true_density))  # about log 2 - 0.88 = -0.19
    assert losses["mixture"] < truth + 0.1
    assert losses["mixture"] < losses["normal"] - 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"component": "normal", "num_components": 2}, "`component` must be"),
        ({"component": tdg.heads.IndependentNormal(), "num_components": 1}, "num_components"),
        (
            {
                "component": tdg.heads.MixtureSameFamily(tdg.heads.Poisson(), 2),
                "num_components": 2,
            },
            "must not itself be",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tdg.heads.MixtureSameFamily(**kwargs)


def test_labels_outside_the_component_support_raise_naming_it():
    head = tdg.heads.MixtureSameFamily(tdg.heads.Poisson(), 2)
    with pytest.raises(ValueError, match="non-negative"):
        head.loss(np.array([[-1.0]]), np.zeros((1, 4), "float32"))
