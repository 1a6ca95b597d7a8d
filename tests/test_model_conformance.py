"""Runs the model battery (tests/model_conformance.py) on every `tdg.models` model."""

import keras
import numpy as np
import tensorflow as tf
from model_conformance import NUM_EXAMPLES, ModelCase, compile_with_sgd, model_battery

import tfp_deepgen as tdg

DATA_DIM, LATENT_DIM, NUM_CLASSES = 6, 2, 3


def _network(inputs, head):
    """`inputs -> Dense(4, tanh) -> head`, from one or two (concatenated) inputs."""
    tensors = [keras.Input((size,)) for size in inputs]
    h = keras.layers.Concatenate()(tensors) if len(tensors) > 1 else tensors[0]
    h = keras.layers.Dense(4, activation="tanh")(h)
    outputs = head(keras.layers.Dense(head.input_size)(h)) if head else keras.layers.Dense(1)(h)
    return keras.Model(tensors if len(tensors) > 1 else tensors[0], outputs)


def _posterior():
    return tdg.heads.IndependentNormal(LATENT_DIM)


def _likelihood():
    return tdg.heads.IndependentBernoulli(DATA_DIM)


def _vae():
    return tdg.models.VAE(
        _network([DATA_DIM], _posterior()), _network([LATENT_DIM], _likelihood()), seed=1
    )


def _conditional_vae():
    return tdg.models.ConditionalVAE(
        _network([DATA_DIM, NUM_CLASSES], _posterior()),
        _network([LATENT_DIM, NUM_CLASSES], _likelihood()),
        num_classes=NUM_CLASSES,
        seed=1,
    )


def _semi_supervised_vae():
    classifier = _network([DATA_DIM], tdg.heads.Categorical(NUM_CLASSES))
    return tdg.models.SemiSupervisedVAE(
        classifier,
        _network([DATA_DIM, NUM_CLASSES], _posterior()),
        _network([LATENT_DIM, NUM_CLASSES], _likelihood()),
        seed=1,
    )


def _deep_exponential_family():
    return tdg.models.DeepExponentialFamily(
        [3, 2], num_examples=NUM_EXAMPLES, encoder_units=(4,), seed=1
    )


def _gan():
    # A negligible prior scale: every replica generates the same points, so the
    # mirrored check compares the loss scaling alone (as the latents' means do
    # for the other models). A smooth generator keeps the sign of z irrelevant.
    return tdg.models.GAN(
        _network([LATENT_DIM], None),
        _network([1], None),
        LATENT_DIM,
        loss="least_squares",
        latent_prior=tdg.priors.Normal(0.0, 1e-12),
        seed=1,
    )


def _compile_gan(model, jit_compile):
    model.compile(
        generator_optimizer=keras.optimizers.Adam(1e-2),
        discriminator_optimizer=keras.optimizers.Adam(1e-2),
        jit_compile=jit_compile,
    )


def _compile_gan_sgd(model, jit_compile):
    model.compile(
        generator_optimizer=keras.optimizers.SGD(0.1),
        discriminator_optimizer=keras.optimizers.SGD(0.1),
        jit_compile=jit_compile,
    )


def _binary():
    return ((np.random.RandomState(0).rand(NUM_EXAMPLES, DATA_DIM) > 0.5).astype("float32"),)


def _labelled():
    return _binary()[0], np.arange(NUM_EXAMPLES) % NUM_CLASSES


def _partly_labelled():
    x, labels = _labelled()
    labels[::3] = tdg.models.UNLABELLED
    return x, labels


def _counts():
    return (np.random.RandomState(0).poisson(1.5, (NUM_EXAMPLES, 5)).astype("float32"),)


def _real():
    return (np.random.RandomState(0).randn(NUM_EXAMPLES, 1).astype("float32"),)


def _posterior_draw(model):
    params = tf.zeros((4, model.encoder_head.input_size))
    return model.latent_sampler.posterior_sample(model.encoder_head, params, 1)


def _prior_draw(sampler):
    return sampler.prior_sample(tdg.priors.Normal(0.0, 1.0), LATENT_DIM, 4)


CASES = [
    ModelCase(_vae, _binary, _posterior_draw, id="VAE"),
    ModelCase(_conditional_vae, _labelled, _posterior_draw, id="ConditionalVAE"),
    ModelCase(_semi_supervised_vae, _partly_labelled, _posterior_draw, id="SemiSupervisedVAE"),
    ModelCase(
        _deep_exponential_family,
        _counts,
        lambda model: _prior_draw(model.sampler),
        compile_sgd=compile_with_sgd(1e-3),
        mirrored_rtol=1e-4,
        id="DeepExponentialFamily",
    ),
    ModelCase(
        _gan,
        _real,
        lambda model: _prior_draw(model.latent_sampler),
        compile=_compile_gan,
        compile_sgd=_compile_gan_sgd,
        id="GAN",
    ),
]

TestModelConformance, TestTrainedModelConformance, trained = model_battery(CASES)
