"""Failures are loud (issue 18): huge inputs stay finite, NaN inputs give a NaN loss.

- A row at +-1e30 (finite: `keras.layers.Dense` gives finite outputs) must not
  turn into inf or NaN in the layers whose pre-activation stddev is
  `sqrt(x^2 sigma^2)` (local reparameterization, variational dropout, IBP,
  horseshoe), must leave the other rows' outputs unchanged, and must not make
  the gradient of the other rows' outputs NaN.
- A NaN row must make the logged loss NaN in the step where it arrives, so
  `keras.callbacks.TerminateOnNaN` stops training before the weights are
  lost. Without XLA, TensorFlow's fused matmul + bias + ReLU maps NaN to 0,
  which kept the loss finite while every weight became NaN. None of these
  cases depends on a change to the heads.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_deepgen as tdg
from tfp_deepgen import layers, priors

HUGE = 1e30


def _dense_layers():
    return {
        "DenseReparameterization": lambda **kw: layers.DenseReparameterization(3, **kw),
        "DenseFlipout": lambda **kw: layers.DenseFlipout(3, **kw),
        "DenseLocalReparameterization": lambda **kw: layers.DenseLocalReparameterization(3, **kw),
        "DenseVariationalDropout": lambda **kw: layers.DenseVariationalDropout(3, **kw),
        "DenseSparseVariationalDropout": lambda **kw: layers.DenseSparseVariationalDropout(3, **kw),
        "IBPDense": lambda **kw: layers.IBPDense(3, kernel_prior=priors.Normal(0.0, 1.0), **kw),
        "IBPDensePoint": lambda **kw: layers.IBPDense(3, **kw),
        "DenseHorseshoe": lambda **kw: layers.DenseHorseshoe(3, **kw),
    }


def _conv_layers():
    return {
        "Conv2DLocalReparameterization": lambda **kw: layers.Conv2DLocalReparameterization(
            3, 2, **kw
        ),
        "Conv2DSparseVariationalDropout": lambda **kw: layers.Conv2DSparseVariationalDropout(
            3, 2, **kw
        ),
        "Conv2DFlipout": lambda **kw: layers.Conv2DFlipout(3, 2, **kw),
    }


DENSE = _dense_layers()
CONV = _conv_layers()


def _huge_batch(shape):
    """A normal batch and the same batch with example 1 at +1e30, example 2 mixed at -1e30.

    The reference batch has zeros where the huge batch has huge values.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    reference = x.copy()
    reference[1:3] = 0.0
    huge = reference.copy()
    huge[1] = HUGE
    huge[2].reshape(-1)[::2] = -HUGE
    return huge, reference


def _outputs_twice(layer, huge, reference, training):
    """The layer's outputs on both batches with the same noise."""
    layer(reference, training=training)  # builds
    generators = [sub.seed_generator for sub in layers.stochastic_layers(layer)]
    states = [generator.state.numpy() for generator in generators]
    out_huge = layer(huge, training=training).numpy()
    for generator, state in zip(generators, states, strict=True):
        generator.state.assign(state)
    out_reference = layer(reference, training=training).numpy()
    return out_huge, out_reference


def _prune_one_weight(layer):
    """Drops one kernel weight of a sparse variational dropout layer (zero scale at inference)."""
    loc = [v for v in layer.weights if v.name == "kernel_loc"][0]
    value = loc.numpy()
    value.reshape(-1)[0] = 1e-6
    loc.assign(value)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(DENSE) + list(CONV), ids=lambda name: name)
def test_huge_rows_stay_finite_and_leave_other_rows_alone(name, training):
    make = {**DENSE, **CONV}[name]
    layer = make(seed=0)
    shape = (5, 4) if name in DENSE else (5, 4, 4, 2)
    huge, reference = _huge_batch(shape)
    layer(reference)
    if "Sparse" in name:
        _prune_one_weight(layer)
    out_huge, out_reference = _outputs_twice(layer, huge, reference, training)
    assert np.all(np.isfinite(out_huge)), out_huge
    ordinary = [0, 3, 4]
    np.testing.assert_allclose(out_huge[ordinary], out_reference[ordinary], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", list(DENSE), ids=lambda name: name)
def test_huge_rows_do_not_turn_the_next_layer_nan(name):
    huge, _ = _huge_batch((5, 4))
    model = keras.Sequential(
        [keras.Input((4,)), DENSE[name](seed=0, activation="relu"), keras.layers.Dense(2)]
    )
    outputs = model(huge, training=True).numpy()
    assert not np.any(np.isnan(outputs)), outputs


@pytest.mark.parametrize("name", list(DENSE) + list(CONV), ids=lambda name: name)
def test_huge_rows_keep_the_gradient_of_the_other_rows_finite(name):
    make = {**DENSE, **CONV}[name]
    layer = make(seed=0)
    shape = (5, 4) if name in DENSE else (5, 4, 4, 2)
    huge, _ = _huge_batch(shape)
    huge = tf.constant(huge)
    layer(huge)
    with tf.GradientTape() as tape:
        tape.watch(huge)
        outputs = layer(huge, training=True)
        loss = tf.reduce_sum(tf.gather(outputs, [0, 3, 4]))
    variables = layer.trainable_variables
    grad_x, *grads = tape.gradient(loss, [huge, *variables])
    for variable, grad in zip(variables, grads, strict=True):
        if grad is not None:
            assert np.all(np.isfinite(grad.numpy())), variable.name
    assert np.all(np.isfinite(tf.gather(grad_x, [0, 3, 4]).numpy()))


def test_ordinary_rows_are_unchanged_bit_for_bit():
    # Rows below the rescaling threshold use the plain formula.
    layer = layers.DenseLocalReparameterization(3, seed=0)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32") * 1e3
    layer(x)
    q = layer.kernel_posterior_params
    state = layer.seed_generator.state.numpy()
    outputs = layer(x, training=True).numpy()
    layer.seed_generator.state.assign(state)
    seed = tf.random.experimental.stateless_split(layer.next_seed(), num=4)[2]
    variance = tf.matmul(tf.square(x), tf.square(q.scale()))
    eps = tdg.random.normal(tf.shape(variance), seed)
    expected = tf.matmul(x, q.loc) + tf.sqrt(variance + 1e-12) * eps + layer.bias
    np.testing.assert_array_equal(outputs, expected.numpy())


# --------------------------------------------------------------------------
# NaN inputs stop training
# --------------------------------------------------------------------------


def _fit_with_nan_row(layer, jit_compile, bad=np.nan):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    x[7] = bad
    head = tdg.heads.IndependentNormal()
    model = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(head.input_size), head])
    model.compile(keras.optimizers.Adam(1e-2), head.loss, jit_compile=jit_compile)
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    return history.history["loss"]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", list(DENSE), ids=lambda name: name)
def test_nan_row_stops_training_in_its_step(name, jit_compile):
    losses = _fit_with_nan_row(
        DENSE[name](seed=0, activation="relu", kl_weight=1 / 32), jit_compile
    )
    assert len(losses) == 1 and not np.isfinite(losses[0]), losses


@pytest.mark.parametrize("name", ["DenseReparameterization", "IBPDensePoint"])
def test_infinite_row_stops_training_in_its_step(name):
    losses = _fit_with_nan_row(
        DENSE[name](seed=0, activation="relu", kl_weight=1 / 32), False, bad=np.inf
    )
    assert len(losses) == 1 and not np.isfinite(losses[0]), losses


def test_conv_nan_example_stops_training_in_its_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5, 5, 1)).astype("float32")
    x[3, 2, 2, 0] = np.nan
    y = rng.normal(size=(8, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 5, 1)),
            layers.Conv2DReparameterization(2, 3, activation="relu", seed=0),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(
        x, y, batch_size=8, epochs=3, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    losses = history.history["loss"]
    assert len(losses) == 1 and not np.isfinite(losses[0]), losses


def test_finite_inputs_add_nothing_to_the_loss():
    layer = layers.DenseFlipout(3, kl_weight=0.5, seed=0)
    layer(np.ones((2, 4), "float32"), training=True)
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.5 * float(layer.last_kl), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_gan_nan_row_stops_training_in_its_step(jit_compile):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    x[5] = np.nan
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    # relu: the fused kernel that hides a NaN row from the scores
    discriminator = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    gan = tdg.models.GAN(generator, discriminator, latent_dim=2, seed=0)
    gan.compile(generator_optimizer="adam", discriminator_optimizer="adam", jit_compile=jit_compile)
    history = gan.fit(
        x, epochs=3, batch_size=32, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    assert len(history.history["loss"]) == 1, history.history
    assert not np.isfinite(history.history["loss"][0]), history.history
    assert not np.isfinite(history.history["d_loss"][0]), history.history


def test_gan_logs_the_sum_of_its_losses_as_loss():
    x = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    gan = tdg.models.GAN(generator, discriminator, latent_dim=2, seed=0)
    gan.compile(generator_optimizer="adam", discriminator_optimizer="adam")
    logs = gan.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["d_loss"] + logs["g_loss"], rtol=1e-6)
    assert np.isfinite(logs["loss"])
