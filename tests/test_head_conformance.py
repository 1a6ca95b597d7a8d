"""Runs the head battery (tests/conformance.py) on every distribution-output head."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from conformance import HeadCase, head_battery

from tfp_deepgen import heads

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="test_head_conformance")
def laplace(params):
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.Independent(tfd.Laplace(loc, 1e-3 + tf.math.softplus(raw_scale)), 1)


@keras.saving.register_keras_serializable(package="test_head_conformance")
def categorical(params):
    return tfd.Categorical(logits=params)


def _real(size):
    return lambda rng, n: rng.randn(n, size).astype("float32")


def _counts(size):
    return lambda rng, n: rng.poisson(3.0, (n, size)).astype("float32")


CASES = [
    HeadCase(heads.IndependentNormal, {"event_size": 2}, _real(2)),
    HeadCase(
        heads.IndependentNormal,
        {"scale": "homoscedastic"},
        lambda rng, n: rng.randn(n).astype("float32"),
        id="IndependentNormal-homoscedastic-rank1-labels",
    ),
    HeadCase(heads.IndependentNormal, {"event_size": 2, "scale": 0.5}, _real(2), id="Normal-fixed"),
    HeadCase(
        heads.IndependentBernoulli,
        {"event_size": 3},
        lambda rng, n: rng.binomial(1, 0.3, (n, 3)).astype("float32"),
    ),
    HeadCase(heads.Categorical, {"num_classes": 4}, lambda rng, n: rng.randint(0, 4, n)),
    HeadCase(
        heads.OneHotCategorical,
        {"num_classes": 4},
        lambda rng, n: np.eye(4, dtype="float32")[rng.randint(0, 4, n)],
    ),
    HeadCase(heads.Poisson, {"event_size": 2}, _counts(2)),
    HeadCase(heads.NegativeBinomial, {}, _counts(1)),
    HeadCase(heads.Gamma, {"event_size": 2}, lambda rng, n: rng.gamma(2.0, 1.0, (n, 2))),
    HeadCase(heads.StudentT, {}, _real(1)),
    HeadCase(heads.StudentT, {"event_size": 2, "df": 4.0}, _real(2), id="StudentT-fixed-df"),
    HeadCase(heads.MixtureNormal, {"num_components": 3, "event_size": 2}, _real(2)),
    HeadCase(heads.MultivariateNormalTriL, {"event_size": 3}, _real(3)),
    HeadCase(
        heads.MixtureSameFamily,
        {
            "component": keras.saving.serialize_keras_object(heads.IndependentNormal(2)),
            "num_components": 3,
        },
        _real(2),
        id="MixtureSameFamily-of-IndependentNormal",
    ),
    HeadCase(
        heads.MixtureSameFamily,
        {"component": keras.saving.serialize_keras_object(heads.Poisson()), "num_components": 2},
        _counts(1),
        id="MixtureSameFamily-of-Poisson",
    ),
    HeadCase(
        heads.MixtureSameFamily,
        {
            "component": keras.saving.serialize_keras_object(heads.Categorical(4)),
            "num_components": 2,
        },
        lambda rng, n: rng.randint(0, 4, n),
        id="MixtureSameFamily-of-Categorical",
    ),
    HeadCase(
        heads.DistributionLambda,
        {"make_distribution": laplace, "params_size": 4, "event_size": 2},
        _real(2),
        id="DistributionLambda-Laplace",
    ),
    HeadCase(
        heads.DistributionLambda,
        {
            "make_distribution": categorical,
            "params_size": 3,
            "kind": "classifier",
            "integer_labels": True,
        },
        lambda rng, n: rng.randint(0, 3, n),
        id="DistributionLambda-Categorical",
    ),
]

TestHeadConformance = head_battery(CASES)
