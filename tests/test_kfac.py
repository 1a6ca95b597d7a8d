"""KFAC / KFC factors against exact GGN blocks, and the `KroneckerFactors` algebra.

The exact references are built here in float64: a float64 copy of the model's
body, per-example Jacobians by autodiff, `sum_n J_n^T H_n J_n` with the head's
output Hessian `H_n` in closed form.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_deepgen as tdg
from tfp_deepgen.inference import kfac
from tfp_deepgen.inference.kronecker import KroneckerFactors, kron


def softmax(f):
    e = np.exp(f - f.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def categorical_hessian(f, y):
    p = softmax(f)
    return np.einsum("nk,kl->nkl", p, np.eye(f.shape[-1])) - p[:, :, None] * p[:, None, :]


def categorical_gradient(f, y):
    return softmax(f) - np.eye(f.shape[-1])[y.astype(int).ravel()]


def normal_hessian(scale):
    return lambda f, y: np.broadcast_to(
        np.eye(f.shape[-1]) / scale**2, (len(f), *[f.shape[-1]] * 2)
    )


def normal_gradient(scale):
    return lambda f, y: (f - y) / scale**2


def poisson_hessian(f, y):
    return np.einsum("nk,kl->nkl", np.exp(f), np.eye(f.shape[-1]))


def poisson_gradient(f, y):
    return np.exp(f) - y


def float64_body(model):
    """The model without its head, in float64, with the same weights."""
    body = [layer for layer in model.layers if not isinstance(layer, tdg.heads.DistributionHead)]
    copies = [type(lay).from_config({**lay.get_config(), "dtype": "float64"}) for lay in body]
    clone = keras.Sequential([keras.Input(model.input_shape[1:], dtype="float64"), *copies])
    for original, copy in zip(body, copies, strict=True):
        copy.set_weights([w.astype("float64") for w in original.get_weights()])
    return clone


def exact_curvature(model, x, y, hessian=None, gradient=None):
    """Exact GGN `sum_n J^T H J` (with `hessian`) or empirical Fisher (with `gradient`)."""
    body = float64_body(model)
    x = tf.constant(x, "float64")
    with tf.GradientTape() as tape:
        f = body(x)
    jacobians = tape.jacobian(f, body.trainable_variables)
    j = tf.concat([tf.reshape(t, [*f.shape, -1]) for t in jacobians], -1).numpy()
    f = f.numpy()
    if gradient is not None:
        per_example = np.einsum("nkp,nk->np", j, gradient(f, y))
        return per_example.T @ per_example
    return np.einsum("nkp,nkl,nlq->pq", j, hessian(f, y), j)


def blocks(matrix, sizes):
    edges = np.cumsum([0, *sizes])
    return [matrix[s:e, s:e] for s, e in zip(edges[:-1], edges[1:], strict=True)]


def assert_close(actual, expected, rtol=2e-5):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, atol=rtol * scale, rtol=0)


@pytest.mark.parametrize("event_size", [1, 2])
def test_one_layer_with_constant_output_hessian_is_exact(event_size):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(11)
    scale = 0.5
    head = tdg.heads.IndependentNormal(event_size, scale=scale)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(event_size), head])
    x = rng.normal(size=(40, 3)).astype("float32")
    y = rng.normal(size=(40, event_size)).astype("float32")
    factors = KroneckerFactors.from_data(model, "all", x, y, batch_size=16)
    exact = exact_curvature(model, x, y, hessian=normal_hessian(scale))
    assert_close(factors.to_dense().numpy(), exact)
    # The closed form [x, 1]^T [x, 1] / scale^2 ⊗ I.
    extended = np.concatenate([x, np.ones((40, 1))], 1).astype("float64")
    assert_close(exact, np.kron(extended.T @ extended / scale**2, np.eye(event_size)), 1e-12)


def test_one_layer_with_homoscedastic_normal_head_is_exact():
    # The head appends its learned scales to the means: only the means depend on
    # the kernel, with output Hessian diag(1 / scale^2), the same for each example.
    keras.utils.set_random_seed(9)
    rng = np.random.default_rng(99)
    head = tdg.heads.IndependentNormal(2, scale="homoscedastic")
    dense = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((3,)), dense, head])
    head.raw_scale.assign(rng.normal(size=2).astype("float32"))
    x = rng.normal(size=(10, 3)).astype("float32")
    scale = head.marginal(model(x[:1])).scale.numpy()[0].astype("float64")
    factors = KroneckerFactors.from_data(model, [dense], x)
    exact = exact_curvature(
        model, x, None, hessian=lambda f, y: np.broadcast_to(np.diag(scale**-2), (10, 2, 2))
    )
    assert_close(factors.to_dense().numpy(), exact)


HEADS = {
    "categorical": (lambda: tdg.heads.Categorical(3), categorical_hessian, categorical_gradient),
    "poisson": (lambda: tdg.heads.Poisson(3), poisson_hessian, poisson_gradient),
    "normal": (
        lambda: tdg.heads.IndependentNormal(3, scale=0.7),
        normal_hessian(0.7),
        normal_gradient(0.7),
    ),
}


def labels(name, rng, size):
    if name == "categorical":
        return rng.integers(0, 3, size=(size,)).astype("float32")
    if name == "poisson":
        return rng.poisson(1.0, size=(size, 3)).astype("float32")
    return rng.normal(size=(size, 3)).astype("float32")


@pytest.mark.parametrize("curvature", ["ggn", "ef"])
@pytest.mark.parametrize("name", list(HEADS))
def test_one_example_is_exact_for_any_head_and_every_layer(name, curvature):
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(22)
    make_head, hessian, gradient = HEADS[name]
    body = [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)]
    model = keras.Sequential([keras.Input((2,)), *body, make_head()])
    x = rng.normal(size=(1, 2)).astype("float32")
    y = labels(name, rng, 1)
    factors = KroneckerFactors.from_data(model, "all", x, y, curvature=curvature)
    reference = {"ggn": {"hessian": hessian}, "ef": {"gradient": gradient}}[curvature]
    exact = exact_curvature(model, x, y, **reference)
    sizes = factors.layer_sizes
    assert sizes == [3 * 4, 5 * 3]
    for index, block in enumerate(blocks(exact, sizes)):
        assert_close(factors.layer_block(index).numpy(), block)


def test_deeper_network_is_close_to_the_exact_ggn():
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(33)
    body = [
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(6, activation="tanh"),
        keras.layers.Dense(3),
    ]
    model = keras.Sequential([keras.Input((4,)), *body, tdg.heads.Categorical(3)])
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, size=64).astype("float32")
    factors = KroneckerFactors.from_data(model, "all", x, y, batch_size=64)
    in_batches = KroneckerFactors.from_data(model, "all", x, y, batch_size=10)
    for whole, batched in zip(factors.tensors(), in_batches.tensors(), strict=True):
        assert_close(batched.numpy(), whole.numpy(), 1e-5)
    exact = exact_curvature(model, x, y, hessian=categorical_hessian)
    for index, block in enumerate(blocks(exact, factors.layer_sizes)):
        approx = factors.layer_block(index).numpy()
        error = np.linalg.norm(approx - block) / np.linalg.norm(block)
        correlation = np.corrcoef(np.diag(approx), np.diag(block))[0, 1]
        diagonal = np.linalg.norm(np.diag(np.diag(block)) - block) / np.linalg.norm(block)
        # Kronecker of expectations != expectation of Kroneckers: close, not equal,
        # and closer than the diagonal approximation (measured: errors 0.52, 0.35,
        # 0.13 against 0.79, 0.88, 0.73; diagonal correlations 0.88, 0.99, 1.00).
        assert error < min(0.75, diagonal), (index, error, diagonal)
        assert correlation > 0.75, (index, correlation)
    # "last_layer" covers what tdg.inference.posterior_variables covers.
    last = kfac.kfac_layers(model, "last_layer")
    assert [v.path for v in kfac.layer_variables(last)] == [
        v.path for v in tdg.inference.posterior_variables(model, "last_layer")
    ]


CONVS = {
    "conv2d": ((5, 4, 2), lambda: keras.layers.Conv2D(3, (2, 3), strides=2, padding="same")),
    "conv2d_dilated": ((6, 6, 2), lambda: keras.layers.Conv2D(2, 2, dilation_rate=2)),
    "conv1d_causal": ((7, 2), lambda: keras.layers.Conv1D(3, 3, dilation_rate=2, padding="causal")),
    "dense_on_sequences": ((4, 3), lambda: keras.layers.Dense(2)),  # locations: the 4 steps
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_with_fixed_scale_normal_head_is_exact(name):
    # Each location's outputs are the head's own outputs, with Hessian I / scale^2:
    # the exact block is (sum_n sum_t ã ã^T) ⊗ I / scale^2, which KFC's
    # A = (1/N) sum ã ã^T, G = (1/T) sum g g^T = N I / scale^2 reproduce exactly,
    # for any number of examples and locations (checks patches, padding, strides).
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(44)
    shape, make = CONVS[name]
    conv = make()
    inputs = keras.Input(shape)
    size = int(np.prod(keras.layers.Flatten()(conv(inputs)).shape[1:]))
    model = keras.Sequential(
        [inputs, conv, keras.layers.Flatten(), tdg.heads.IndependentNormal(size, scale=0.5)]
    )
    x = rng.normal(size=(5, *shape)).astype("float32")
    factors = KroneckerFactors.from_data(model, "all", x, batch_size=3)
    exact = exact_curvature(model, x, None, hessian=normal_hessian(0.5))
    assert_close(factors.to_dense().numpy(), exact)


def test_conv_one_example_one_location_is_exact():
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(55)
    body = [
        keras.layers.Conv2D(4, 3, activation="tanh"),  # a 3x3 input: one location
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ]
    model = keras.Sequential([keras.Input((3, 3, 2)), *body, tdg.heads.Categorical(3)])
    x = rng.normal(size=(1, 3, 3, 2)).astype("float32")
    y = np.array([2.0], "float32")
    factors = KroneckerFactors.from_data(model, "all", x, y)
    exact = exact_curvature(model, x, y, hessian=categorical_hessian)
    assert factors.layer_sizes == [19 * 4, 5 * 3]
    for index, block in enumerate(blocks(exact, factors.layer_sizes)):
        assert_close(factors.layer_block(index).numpy(), block)


def test_factor_sums_under_jit_compile():
    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(66)
    body = [keras.layers.Conv2D(2, 2, activation="relu"), keras.layers.Flatten()]
    head = tdg.heads.Poisson(8)  # no closed form: the autodiff Hessian's square root
    model = keras.Sequential([keras.Input((3, 3, 1)), *body, keras.layers.Dense(8), head])
    x = rng.normal(size=(6, 3, 3, 1)).astype("float32")
    y = rng.poisson(1.0, size=(6, 8)).astype("float32")
    layers = kfac.kfac_layers(model)
    for curvature in kfac.CURVATURES:
        step = tf.function(
            lambda xb, yb, c=curvature: kfac.batch_factor_sums(model, layers, xb, yb, c),
            jit_compile=True,
        )
        eager = KroneckerFactors.from_data(model, layers, x, y, curvature).tensors()
        sums = [t for pair in step(x, y) for t in pair]
        jitted = KroneckerFactors(
            [(a / 6.0, g) for a, g in zip(sums[::2], sums[1::2], strict=True)]
        )
        for actual, expected in zip(jitted.tensors(), eager, strict=True):
            assert_close(actual.numpy(), expected.numpy(), 1e-4)


def random_psd(rng, size):
    m = rng.normal(size=(size, size + 2))
    return (m @ m.T / size).astype("float32")


def test_kronecker_algebra_against_dense_matrices():
    rng = np.random.default_rng(7)
    pairs = [(random_psd(rng, 3), random_psd(rng, 2)), (random_psd(rng, 2), random_psd(rng, 3))]
    # As a Laplace posterior stores them: Keras weights, rebuilt from their values.
    stored = [keras.Variable(t, trainable=False) for pair in pairs for t in pair]
    factors = KroneckerFactors.from_tensors(stored)
    prior, scale = np.array([0.5, 2.0], "float32"), 0.7
    dense = np.zeros((12, 12))
    dense[:6, :6] = scale * np.kron(*pairs[0]) + prior[0] * np.eye(6)
    dense[6:, 6:] = scale * np.kron(*pairs[1]) + prior[1] * np.eye(6)
    assert_close(factors.to_dense(prior, scale).numpy(), dense, 1e-6)
    assert_close(kron(*pairs[0]).numpy(), np.kron(*pairs[0]), 1e-7)
    np.testing.assert_allclose(
        factors.log_det(prior, scale).numpy(), np.linalg.slogdet(dense)[1], rtol=1e-5
    )
    np.testing.assert_allclose(
        factors.log_det(1.3).numpy(),
        np.linalg.slogdet(factors.to_dense(1.3).numpy().astype("float64"))[1],
        rtol=1e-5,
    )
    assert_close(factors.precision_diagonal(prior, scale).numpy(), np.diag(dense), 1e-6)
    v = rng.normal(size=(4, 12)).astype("float32")
    assert_close(factors.matmul(v, prior, scale).numpy(), v @ dense, 1e-5)
    assert_close(factors.solve(v, prior, scale).numpy(), v @ np.linalg.inv(dense), 1e-4)

    @tf.function(jit_compile=True)
    def compiled(seed):
        return (
            factors.sample(seed, 20000, prior, scale),
            factors.log_det(prior, scale),
            factors.precision_diagonal(prior, scale),
        )

    draws, log_det, diagonal = (t.numpy().astype("float64") for t in compiled(tf.constant([1, 2])))
    np.testing.assert_allclose(log_det, np.linalg.slogdet(dense)[1], rtol=1e-5)
    assert_close(diagonal, np.diag(dense), 1e-6)
    covariance = np.linalg.inv(dense)
    std = np.sqrt(np.diag(covariance))
    # Sample correlations' Monte-Carlo standard error is <= 1/sqrt(S) = 0.007: 5 of them.
    np.testing.assert_array_less(np.abs(draws.mean(0)) / std, 5 / np.sqrt(20000))
    error = (np.cov(draws.T) - covariance) / np.outer(std, std)
    np.testing.assert_array_less(np.abs(error), 5 / np.sqrt(20000))


def test_errors_name_the_argument_and_what_is_supported():
    keras.utils.set_random_seed(8)
    head = tdg.heads.Categorical(2)
    norm = keras.layers.BatchNormalization(name="the_norm")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), norm, head])
    x, y = np.zeros((2, 3), "float32"), np.zeros(2, "float32")
    with pytest.raises(
        ValueError, match="the_norm.*BatchNormalization.*supported: keras.layers.Dense"
    ):
        KroneckerFactors.from_data(model, "all", x, y)
    with pytest.raises(ValueError, match="`curvature` must be one of 'ggn', 'ef'"):
        KroneckerFactors.from_data(model, [model.layers[0]], x, y, curvature="hessian")
    with pytest.raises(ValueError, match="`layers` must be one of"):
        kfac.kfac_layers(model, "first_layer")
    homoscedastic = tdg.heads.IndependentNormal(scale="homoscedastic")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), homoscedastic])
    with pytest.raises(ValueError, match="head"):
        kfac.kfac_layers(model, "all")
    conv = keras.layers.Conv2D(2, 1, data_format="channels_first", name="cf")
    model = keras.Sequential([keras.Input((1, 2, 2)), conv, keras.layers.Flatten(), head])
    with pytest.raises(ValueError, match="'cf'.*channels_first"):
        kfac.kfac_layers(model, [conv])
    factors = KroneckerFactors([(np.eye(2), np.eye(2))])
    with pytest.raises(ValueError, match="`prior_precision` must be a scalar or hold one"):
        factors.log_det([1.0, 2.0])
    with pytest.raises(ValueError, match="square matrix"):
        KroneckerFactors([(np.ones((2, 3)), np.eye(2))])
