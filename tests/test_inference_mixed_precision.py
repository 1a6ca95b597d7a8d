"""Weight posteriors under a global mixed-precision policy, as users set one.

The wrapped model computes in bfloat16; the posterior's own state (moments,
curvature factors, samples) and its draws stay float32.
"""

import keras
import numpy as np
import pytest

import tfp_deepgen as tdg


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=(3, 1))) + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    return x, y


def _mlp(seed=0, dtype=None):
    if seed is not None:  # an ensemble's members leave it unset, to differ
        keras.utils.set_random_seed(seed)
    head = tdg.heads.IndependentNormal(1)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh", dtype=dtype),
            keras.layers.Dense(head.input_size, dtype=dtype),
            head,
        ]
    )


def _trained(x, y, callbacks=(), optimizer="adam"):
    model = _mlp()
    model.compile(optimizer, model.layers[-1].loss, jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=list(callbacks))
    return model


def _swag(x, y):
    swag = tdg.inference.SWAG(rank=2)
    _trained(x, y, [swag])
    return swag.posterior(seed=0)


def _laplace(**kwargs):
    def make(x, y):
        laplace = tdg.inference.Laplace(_trained(x, y), seed=0, **kwargs)
        laplace.fit(x, y)
        laplace.optimize_prior_precision()
        return laplace

    return make


def _sgld(x, y):
    collector = tdg.inference.CollectSamples(burn_in=4, thinning=2)
    _trained(x, y, [collector], tdg.inference.SGLD(1e-2, data_size=len(x), seed=0))
    return collector.posterior()


def _ensemble(x, y):
    keras.utils.set_random_seed(0)
    ensemble = tdg.inference.DeepEnsemble(lambda: _mlp(seed=None), members=2, seed=0)
    ensemble.compile("adam", tdg.heads.IndependentNormal(1).loss, jit_compile=True)
    ensemble.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return ensemble


@pytest.mark.usefixtures("mixed_bfloat16")
@pytest.mark.parametrize(
    "make",
    [
        _swag,
        _laplace(),
        _laplace(subset="all", hessian="diag", predictive="glm"),
        _sgld,
        _ensemble,
    ],
    ids=["swag", "laplace_kron_mc", "laplace_diag_glm", "sgld", "ensemble"],
)
def test_every_posterior_predicts_under_mixed_bfloat16(make):
    x, y = _data(seed=5)
    posterior = make(x, y)
    assert posterior.model.layers[0].compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in posterior.weights)
    for jit_compile in (False, True):
        out = tdg.predictive.predict(
            posterior, x[:8], num_samples=4, seed=0, jit_compile=jit_compile
        )
        assert out["mean"].dtype == np.float32
        assert np.all(np.isfinite(out["mean"])) and np.all(np.isfinite(out["stddev"]))
        assert np.all(out["stddev"] > 0)


@pytest.mark.usefixtures("mixed_bfloat16")
def test_sample_set_in_bfloat16_matches_float32_to_bfloat16_precision():
    x, _ = _data(seed=7)
    rng = np.random.default_rng(8)
    mixed, full = _mlp(seed=1), _mlp(seed=1, dtype="float32")
    full.set_weights(mixed.get_weights())
    samples = [
        v.numpy() + 0.3 * rng.normal(size=(6, *v.shape)).astype("float32")
        for v in mixed.trainable_variables
    ]
    outputs = []
    for model in (mixed, full):
        posterior = tdg.inference.SampleSet.from_samples(model, samples)
        outputs.append(
            tdg.predictive.predict(posterior, x[:16], num_samples=6, seed=0, jit_compile=True)
        )
    assert mixed.layers[0].compute_dtype == "bfloat16" and full.layers[0].compute_dtype == "float32"
    for key in ("mean", "stddev", "epistemic_variance"):
        np.testing.assert_allclose(outputs[0][key], outputs[1][key], rtol=0.05, atol=0.02)
    assert not np.array_equal(outputs[0]["mean"], outputs[1]["mean"])  # bfloat16 did compute
