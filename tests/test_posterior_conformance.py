"""Every weight posterior of `tdg.inference` through the battery of `posterior_conformance.py`."""

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
]

TestPosteriorConformance = battery(CASES)
