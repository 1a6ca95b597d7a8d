"""SWAG (Maddox et al. 2019): the callback's moments, the posterior's draws, batch norm, resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import KilledAfterEpoch, two_cpu_strategy

import tfp_deepgen as tdg

NOISE = 0.3


def _linear_model(num_inputs=3, seed=0):
    keras.utils.set_random_seed(seed)
    head = tdg.heads.IndependentNormal(1, scale=NOISE)
    return keras.Sequential([keras.Input((num_inputs,)), keras.layers.Dense(1), head])


def _regression(seed, size=256, num_inputs=3):
    """Data from a fresh random linear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, num_inputs))
    w, b = rng.normal(size=(num_inputs, 1)), rng.normal()
    y = x @ w + b + NOISE * rng.normal(size=(size, 1))
    return x.astype("float32"), y.astype("float32")


def _reference(trajectory, rank):
    """SWAG's moments and last deviations of a weight sequence, in float64."""
    mean, second, rows = 0.0, 0.0, []
    for n, w in enumerate(trajectory):
        mean = mean * n / (n + 1) + w / (n + 1)
        second = second * n / (n + 1) + w**2 / (n + 1)
        rows = (rows + [w - mean])[-rank:]
    return mean, second, np.array(rows)


def _hand_fed(trajectory, rank, seed=0):
    """A SWAG callback on a Dense(2) model fed `trajectory` (flat vectors of length 8)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), _head()])
    swag = tdg.inference.SWAG(rank=rank)
    swag.set_model(model)
    for w in trajectory:
        swag.collect([w[:6].reshape(3, 2), w[6:]])
    return model, swag


def _head():
    return tdg.heads.IndependentNormal(1)  # loc and scale: Dense(2) before it


def test_mean_reaches_least_squares_under_xla():
    x, y = _regression(seed=11)
    model = _linear_model()
    model.compile(keras.optimizers.SGD(0.01), model.layers[-1].loss, jit_compile=True)
    swag = tdg.inference.SWAG(rank=5)  # default start: half the epochs
    model.fit(x, y, batch_size=32, epochs=30, verbose=0, callbacks=[swag])
    assert swag.num_collected == 15
    design = np.concatenate([x, np.ones((len(x), 1))], 1).astype("float64")
    least_squares = np.linalg.lstsq(design, y.astype("float64"), rcond=None)[0][:, 0]
    # SGD's iterates scatter around the minimum; their average lands near it.
    assert np.max(np.abs(swag.mean - least_squares)) < 0.02
    assert not hasattr(model, "swag") and len(model.layers) == 2  # detached after fit
    posterior = swag.posterior(seed=0)
    kernel, bias = model.trainable_variables  # set to the SWA mean
    assert np.allclose(np.concatenate([kernel.numpy()[:, 0], bias.numpy()]), swag.mean)
    spread = np.sqrt(posterior.covariance().numpy().diagonal())
    assert np.all(spread > 0) and np.all(spread < 0.1)


def test_moments_and_covariance_follow_the_formulas():
    rng = np.random.default_rng(3)
    trajectory = rng.normal(size=(7, 8)) + np.arange(8)
    trajectory[:, 7] = 3.3  # a weight that never moves: E[w^2] - E[w]^2 rounds to +-tiny
    rank = 4
    model, swag = _hand_fed(trajectory.astype("float32"), rank)
    mean, second, rows = _reference(trajectory.astype("float32").astype("float64"), rank)
    assert swag.num_collected == 7
    # float32 running averages against float64: a few ulps of numbers up to ~60.
    np.testing.assert_allclose(swag.mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(swag.second_moment, second, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(swag.deviations, rows, rtol=1e-5, atol=1e-5)
    posterior = swag.posterior(scale=0.5, assign_mean=False)
    variance = np.maximum(posterior.second_moment.numpy()[0] - posterior.mean.numpy()[0] ** 2, 0)
    expected = 0.5 * (np.diag(variance) + rows.T @ rows / (rank - 1))
    np.testing.assert_allclose(posterior.covariance().numpy(), expected, atol=1e-5)
    assert posterior.variance().numpy()[0, 7] >= 1e-30  # clamped, never negative
    assert np.allclose(model.trainable_variables[1].numpy(), 0.0)  # assign_mean=False


def test_draws_match_mean_and_covariance():
    rng = np.random.default_rng(5)
    trajectory = (rng.normal(size=(6, 8)) * np.linspace(0.2, 2.0, 8)).astype("float32")
    _, swag = _hand_fed(trajectory, rank=3)
    posterior = swag.posterior(scale=0.5)
    num = 20000
    kernel, bias = posterior.weight_samples(num, np.array([4, 2], "int32"))
    draws = np.concatenate([kernel.numpy().reshape(num, 6), bias.numpy()], 1).astype("float64")
    mean = posterior.mean.numpy()[0]
    cov = posterior.covariance().numpy().astype("float64")
    sd = np.sqrt(np.diag(cov))
    # 5 standard errors of the Monte-Carlo mean and covariance.
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * sd / np.sqrt(num))
    cov_se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / num)
    assert np.all(np.abs(np.cov(draws.T) - cov) < 5 * cov_se)


def _bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    head = tdg.heads.IndependentNormal(1, scale=NOISE)
    layers = [
        keras.layers.Dense(4),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(1),
        head,
    ]
    return keras.Sequential([keras.Input((3,)), *layers])


def _batch_statistics(h, batch_size):
    """Maddox's bn_update: batch means and biased variances averaged, weighted by rows."""
    means, variances, rows = [], [], []
    for start in range(0, len(h), batch_size):
        part = h[start : start + batch_size]
        means.append(part.mean(0))
        variances.append(part.var(0))
        rows.append(len(part))
    weights = np.array(rows)[:, None] / len(h)
    return (weights * means).sum(0), (weights * variances).sum(0)


def test_batch_norm_statistics_refreshed_per_draw():
    x, y = _regression(seed=21, size=64)
    model = _bn_model()
    model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss, jit_compile=True)
    swag = tdg.inference.SWAG(rank=2, start_epoch=1)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[swag])
    with pytest.raises(ValueError, match="refresh_data"):
        swag.posterior()
    with pytest.raises(ValueError, match="num_samples"):
        swag.posterior(refresh_data=x)
    posterior = swag.posterior(refresh_data=x, num_samples=3, batch_size=24, seed=0)
    assert isinstance(posterior, tdg.inference.SampleSet)
    stored = {
        id(v): s.numpy() for v, s in zip(posterior.random_variables, posterior.samples, strict=True)
    }
    dense, norm = model.layers[0], model.layers[1]
    means = []
    for s in range(3):
        h = x.astype("float64") @ stored[id(dense.kernel)][s] + stored[id(dense.bias)][s]
        mean, variance = _batch_statistics(h, 24)
        np.testing.assert_allclose(stored[id(norm.moving_mean)][s], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            stored[id(norm.moving_variance)][s], variance, rtol=1e-5, atol=1e-5
        )
        means.append(mean)
    assert np.ptp(np.array(means), axis=0).max() > 1e-3  # each draw got its own statistics
    # The model itself holds the SWA mean with statistics refreshed for it.
    h = x.astype("float64") @ dense.kernel.numpy() + dense.bias.numpy()
    mean, variance = _batch_statistics(h, 24)
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-5)
    out = tdg.predictive.predict(posterior, x, num_samples=3)
    assert np.all(np.isfinite(out["mean"]))


def test_multiswag_draws_component_s_mod_m():
    rng = np.random.default_rng(9)
    first = _hand_fed((rng.normal(size=(5, 8)) - 10).astype("float32"), rank=2)[1]
    second = _hand_fed((rng.normal(size=(6, 8)) + 10).astype("float32"), rank=3)[1]
    p1, p2 = first.posterior(), second.posterior()
    mixture = tdg.inference.SWAGPosterior.mixture([p1, p2], seed=0)
    assert mixture.num_components == 2 and mixture.rank == 3
    np.testing.assert_allclose(mixture.covariance(0), p1.covariance(), atol=1e-6)
    np.testing.assert_allclose(mixture.covariance(1), p2.covariance(), atol=1e-6)
    num = 4000
    kernel, bias = mixture.weight_samples(num, np.array([1, 7], "int32"))
    draws = np.concatenate([kernel.numpy().reshape(num, 6), bias.numpy()], 1)
    for component, p in enumerate([p1, p2]):
        part = draws[component::2]
        sd = np.sqrt(np.diag(p.covariance().numpy()))
        assert np.all(np.abs(part.mean(0) - p.mean.numpy()[0]) < 5 * sd / np.sqrt(len(part)))
    with pytest.raises(ValueError, match="posteriors"):
        tdg.inference.SWAGPosterior.mixture([p1])
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), _head()])
    swag = tdg.inference.SWAG(rank=2)
    swag.set_model(other)
    swag.collect()
    with pytest.raises(ValueError, match="posteriors"):
        tdg.inference.SWAGPosterior.mixture([p1, swag.posterior()])


@pytest.mark.parametrize("swag_first", [True, False], ids=["swag_first", "backup_first"])
def test_backup_and_restore_resumes_the_same_moments(swag_first, tmp_path):
    x, y = _regression(seed=31, size=64)
    settings = {"batch_size": 16, "epochs": 5, "shuffle": False, "verbose": 0}

    def fresh():
        model = _linear_model(seed=2)
        model.compile(keras.optimizers.SGD(0.02), model.layers[-1].loss, jit_compile=True)
        return model, tdg.inference.SWAG(rank=2, start_epoch=1)

    def order(swag, backup):
        return [swag, backup] if swag_first else [backup, swag]

    model, uninterrupted = fresh()
    model.fit(x, y, callbacks=[uninterrupted], **settings)
    model, swag = fresh()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(RuntimeError, match="killed"):
        model.fit(x, y, callbacks=[*order(swag, backup), KilledAfterEpoch(2)], **settings)
    model, resumed = fresh()  # a new process would start from scratch like this
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    history = model.fit(x, y, callbacks=order(resumed, backup), **settings)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    assert resumed.num_collected == uninterrupted.num_collected == 4
    for name in ("mean", "second_moment", "deviations"):
        np.testing.assert_allclose(
            getattr(resumed, name), getattr(uninterrupted, name), rtol=0, atol=1e-7
        )


def test_model_built_by_fit_itself():
    x, y = _regression(seed=51, size=32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(1), tdg.heads.IndependentNormal(1, scale=NOISE)])
    model.compile(keras.optimizers.SGD(0.02), model.layers[-1].loss)
    swag = tdg.inference.SWAG(rank=2, start_epoch=0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[swag])
    assert swag.num_collected == 2 and swag.mean.shape == (4,)


def test_bad_arguments_name_themselves():
    for kwargs, name in [
        ({"rank": 0}, "rank"),
        ({"start_epoch": -1}, "start_epoch"),
        ({"start_epoch": 1.5}, "start_epoch"),
        ({"collect_every": 0}, "collect_every"),
        ({"subset": "first"}, "subset"),
        ({"name": "_private"}, "name"),
    ]:
        with pytest.raises(ValueError, match=name):
            tdg.inference.SWAG(**kwargs)
    model = _linear_model()
    swag = tdg.inference.SWAG(rank=2)
    swag.set_model(model)
    # Attached for the checkpoint, yet not a layer, weight or head of the model.
    assert model.swag is swag.state and len(model.layers) == 2 and len(model.weights) == 2
    assert tdg.heads.final_head(model) is model.layers[-1]
    with pytest.raises(ValueError, match="collected nothing"):
        swag.posterior()
    swag.collect()
    with pytest.raises(ValueError, match="scale"):
        swag.posterior(scale=0.0)
    with pytest.raises(ValueError, match="rank"):
        tdg.inference.SWAGPosterior(model, rank=0)


def test_last_layer_subset_and_keras_round_trip(tmp_path):
    x, y = _regression(seed=41, size=64)
    model = _bn_model()
    model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss)
    swag = tdg.inference.SWAG(rank=2, start_epoch=0, subset="last_layer")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[swag])
    posterior = swag.posterior(seed=1)  # the features feeding the last layer never change
    assert [v.name for v in posterior.random_variables] == ["kernel", "bias"]
    assert swag.mean.shape == (5,)
    posterior.save(tmp_path / "swag.keras")
    loaded = keras.saving.load_model(tmp_path / "swag.keras", safe_mode=True)
    for a, b in zip(loaded.weights, posterior.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.get_config()["variable_indices"] == posterior.variable_indices


def test_multiswag_with_batch_norm_mixes_the_refreshed_sample_sets():
    x, y = _regression(seed=41, size=64)
    sets = []
    for run in range(2):
        model = _bn_model(seed=run)
        model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss, jit_compile=True)
        swag = tdg.inference.SWAG(rank=2, start_epoch=1)
        model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[swag])
        sets.append(swag.posterior(refresh_data=x, num_samples=3, seed=run))
    with pytest.raises(ValueError, match="sample_sets"):
        tdg.inference.SampleSet.mixture(sets[:1])
    # An empty store over the default variables (the trainable ones), as .keras loading makes.
    assert len(tdg.inference.SampleSet(model, 2).samples) == len(model.trainable_variables)
    mixture = tdg.inference.SampleSet.mixture(sets)
    assert mixture.num_stored == 6
    for store, *parts in zip(mixture.samples, *(s.samples for s in sets), strict=True):
        for m, part in enumerate(parts):
            np.testing.assert_array_equal(store.numpy()[m::2], part.numpy())
    # Copy s of a pass uses run s mod 2: the mixture's predictive averages the runs'.
    out = tdg.predictive.predict(mixture, x[:5], num_samples=6)
    means = [tdg.predictive.predict(s, x[:5], num_samples=3)["mean"] for s in sets]
    np.testing.assert_allclose(out["mean"], np.mean(means, 0), rtol=1e-5, atol=1e-5)


def test_mixtures_refuse_components_whose_undrawn_weights_differ():
    x, y = _regression(seed=43, size=64)
    posteriors = []
    for run in range(2):
        keras.utils.set_random_seed(run)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2), _head()]
        )
        model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss)
        swag = tdg.inference.SWAG(rank=2, start_epoch=1, subset="last_layer")
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[swag])
        posteriors.append(swag.posterior())
    # Each run's last layer sits on its own body: the mixture would use only the first.
    with pytest.raises(ValueError, match="posteriors.*do not draw"):
        tdg.inference.SWAGPosterior.mixture(posteriors)
    # Two last-layer posteriors of the same model mix.
    swag = tdg.inference.SWAG(rank=2, subset="last_layer")
    swag.set_model(posteriors[0].model)
    swag.collect()
    assert (
        tdg.inference.SWAGPosterior.mixture([posteriors[0], swag.posterior()]).num_components == 2
    )


def test_mirrored_fit_collects_the_moments_of_one_device():
    x, y = _regression(seed=47, size=64)
    swags = []
    for strategy in (tf.distribute.get_strategy(), two_cpu_strategy()):
        with strategy.scope():
            model = _linear_model(seed=3)
            # XLA cannot compile for two logical devices of one CPU (see conformance.py).
            model.compile(keras.optimizers.SGD(0.05), model.layers[-1].loss, jit_compile=False)
        swag = tdg.inference.SWAG(rank=3, start_epoch=1)
        model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=[swag])
        swags.append(swag)
    single, mirrored = swags
    assert mirrored.num_collected == single.num_collected == 4
    for name in ("mean", "second_moment", "deviations"):
        np.testing.assert_allclose(
            getattr(mirrored, name), getattr(single, name), rtol=1e-5, atol=1e-6
        )
    out = tdg.predictive.predict(mirrored.posterior(seed=0), x[:4], num_samples=8)
    assert np.all(np.isfinite(out["mean"]))
