"""SGLD / pSGLD optimizers, cSGLD's cyclical step size and the sample-collecting callback.

Correctness against closed forms: on Bayesian linear regression with known
noise the exact posterior is N(mu, Sigma), Sigma = (X1^T X1 / sigma^2 +
lambda I)^-1, mu = Sigma X1^T y / sigma^2, with X1 = [X, 1] (the Dense bias
is a weight like the others: the optimizer's prior covers it). Full-batch
SGLD is then the unadjusted Langevin algorithm on a Gaussian with precision
A = Sigma^-1 and step h = learning_rate / N, whose iterates are an AR(1)
process: the stationary mean is mu exactly, the stationary covariance is
(A (I - h A / 2))^-1 (the discretisation bias, stated and computed below) and
the lag-m autocorrelation is (I - h A)^m, which gives the effective sample
sizes behind the Monte-Carlo tolerances. The design is centred and
orthogonalised (X^T X = N I) so that A is a multiple of I and every
coordinate mixes at the same rate.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import KilledAfterEpoch, two_cpu_strategy

import tfp_deepgen as tdg

N, D, SIGMA, PRIOR = 128, 3, 0.5, 1.0
H_A = 0.1  # h * a: one full-batch step's contraction
THIN, BURN_IN, STEPS = 10, 200, 6200


def _regression(seed):
    """Fresh data from a random teacher; the exact posterior's mean and covariance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    x = np.linalg.qr(x - x.mean(0))[0] * np.sqrt(N)
    y = x @ rng.normal(size=(D, 1)) + rng.normal() + SIGMA * rng.normal(size=(N, 1))
    design = np.concatenate([x, np.ones((N, 1))], 1)
    precision = design.T @ design / SIGMA**2 + PRIOR * np.eye(D + 1)
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y[:, 0] / SIGMA**2
    return x.astype("float32"), y.astype("float32"), mean, covariance, precision


def _linear_model():
    head = tdg.heads.IndependentNormal(1, scale=SIGMA)
    model = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(1, kernel_initializer="zeros"), head]
    )
    return model, head


def _run_chain(optimizer, x, y):
    """Full-batch sampling with `fit`; the samples as an `(n, D + 1)` float64 array."""
    model, head = _linear_model()
    model.compile(optimizer, head.loss, jit_compile=True, steps_per_execution=THIN)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    collect = tdg.inference.CollectSamples(burn_in=BURN_IN, thinning=THIN)
    model.fit(data, steps_per_epoch=STEPS, epochs=1, callbacks=[collect], shuffle=False, verbose=0)
    kernel, bias = collect.samples
    assert collect.steps == list(range(BURN_IN + THIN, STEPS + 1, THIN))
    return np.concatenate([kernel[:, :, 0], bias], 1).astype("float64")


def test_sgld_samples_match_the_exact_posterior():
    x, y, mean, covariance, precision = _regression(seed=11)
    a = precision[0, 0]
    np.testing.assert_allclose(precision, a * np.eye(D + 1), atol=1e-9)
    step = H_A / a  # h = learning_rate / N
    samples = _run_chain(
        tdg.inference.SGLD(step * N, data_size=N, prior_precision=PRIOR, seed=3), x, y
    )
    n = len(samples)
    # Discretisation bias of the variance: (A (I - hA/2))^-1 = Sigma / (1 - hA/2), +5.3%.
    bias = 1 / (1 - H_A / 2)
    stationary_var = np.diag(covariance) * bias
    lag = (1 - H_A) ** THIN  # autocorrelation between kept samples
    ess_mean = n * (1 - lag) / (1 + lag)
    ess_var = n * (1 - lag**2) / (1 + lag**2)
    assert ess_mean > 250
    # Mean: unbiased; 4 standard errors from the effective sample size.
    mean_error = np.abs(samples.mean(0) - mean) / np.sqrt(stationary_var / ess_mean)
    assert mean_error.max() < 4, mean_error
    # Variance: each within 4 standard errors (sd of a variance estimate:
    # var * sqrt(2 / ess)) of the stationary variance, and the pooled ratio
    # to the posterior (4 independent coordinates) within 4 of its errors.
    ratio = samples.var(0) / stationary_var
    assert np.abs(ratio - 1).max() < 4 * np.sqrt(2 / ess_var), ratio
    pooled = (samples.var(0) / np.diag(covariance)).mean()
    assert abs(pooled - bias) < 4 * np.sqrt(2 / ess_var / (D + 1)), pooled
    assert bias - 1 < 0.06  # the discretisation bias stated above
    # Off-diagonal covariances vanish (the posterior is isotropic).
    correlation = np.corrcoef(samples.T)[np.triu_indices(D + 1, 1)]
    assert np.abs(correlation).max() < 4 / np.sqrt(ess_mean), correlation


def test_psgld_samples_match_the_exact_posterior():
    x, y, mean, covariance, precision = _regression(seed=12)
    a = precision[0, 0]
    # At stationarity V ~ E[g^2] = a / N^2, so G ~ N / sqrt(a): pick lr so that h G a ~ H_A.
    preconditioner = N / np.sqrt(a)
    learning_rate = H_A / (a * preconditioner) * N
    optimizer = tdg.inference.pSGLD(
        learning_rate, data_size=N, prior_precision=PRIOR, rho=0.999, seed=4
    )
    samples = _run_chain(optimizer, x, y)
    measured = np.concatenate(
        [1 / (1e-5 + np.sqrt(v.numpy().ravel())) for v in optimizer.velocities]
    )
    np.testing.assert_allclose(measured, preconditioner, rtol=0.3)  # G as predicted
    # Discretisation bias at the measured G (the omitted Gamma term adds a
    # little more); Monte-Carlo errors from 20 batch means (the chain's
    # mixing depends on the varying G).
    bias = 1 / (1 - learning_rate / N * measured.max() * a / 2)
    batches = samples[: len(samples) // 20 * 20].reshape(20, -1, D + 1)
    mean_se = batches.mean(1).std(0, ddof=1) / np.sqrt(20)
    mean_error = np.abs(samples.mean(0) - mean) / mean_se
    assert mean_error.max() < 4, mean_error
    var_batches = batches.var(1) / np.diag(covariance)
    pooled_se = var_batches.mean(1).std(ddof=1) / np.sqrt(20)
    pooled = (samples.var(0) / np.diag(covariance)).mean()
    assert 1 - 4 * pooled_se < pooled < bias + 4 * pooled_se, (pooled, bias, pooled_se)
    assert bias - 1 < 0.08 and pooled_se < 0.05


def _jit_apply(optimizer, variables):
    """`optimizer.apply(gradients, variables)` compiled with XLA."""
    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def apply(gradients):
        optimizer.apply(gradients, variables)

    return apply


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_one_sgld_step_has_the_stated_drift_and_noise(temperature):
    size, learning_rate, start = 200_000, 0.3, 2.0
    variable = keras.Variable(np.full((size,), start, "float32"))
    optimizer = tdg.inference.SGLD(
        learning_rate, data_size=50, prior_precision=4.0, temperature=temperature, seed=0
    )
    _jit_apply(optimizer, [variable])([tf.zeros((size,))])
    # theta1 = theta0 - lr * prior / N * theta0 + Normal(0, 2 lr T / N)
    step = variable.numpy().astype("float64") - start * (1 - learning_rate * 4.0 / 50)
    variance = 2 * learning_rate / 50 * temperature
    assert abs(step.mean()) < 5 * np.sqrt(variance / size)
    assert abs(step.var() / variance - 1) < 5 * np.sqrt(2 / size)
    assert int(optimizer.iterations) == 1


def test_one_psgld_step_has_the_stated_preconditioned_noise():
    size, learning_rate, start, rho, prior = 200_000, 0.01, 3.0, 0.9, 2.0
    variable = keras.Variable(np.full((size,), start, "float32"))
    optimizer = tdg.inference.pSGLD(
        learning_rate, data_size=10, rho=rho, prior_precision=prior, seed=0
    )
    _jit_apply(optimizer, [variable])([tf.zeros((size,))])
    gradient = prior / 10 * start  # the prior's gradient only
    velocity = (1 - rho) * gradient**2
    preconditioner = 1 / (1e-5 + np.sqrt(velocity))
    np.testing.assert_allclose(optimizer.velocities[0].numpy(), velocity, rtol=1e-5)
    step = variable.numpy().astype("float64") - (start - learning_rate * preconditioner * gradient)
    variance = 2 * learning_rate / 10 * preconditioner
    assert abs(step.mean()) < 5 * np.sqrt(variance / size)
    assert abs(step.var() / variance - 1) < 5 * np.sqrt(2 / size)


def test_cyclical_step_size_follows_the_cosine_formula():
    initial, cycle = 0.2, 7
    schedule = tdg.inference.CyclicalStepSize(initial, cycle, exploration_fraction=0.3)
    steps = np.arange(3 * cycle)
    expected = initial / 2 * (np.cos(np.pi * (steps % cycle) / cycle) + 1)
    np.testing.assert_allclose([float(schedule(k)) for k in steps], expected, rtol=1e-6)
    sampling = [bool(schedule.sampling(k)) for k in steps]
    assert sampling == [schedule.is_sampling_step(k) for k in steps]
    assert sampling == [k % cycle >= 3 for k in steps]  # ceil(0.3 * 7) = 3 exploration steps
    restored = tdg.inference.CyclicalStepSize.from_config(schedule.get_config())
    assert restored.get_config() == schedule.get_config()


def test_exploration_steps_are_plain_sgd_and_sampling_steps_are_noisy():
    schedule = tdg.inference.CyclicalStepSize(0.1, steps_per_cycle=4, exploration_fraction=0.5)
    variable = keras.Variable(np.ones((1000,), "float32"))
    optimizer = tdg.inference.SGLD(schedule, data_size=10, prior_precision=0.0, seed=1)
    apply = _jit_apply(optimizer, [variable])
    gradient = tf.fill((1000,), 0.5)
    for step in range(4):
        before = variable.numpy()
        apply([gradient])
        change = variable.numpy() - before + float(schedule(step)) * 0.5
        if step < 2:  # exploration: exactly the SGD step
            np.testing.assert_allclose(change, 0.0, atol=1e-6)
        else:
            assert change.std() > 0.3 * np.sqrt(2 * float(schedule(step)) / 10)


def _fit(optimizer_factory, epochs, seed=0, callbacks=(), jit_compile=False):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24, 2)).astype("float32")
    y = (x @ rng.normal(size=(2, 1))).astype("float32")
    head = tdg.heads.IndependentNormal(1, scale=0.5)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4, "tanh"), keras.layers.Dense(1), head]
    )
    model.compile(optimizer_factory(), head.loss, jit_compile=jit_compile)
    model.fit(
        x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks)
    )
    return model


@pytest.mark.parametrize("optimizer", ["SGLD", "pSGLD"])
def test_noise_is_seeded_state_under_xla(optimizer):
    def chain(seed):
        variable = keras.Variable(np.ones((50,), "float32"))
        apply = _jit_apply(
            getattr(tdg.inference, optimizer)(1e-2, data_size=10, seed=seed), [variable]
        )
        for _ in range(3):
            apply([tf.convert_to_tensor(variable) - 0.5])
        return variable.numpy()

    first, again, other = chain(5), chain(5), chain(6)
    np.testing.assert_array_equal(first, again)
    assert np.all(first != other)


def test_mirrored_replicas_apply_the_same_noise_as_one_device():
    """Same chain on two replicas as on one, and `CollectSamples` keeps the same samples."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 2)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    models, collected = [], []
    for strategy in (tf.distribute.get_strategy(), two_cpu_strategy()):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            head = tdg.heads.IndependentNormal(1, scale=1.0)
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
            # XLA cannot compile for two logical devices of one CPU (see conformance.py).
            model.compile(
                tdg.inference.SGLD(0.05, data_size=16, seed=2), head.loss, jit_compile=False
            )
        collect = tdg.inference.CollectSamples(burn_in=1)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[collect])
        models.append(model)
        collected.append(collect)
    single, mirrored = models
    assert collected[0].steps == collected[1].steps == [2, 3]
    for a, b in zip(collected[0].samples, collected[1].samples, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for variable in mirrored.trainable_variables:
        copies = mirrored.distribute_strategy.experimental_local_results(variable.value)
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())
    for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_collect_samples_keeps_one_sample_per_cycle_and_the_latest():
    schedule = tdg.inference.CyclicalStepSize(0.05, steps_per_cycle=6, exploration_fraction=0.5)
    collect = tdg.inference.CollectSamples(burn_in=6, max_samples=2)
    model = _fit(lambda: tdg.inference.SGLD(schedule, data_size=24, seed=0), 8, callbacks=[collect])
    assert collect.steps == [18, 24]  # 24 steps, cycles end at 6, 12, 18, 24; burn-in 6; last 2
    posterior = collect.posterior(seed=0)
    assert isinstance(posterior, tdg.inference.SampleSet) and posterior.num_stored == 2
    for stored, variable in zip(posterior.samples, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(stored.numpy()[-1], variable.numpy())


def test_backup_and_restore_resumes_state_and_samples_exactly(tmp_path):
    schedule = tdg.inference.CyclicalStepSize(0.05, steps_per_cycle=3, exploration_fraction=0.4)

    def factory():
        return tdg.inference.pSGLD(schedule, data_size=24, rho=0.9, seed=7)

    def collector(directory):
        return tdg.inference.CollectSamples(burn_in=2, thinning=1, backup_dir=str(directory))

    reference_collect = collector(tmp_path / "reference_samples")
    reference = _fit(factory, 4, callbacks=[reference_collect])
    assert not (tmp_path / "reference_samples").exists()  # deleted at the end of fit

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    samples_dir = tmp_path / "samples"
    # The collector first: it must not depend on running after BackupAndRestore.
    with pytest.raises(RuntimeError, match="killed"):
        _fit(factory, 4, callbacks=[collector(samples_dir), backup, KilledAfterEpoch(1)])
    resumed_collect = collector(samples_dir)  # a fresh callback, as after a restart
    resumed = _fit(factory, 4, callbacks=[resumed_collect, backup])
    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 12
    for a, b in zip(reference.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(b, a)
    for a, b in zip(reference.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert resumed_collect.steps == reference_collect.steps
    assert resumed_collect.steps == [k for k in range(3, 13) if (k - 1) % 3 >= 2]
    for a, b in zip(reference_collect.samples, resumed_collect.samples, strict=True):
        np.testing.assert_array_equal(b, a)


def test_keras_file_round_trip_keeps_the_optimizer_and_its_state(tmp_path):
    schedule = tdg.inference.CyclicalStepSize(0.05, steps_per_cycle=5)
    model = _fit(lambda: tdg.inference.pSGLD(schedule, data_size=24, seed=3), 2)
    path = tmp_path / "sgld.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, tdg.inference.pSGLD)
    assert isinstance(loaded.optimizer.schedule, tdg.inference.CyclicalStepSize)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    # The restored state continues the same chain: one more epoch gives the same weights.
    x = np.random.default_rng(0).normal(size=(24, 2)).astype("float32")
    y = np.zeros((24, 1), "float32")
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", ["SGLD", "pSGLD"])
def test_optimizer_config_round_trip(cls):
    optimizer = getattr(tdg.inference, cls)(
        learning_rate=0.02, data_size=100, prior_precision=0.5, temperature=0.3, seed=9
    )
    config = optimizer.get_config()
    restored = getattr(tdg.inference, cls).from_config(config)
    assert restored.get_config() == config
    assert (config["data_size"], config["prior_precision"], config["temperature"]) == (
        100,
        0.5,
        0.3,
    )
    assert int(restored.noise_seed.numpy()) == 9
    serialized = keras.optimizers.serialize(optimizer)
    assert type(keras.optimizers.deserialize(serialized)) is type(optimizer)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "data_size"),
        ({"data_size": 0}, "data_size"),
        ({"data_size": 10.0}, "data_size"),
        ({"data_size": 10, "prior_precision": -1.0}, "prior_precision"),
        ({"data_size": 10, "temperature": -0.5}, "temperature"),
        ({"data_size": 10, "seed": 1.5}, "seed"),
        ({"data_size": 10, "learning_rate": -1e-3}, "learning_rate"),
    ],
)
@pytest.mark.parametrize("cls", ["SGLD", "pSGLD"])
def test_bad_optimizer_arguments_raise_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        getattr(tdg.inference, cls)(**kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [({"rho": 1.0}, "rho"), ({"epsilon": 0.0}, "epsilon")])
def test_bad_psgld_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        tdg.inference.pSGLD(data_size=10, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initial_learning_rate": 0.0, "steps_per_cycle": 4}, "initial_learning_rate"),
        ({"initial_learning_rate": 0.1, "steps_per_cycle": 0}, "steps_per_cycle"),
        (
            {"initial_learning_rate": 0.1, "steps_per_cycle": 4, "exploration_fraction": 1.0},
            "exploration_fraction",
        ),
        (
            {"initial_learning_rate": 0.1, "steps_per_cycle": 2, "exploration_fraction": 0.9},
            "exploration_fraction",
        ),
    ],
)
def test_bad_schedule_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        tdg.inference.CyclicalStepSize(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"burn_in": -1}, "burn_in"),
        ({"thinning": 0}, "thinning"),
        ({"max_samples": 0}, "max_samples"),
        ({"backup_dir": 3}, "backup_dir"),
    ],
)
def test_bad_collector_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        tdg.inference.CollectSamples(**kwargs)


def test_collector_refuses_a_thinning_it_cannot_see_and_an_empty_posterior():
    collect = tdg.inference.CollectSamples(thinning=3)
    head = tdg.heads.IndependentNormal(1, scale=1.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
    model.compile(tdg.inference.SGLD(1e-2, data_size=8, seed=0), head.loss, steps_per_execution=2)
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(ValueError, match="`thinning`"):
        model.fit(x, y, batch_size=2, epochs=1, callbacks=[collect], verbose=0)
    with pytest.raises(ValueError, match="No samples"):
        _ = tdg.inference.CollectSamples().samples
