"""Every weight posterior of `tdg.inference` through the battery of `posterior_conformance.py`."""

import keras
import numpy as np
from posterior_conformance import PosteriorCase, battery, classification_data, mlp, regression_data

import tfp_deepgen as tdg


def _sample_set(head_factory, num_stored=4):
    def make(x, y):
        model = mlp(head_factory())
        rng = np.random.default_rng(1)
        samples = [
            v.numpy() + 0.1 * rng.normal(size=(num_stored, *v.shape)).astype("float32")
            for v in model.trainable_variables
        ]
        return tdg.inference.SampleSet.from_samples(model, samples)

    return make


def _swag(head_factory, runs=1):
    """SWAG on a briefly trained MLP, or MultiSWAG over `runs` such runs."""

    def make(x, y):
        posteriors = []
        for run in range(runs):
            model = mlp(head_factory(), seed=run)
            model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss)
            swag = tdg.inference.SWAG(rank=3, start_epoch=1)
            model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[swag])
            posteriors.append(swag.posterior(seed=run))
        if runs == 1:
            return posteriors[0]
        return tdg.inference.SWAGPosterior.mixture(posteriors, seed=0)

    return make


def _laplace(head_factory, **kwargs):
    """Laplace around a briefly trained MLP, fitted on the case's data."""

    def make(x, y):
        model = mlp(head_factory())
        model.compile(keras.optimizers.Adam(0.01), model.layers[-1].loss)
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        return tdg.inference.Laplace(model, seed=0, **kwargs).fit(x, y, batch_size=16)

    return make


def _hmc(head_factory):
    """A few NUTS steps from a freshly initialised MLP (a cycled SampleSet)."""

    def make(x, y):
        sampler = tdg.inference.NUTS(
            mlp(head_factory()),
            num_chains=2,
            num_burnin_steps=10,
            num_results=3,
            jit_compile=False,  # compiling costs more than 13 steps
            seed=0,
        )
        return sampler.sample(x, y)

    return make


def _ensemble(head_factory):
    """A 3-member DeepEnsemble trained briefly with adversarial examples."""

    def build():  # no global reseeding here: members must differ
        head = head_factory()
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(head.input_size),
                head,
            ]
        )

    def make(x, y):
        ensemble = tdg.inference.DeepEnsemble(build, members=3, adversarial_epsilon=0.01, seed=0)
        ensemble.compile(keras.optimizers.Adam(0.01), tdg.heads.final_head(ensemble).loss)
        ensemble.fit(x, y, batch_size=8, epochs=2, verbose=0)
        return ensemble

    return make


def _sgld(head_factory):
    """A `SampleSet` of 4 samples collected by SGLD while fitting an MLP."""

    def make(x, y):
        model = mlp(head_factory())
        optimizer = tdg.inference.SGLD(1e-2, data_size=len(x), seed=0)
        model.compile(optimizer, model.layers[-1].loss)
        collect = tdg.inference.CollectSamples(burn_in=8, thinning=4)
        model.fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[collect])
        return collect.posterior()

    return make


CASES = [
    PosteriorCase(
        _sample_set(tdg.heads.IndependentNormal), regression_data, "sample_set_normal", False
    ),
    PosteriorCase(
        _sample_set(lambda: tdg.heads.Categorical(3)),
        classification_data,
        "sample_set_categorical",
        False,
    ),
    PosteriorCase(_swag(tdg.heads.IndependentNormal), regression_data, "swag_normal"),
    PosteriorCase(
        _swag(lambda: tdg.heads.Categorical(3), runs=2),
        classification_data,
        "multiswag_categorical",
    ),
    PosteriorCase(
        _laplace(tdg.heads.IndependentNormal, subset="all", hessian="full"),
        regression_data,
        "laplace_full_normal",
    ),
    PosteriorCase(
        _laplace(lambda: tdg.heads.Categorical(3), subset="all", hessian="diag", predictive="glm"),
        classification_data,
        "laplace_diag_glm_categorical",
    ),
    PosteriorCase(
        _laplace(lambda: tdg.heads.Categorical(3), hessian="kron", predictive="probit"),
        classification_data,
        "laplace_kron_probit_categorical",
        False,
    ),
    PosteriorCase(_hmc(tdg.heads.IndependentNormal), regression_data, "nuts_normal", False),
    PosteriorCase(
        _ensemble(lambda: tdg.heads.Categorical(3)),
        classification_data,
        "deep_ensemble_categorical",
        False,
    ),
    PosteriorCase(_sgld(tdg.heads.IndependentNormal), regression_data, "sgld_normal", False),
]

TestPosteriorConformance = battery(CASES)
