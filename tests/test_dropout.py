"""MC dropout and Gaussian dropout: moments, when noise is on, argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_deepgen as tdg

N = 200_000


def _standard_error_bound(std, n, sigmas=5.0):
    return sigmas * std / np.sqrt(n)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_dropout_mean_is_input_and_variance_is_alpha_x_squared(rate):
    x = np.array([0.5, -2.0, 3.0], "float32")
    layer = tdg.layers.GaussianDropout(rate, seed=3)
    y = layer(np.tile(x, (N, 1)), training=True).numpy().astype("float64")
    alpha = rate / (1 - rate)
    assert layer.alpha == pytest.approx(alpha)
    std = np.sqrt(alpha) * np.abs(x)
    np.testing.assert_array_less(np.abs(y.mean(0) - x), _standard_error_bound(std, N))
    # The sample variance of Gaussian draws has stddev var * sqrt(2 / n).
    var = alpha * x**2
    np.testing.assert_array_less(np.abs(y.var(0) - var), 5 * var * np.sqrt(2 / N))


def test_gaussian_dropout_noise_only_in_training_unless_asked():
    x = np.random.RandomState(0).randn(4, 3).astype("float32")
    layer = tdg.layers.GaussianDropout(0.5, seed=1)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)
    assert np.any(layer(x, training=True).numpy() != x)
    on = tdg.layers.GaussianDropout(0.5, at_inference=True, seed=1)
    assert np.any(on(x).numpy() != x)
    with tdg.layers.sampling_mode(on, "mean"):
        np.testing.assert_array_equal(on(x, training=True), x)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_mc_dropout_keeps_one_minus_rate_scaled_and_stays_on_at_inference(rate):
    x = np.ones((N // 10, 10), "float32")
    layer = tdg.layers.MCDropout(rate, seed=2)
    y = layer(x).numpy()  # inference: still dropping
    values = np.unique(y)
    np.testing.assert_allclose(values, [0.0, 1.0 / (1 - rate)], rtol=1e-6)
    kept = (y > 0).mean()
    assert abs(kept - (1 - rate)) < _standard_error_bound(np.sqrt(rate * (1 - rate)), y.size)
    assert abs(y.mean() - 1.0) < 0.01  # unbiased
    with tdg.layers.sampling_mode(layer, "mean"):
        np.testing.assert_array_equal(layer(x), x)


def test_mc_dropout_noise_shape_shares_the_mask():
    layer = tdg.layers.MCDropout(0.5, noise_shape=(None, 1, 4), seed=0)
    y = layer(np.ones((64, 5, 4), "float32")).numpy()
    # Every position along axis 1 shares the mask of its example and channel.
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :], y.shape))
    assert 0 < (y == 0).mean() < 1


@pytest.mark.parametrize("layer_cls", [tdg.layers.MCDropout, tdg.layers.GaussianDropout])
def test_noise_is_independent_per_monte_carlo_copy(layer_cls):
    model = keras.Sequential([keras.Input((32,)), layer_cls(0.5, seed=0)])
    with tdg.layers.monte_carlo_mode(model, 64):
        copies = model(tf.ones((64, 32)), training=False).numpy()
    assert len({row.tobytes() for row in copies}) == 64, "copies shared their noise"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tdg.layers.MCDropout(1.0), "rate"),
        (lambda: tdg.layers.MCDropout(-0.1), "rate"),
        (lambda: tdg.layers.MCDropout(0.1, noise_shape=(1, 3)), "noise_shape"),
        (lambda: tdg.layers.GaussianDropout(0.1, at_inference="yes"), "at_inference"),
    ],
)
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()
