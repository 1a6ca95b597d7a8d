"""IBP gates: stick-breaking pieces against references, gate behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate, stats

import tfp_deepgen as tdg
from tfp_deepgen import stick_breaking

N = 400_000


def _kumaraswamy_log_pdf(v, a, b):
    return np.log(a) + np.log(b) + (a - 1) * np.log(v) + (b - 1) * np.log1p(-(v**a))


def _log_v(a, b, n=N, seed=0):
    uniform = np.random.default_rng(seed).uniform(1e-7, 1 - 1e-7, size=n).astype("float32")
    return stick_breaking.kumaraswamy_log_sample(
        tf.constant(a, "float32"), tf.constant(b, "float32"), tf.constant(uniform)
    ).numpy()


@pytest.mark.parametrize("a, b", [(2.0, 1.5), (0.7, 4.0), (5.0, 0.5)])
def test_kumaraswamy_sampler_matches_its_cdf(a, b):
    v = np.exp(_log_v(a, b, n=20_000).astype("float64"))
    result = stats.kstest(v, lambda x: 1.0 - (1.0 - x**a) ** b)
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("a, b, alpha", [(2.0, 1.5, 3.0), (0.7, 4.0, 5.0), (3.0, 2.0, 1.0)])
def test_kumaraswamy_beta_kl_agrees_with_monte_carlo(a, b, alpha):
    log_v = _log_v(a, b).astype("float64")
    v = np.exp(log_v)
    terms = _kumaraswamy_log_pdf(v, a, b) - stats.beta(alpha, 1).logpdf(v)
    estimate, error = terms.mean(), terms.std() / np.sqrt(len(terms))
    exact = float(stick_breaking.kumaraswamy_beta_kl(a, b, alpha))
    assert abs(exact - estimate) < 5 * error + 1e-4, (exact, estimate, error)


def test_kumaraswamy_beta_kl_is_zero_at_the_prior():
    # Kumaraswamy(alpha, 1) is Beta(alpha, 1).
    kl = stick_breaking.kumaraswamy_beta_kl([0.5, 2.0, 7.0], [1.0, 1.0, 1.0], 2.0).numpy()
    assert kl[1] == pytest.approx(0.0, abs=1e-6)
    assert kl[0] > 0 and kl[2] > 0


def test_stick_probabilities_are_non_increasing():
    log_v = tf.math.log(tf.random.stateless_uniform((100, 30), seed=[1, 2], minval=0.01))
    pi = stick_breaking.stick_probabilities(log_v).numpy()
    assert np.all(np.diff(pi, axis=-1) <= 0)
    np.testing.assert_allclose(pi, np.cumprod(np.exp(log_v.numpy()), axis=-1), rtol=1e-5)


def test_bernoulli_kl_matches_tfp():
    q = tf.constant([0.1, 0.5, 0.97])
    p = tf.constant([0.3, 0.5, 0.2])
    expected = tfp.distributions.kl_divergence(
        tfp.distributions.Bernoulli(probs=q), tfp.distributions.Bernoulli(probs=p)
    )
    np.testing.assert_allclose(stick_breaking.bernoulli_kl(q, p), expected, rtol=1e-5)


def test_gates_are_near_binary_at_low_temperature():
    uniform = tf.random.stateless_uniform((N,), seed=[3, 4], minval=1e-6, maxval=1 - 1e-6)
    logits = tf.fill((N,), float(np.log(0.7 / 0.3)))
    cold = stick_breaking.binary_concrete(logits, 0.001, uniform).numpy()
    warm = stick_breaking.binary_concrete(logits, 1.0, uniform).numpy()
    assert np.mean((cold > 0.01) & (cold < 0.99)) < 0.01
    assert np.mean((warm > 0.01) & (warm < 0.99)) > 0.5
    assert abs((cold > 0.5).mean() - 0.7) < 5 * np.sqrt(0.21 / N)


def test_gate_kl_equals_its_expectation_by_numerical_integration():
    """One unit: KL = KL_v (analytic) + E_v[KL(Bern(p) || Bern(v))] (Monte Carlo in the layer)."""
    gate = tdg.layers.IBPGate(alpha=2.0, initial_probability=0.8, seed=0)
    gate.build((None, 1))
    gate.untransformed_a.assign([0.7])
    gate.untransformed_b.assign([1.2])
    a, b = (float(t[0]) for t in gate.kumaraswamy_parameters())
    p = 0.8

    def integrand(v):
        kl = p * np.log(p / v) + (1 - p) * np.log((1 - p) / (1 - v))
        return kl * np.exp(_kumaraswamy_log_pdf(v, a, b))

    expected_kl_z, _ = integrate.quad(integrand, 1e-12, 1 - 1e-12, limit=200)
    kl_v = float(stick_breaking.kumaraswamy_beta_kl(a, b, 2.0))
    # The layer's KL at seeds [0, s], s < 4000, in one compiled call (4,000 eager calls take ~30 s).
    seeds = tf.stack([tf.zeros(4000, tf.int32), tf.range(4000)], axis=1)
    draw = tf.function(lambda s: tf.map_fn(gate.kl_divergence, s, fn_output_signature=tf.float32))
    draws = draw(seeds).numpy().astype("float64")
    standard_error = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - (kl_v + expected_kl_z)) < 5 * standard_error


def test_hard_gates_outside_training():
    gate = tdg.layers.IBPGate(threshold=0.5, seed=0)
    gate.build((None, 4))
    gate.gate_logits.assign([3.0, -3.0, 0.2, -0.2])
    x = np.ones((1000, 4), "float32")
    assert gate.active_units() == 2
    np.testing.assert_array_equal(gate.active_mask(), [True, False, True, False])
    with tdg.layers.sampling_mode(gate, "mean"):
        np.testing.assert_array_equal(gate(x)[0], [1.0, 0.0, 1.0, 0.0])
    sampled = gate(x).numpy()  # Bernoulli(p_k) per example
    assert set(np.unique(sampled)) <= {0.0, 1.0}
    np.testing.assert_allclose(sampled.mean(0), tf.sigmoid(gate.gate_logits), atol=0.06)


def test_conv_gate_switches_whole_channels():
    gate = tdg.layers.IBPGate(initial_probability=0.5, seed=1)
    y = gate(np.ones((8, 5, 5, 6), "float32"), training=True).numpy()
    # One relaxed gate per example and channel, the same at every position.
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :1, :], y.shape))
    assert len(np.unique(y)) > 2


def test_ibp_dense_outputs_zero_for_switched_off_units():
    layer = tdg.layers.IBPDense(3, activation="sigmoid", seed=0)
    layer.build((None, 2))
    layer.gate_logits.assign([6.0, -6.0, 6.0])
    with tdg.layers.sampling_mode(layer, "mean"):
        y = layer(np.ones((2, 2), "float32")).numpy()
    assert np.all(y[:, 1] == 0) and np.all(y[:, [0, 2]] > 0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tdg.layers.IBPGate(alpha=0.0), "alpha"),
        (lambda: tdg.layers.IBPGate(temperature=-1.0), "temperature"),
        (lambda: tdg.layers.IBPGate(initial_probability=1.0), "initial_probability"),
        (lambda: tdg.layers.IBPDense(0), "units"),
        (lambda: tdg.layers.IBPDense(3, kernel_prior="normal"), "kernel_prior"),
    ],
)
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_kl_pushes_unneeded_gates_towards_the_prior():
    """With no data term the KL alone closes late units first (IBP ordering)."""
    keras.utils.set_random_seed(0)
    gate = tdg.layers.IBPGate(alpha=2.0, initial_probability=0.9, seed=0)
    gate.build((None, 10))
    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(300):
        with tf.GradientTape() as tape:
            gate(tf.ones((1, 10)), training=True)
            loss = tf.add_n(gate.losses)
        optimizer.apply(tape.gradient(loss, gate.trainable_variables), gate.trainable_variables)
    p = gate.unit_probabilities()
    assert p[0] > p[-1]
    assert gate.active_units(threshold=0.5) < 10  # all 10 start above 0.5


def _close_some_gates(model, seed=0):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, tdg.layers.IBPGate):
            logits = np.where(rng.rand(layer.units) < 0.5, -6.0, 6.0).astype("float32")
            logits[0] = 6.0  # keep at least one unit
            layer.gate_logits.assign(logits)


def test_shrunk_network_predicts_like_the_gated_one():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            tdg.layers.IBPGate(seed=0),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            tdg.layers.IBPDense(10, activation="tanh", seed=1),
            tdg.layers.IBPDense(7, activation="relu", kernel_prior=tdg.priors.Normal(), seed=2),
            keras.layers.Dense(2),
            tdg.heads.IndependentNormal(1),
        ]
    )
    _close_some_gates(model)
    widths = tdg.structure.active_widths(model)
    small = tdg.structure.shrink(model)
    assert [type(layer).__name__ for layer in small.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
        "Dense",
        "IndependentNormal",
    ]
    assert small.layers[0].filters == widths[model.layers[1].name]
    assert small.layers[3].units == widths[model.layers[4].name]
    assert small.layers[4].units == widths[model.layers[5].name]
    assert small.count_params() < model.count_params()
    x = np.random.RandomState(0).randn(5, 8, 8, 2).astype("float32")
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_shrink_rejects_what_it_cannot_carry():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            tdg.layers.IBPDense(5, initial_probability=0.995),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    with pytest.raises(ValueError, match="BatchNormalization"):
        tdg.structure.shrink(model)
    gate_first = keras.Sequential([keras.Input((4,)), tdg.layers.IBPGate()])
    with pytest.raises(ValueError, match="IBPGate right after"):
        tdg.structure.shrink(gate_first)


def test_active_units_monitor_logs_every_gated_layer():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            tdg.layers.IBPDense(4, name="first", seed=0),
            keras.layers.Dense(5),
            tdg.layers.IBPGate(name="second", seed=1),
            keras.layers.Dense(1),
        ]
    )
    model.layers[0].gate_logits.assign([6.0, -6.0, 6.0, -6.0])
    model.layers[2].gate_logits.assign([6.0, 6.0, 6.0, -6.0, 6.0])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    history = model.fit(
        np.ones((8, 3)), np.ones((8, 1)), verbose=0, callbacks=[tdg.callbacks.ActiveUnitsMonitor()]
    )
    assert history.history["active_units_first"] == [2]
    assert history.history["active_units_second"] == [4]
    assert history.history["active_units"] == [6]


def test_sampling_mode_reaches_the_weights_inside_ibp_dense():
    layer = tdg.layers.IBPDense(4, kernel_prior=tdg.priors.Normal(0.0, 1.0), seed=0)
    x = np.ones((3, 2), "float32")
    layer(x)
    with tdg.layers.sampling_mode(layer, "mean"):
        assert layer.dense.inference_state.sampling == "mean"
        assert not layer.dense.sampling_enabled
        assert layer.dense.sampling == "sample"  # its own setting is kept
        np.testing.assert_array_equal(layer(x), layer(x))
    assert layer.dense.inference_state.sampling is None
    assert layer.dense.sampling_enabled


@pytest.mark.parametrize(
    "make",
    [
        lambda: tdg.layers.IBPGate(initial_probability=0.5, seed=0),
        lambda: tdg.layers.DenseHorseshoe(32, seed=0),
    ],
    ids=["IBPGate", "DenseHorseshoe"],
)
def test_monte_carlo_copies_draw_independent_noise(make):
    model = keras.Sequential([keras.Input((32,)), make()])
    with tdg.layers.monte_carlo_mode(model, 64):
        copies = model(tf.ones((64, 32)), training=False).numpy()
    assert len({row.tobytes() for row in copies}) == 64, "copies shared their noise"


def test_horseshoe_draws_its_scales_per_monte_carlo_copy():
    layer = tdg.layers.DenseHorseshoe(3, use_bias=False, seed=0)
    model = keras.Sequential([keras.Input((2,)), layer])
    layer._beta.untransformed_scale.assign(np.full((2, 3), -30.0, "float32"))  # beta ~ its mean
    with tdg.layers.monte_carlo_mode(model, 200):
        copies = model(tf.ones((200, 2)), training=False).numpy()
    # With beta fixed, copy s outputs (x beta)_k * tau_s * lambda_sk: the ratio
    # of two units varies across copies only if lambda is drawn per copy.
    ratios = copies[:, 1] / copies[:, 0]
    assert np.std(np.log(np.abs(ratios))) > 0.05


def test_shrink_refuses_activations_that_move_zero():
    def model_with(activation):
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(6),
                tdg.layers.IBPGate(initial_probability=0.995, seed=0),
                keras.layers.Activation(activation),
                keras.layers.Dense(1),
            ]
        )

    with pytest.raises(ValueError, match="maps 0|f\\(0\\)"):
        tdg.structure.shrink(model_with("sigmoid"))
    model = model_with("tanh")
    model.layers[1].gate_logits.assign([6.0, -6.0, 6.0, -6.0, 6.0, 6.0])
    x = np.random.RandomState(0).randn(4, 3).astype("float32")
    with tdg.layers.sampling_mode(model, "mean"):
        np.testing.assert_allclose(tdg.structure.shrink(model)(x), model(x), atol=1e-6)
