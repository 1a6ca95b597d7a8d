"""DeepEnsemble: distinct members, exact mixture predictive, FGSM training, saving and resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import KilledAfterEpoch, max_abs_diff

import tfp_deepgen as tdg

SCALE = 0.5


def _mlp():
    head = tdg.heads.IndependentNormal()
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(head.input_size),
            head,
        ]
    )


def _linear():
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1), tdg.heads.IndependentNormal(1, scale=SCALE)]
    )


def _data(seed, num_inputs=3, size=48):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, num_inputs))
    y = np.tanh(x @ rng.normal(size=(num_inputs, 1))) + 0.1 * rng.normal(size=(size, 1))
    return x.astype("float32"), y.astype("float32")


def _flat(model):
    return np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])


def _compiled(ensemble, jit_compile=True, **kwargs):
    head = tdg.heads.final_head(ensemble)
    ensemble.compile(keras.optimizers.Adam(0.01), loss=head.loss, jit_compile=jit_compile, **kwargs)
    return ensemble


def test_members_differ_and_train_under_xla():
    x, y = _data(0)
    ensemble = _compiled(tdg.inference.DeepEnsemble(_mlp, members=3, seed=1))
    assert isinstance(tdg.heads.final_head(ensemble), tdg.heads.IndependentNormal)
    assert ensemble.inputs[0].shape == (None, 3)
    initial = [_flat(m) for m in ensemble.members]
    assert min(max_abs_diff(initial[i], initial[j]) for i, j in [(0, 1), (0, 2), (1, 2)]) > 1e-3
    # The same seed builds the same members.
    again = tdg.inference.DeepEnsemble(_mlp, members=3, seed=1)
    for a, b in zip(ensemble.members, again.members, strict=True):
        assert max_abs_diff(_flat(a), _flat(b)) == 0.0
    history = ensemble.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # fit logs each member's loss; they sum to the training loss.
    member_losses = [history.history[f"member_{m}_loss"] for m in range(3)]
    np.testing.assert_allclose(np.sum(member_losses, 0), history.history["loss"], rtol=1e-5)
    trained = [_flat(m) for m in ensemble.members]
    for before, after in zip(initial, trained, strict=True):
        assert max_abs_diff(before, after) > 1e-3  # every member trained
    assert min(max_abs_diff(trained[i], trained[j]) for i, j in [(0, 1), (0, 2), (1, 2)]) > 1e-3
    # The training loss is the sum of the members' own losses.
    head = tdg.heads.final_head(ensemble)
    expected = sum(float(tf.reduce_mean(head.loss(y, m(x)))) for m in ensemble.members)
    loss = float(ensemble.compute_loss(x, y, training=False))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_predictive_is_the_equal_mixture_of_the_members():
    x, y = _data(1)
    ensemble = _compiled(tdg.inference.DeepEnsemble(_mlp, members=4, seed=2))
    ensemble.fit(x, y, epochs=2, batch_size=16, verbose=0)
    head = tdg.heads.final_head(ensemble)
    params = [m(x) for m in ensemble.members]
    means = np.stack([head.mean(p).numpy() for p in params]).astype("float64")
    variances = np.stack([head.variance(p).numpy() for p in params]).astype("float64")
    out = tdg.predictive.predict(ensemble, x, num_samples=4)
    np.testing.assert_allclose(out["mean"], means.mean(0), atol=1e-5)
    # Mixture variance = mean of the variances + variance of the means (exactly).
    np.testing.assert_allclose(out["aleatoric_variance"], variances.mean(0), rtol=1e-4)
    np.testing.assert_allclose(out["epistemic_variance"], means.var(0), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(out["variance"], variances.mean(0) + means.var(0), rtol=1e-4)
    # A call outside a Monte-Carlo pass is member 0.
    assert max_abs_diff(ensemble(x), params[0]) < 1e-6


def test_keras_file_round_trip_without_build_fn(tmp_path):
    x, y = _data(2)
    ensemble = _compiled(
        tdg.inference.DeepEnsemble(_mlp, members=2, adversarial_epsilon=0.01, seed=3)
    )
    ensemble.fit(x, y, epochs=1, batch_size=16, verbose=0)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    assert isinstance(loaded, tdg.inference.DeepEnsemble)
    assert loaded.num_members == 2 and loaded.adversarial_epsilon == 0.01
    for a, b in zip(ensemble.members, loaded.members, strict=True):
        assert max_abs_diff(_flat(a), _flat(b)) == 0.0
    expected = tdg.predictive.predict(ensemble, x, num_samples=2)["mean"]
    assert max_abs_diff(tdg.predictive.predict(loaded, x, num_samples=2)["mean"], expected) < 1e-6


def test_adversarial_loss_is_the_fast_gradient_sign_formula():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 2)).astype("float32")
    y = (x @ rng.normal(size=(2, 1)) + 0.2 * rng.normal(size=(16, 1))).astype("float32")
    epsilon = 0.05
    ensemble = _compiled(
        tdg.inference.DeepEnsemble(_linear, members=2, adversarial_epsilon=epsilon, seed=5)
    )

    def nll(x, w, b):  # the fixed-scale Normal head's mean loss, float64
        r = y - x @ w - b
        return np.mean(0.5 * (r / SCALE) ** 2 + np.log(SCALE) + 0.5 * np.log(2 * np.pi))

    step = epsilon * (x.max(0) - x.min(0))  # per feature, over the batch
    expected = 0.0
    for member in ensemble.members:
        w, b = (v.numpy().astype("float64") for v in member.trainable_variables)
        residual = y - x @ w - b
        # d loss / d x_ij = -r_i w_j / (scale^2 B): its sign is -sign(r_i w_j).
        perturbed = x - step * np.sign(residual * w[:, 0])
        expected += 0.5 * (nll(x, w, b) + nll(perturbed, w, b))
        assert nll(perturbed, w, b) > nll(x, w, b)  # the step increases the loss
    loss = float(ensemble.compute_loss(x, y, training=True))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # Without training (evaluation) the loss is the clean one.
    clean = sum(
        nll(x, *(v.numpy().astype("float64") for v in m.trainable_variables))
        for m in ensemble.members
    )
    np.testing.assert_allclose(float(ensemble.compute_loss(x, y, training=False)), clean, rtol=1e-5)
    history = ensemble.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def _two_input_linear():
    features = keras.Input((2,), name="features")
    group = keras.Input((1,), dtype="int32", name="group")
    offset = keras.layers.Flatten()(keras.layers.Embedding(3, 1)(group))
    loc = keras.layers.Add()([keras.layers.Dense(1)(features), offset])
    outputs = tdg.heads.IndependentNormal(1, scale=SCALE)(loc)
    return keras.Model({"features": features, "group": group}, outputs)


def test_adversarial_training_perturbs_each_float_input_of_a_dict():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(16, 2)).astype("float32")
    group = rng.integers(0, 3, size=(16, 1)).astype("int32")
    y = (x @ rng.normal(size=(2, 1)) + 0.2 * rng.normal(size=(16, 1))).astype("float32")
    epsilon = 0.05
    ensemble = _compiled(
        tdg.inference.DeepEnsemble(
            _two_input_linear, members=2, adversarial_epsilon=epsilon, seed=15
        )
    )
    inputs = {"features": x, "group": group}
    step = epsilon * (x.max(0) - x.min(0))
    expected = 0.0
    for member in ensemble.members:
        dense = next(v for v in member.layers if isinstance(v, keras.layers.Dense))
        embedding = next(v for v in member.layers if isinstance(v, keras.layers.Embedding))
        w, b = (v.numpy().astype("float64") for v in dense.trainable_variables)
        offset = embedding.embeddings.numpy().astype("float64")[group[:, 0]]

        def nll(features, w=w, b=b, offset=offset):
            r = y - features @ w - b - offset
            return np.mean(0.5 * (r / SCALE) ** 2 + np.log(SCALE) + 0.5 * np.log(2 * np.pi))

        residual = y - x @ w - b - offset
        # The features move by the sign of their gradient; the integer group ids stay.
        expected += 0.5 * (nll(x) + nll(x - step * np.sign(residual * w[:, 0])))
    loss = float(ensemble.compute_loss(inputs, y, training=True))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    history = ensemble.fit(inputs, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_backup_and_restore_resumes_exactly(tmp_path):
    x, y = _data(6)
    settings = {"batch_size": 16, "epochs": 2, "shuffle": False, "verbose": 0}

    def fresh():
        ensemble = tdg.inference.DeepEnsemble(_mlp, members=2, adversarial_epsilon=0.01, seed=7)
        return _compiled(ensemble, jit_compile=False)

    uninterrupted = fresh()
    uninterrupted.fit(x, y, **settings)
    interrupted = fresh()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(RuntimeError, match="killed"):
        interrupted.fit(x, y, callbacks=[backup, KilledAfterEpoch(0)], **settings)
    resumed = fresh()
    history = resumed.fit(
        x, y, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))], **settings
    )
    assert len(history.history["loss"]) == 1
    for a, b in zip(uninterrupted.weights, resumed.weights, strict=True):
        assert max_abs_diff(a, b) < 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="members"):
        tdg.inference.DeepEnsemble(_mlp, members=0)
    with pytest.raises(ValueError, match="adversarial_epsilon"):
        tdg.inference.DeepEnsemble(_mlp, adversarial_epsilon=-0.1)
    with pytest.raises(ValueError, match="build_fn"):
        tdg.inference.DeepEnsemble(None)
    with pytest.raises(ValueError, match="build_fn"):
        tdg.inference.DeepEnsemble(lambda: keras.Sequential([keras.layers.Dense(1)]), members=2)

    def fixed_seed():
        head = tdg.heads.IndependentNormal(scale=1.0)
        dense = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=0))
        return keras.Sequential([keras.Input((2,)), dense, head])

    with pytest.raises(ValueError, match="identically"):
        tdg.inference.DeepEnsemble(fixed_seed, members=2)
    sizes = iter([2, 3])

    def varying():
        head = tdg.heads.IndependentNormal(scale=1.0)
        return keras.Sequential([keras.Input((next(sizes),)), keras.layers.Dense(1), head])

    with pytest.raises(ValueError, match="architecture"):
        tdg.inference.DeepEnsemble(varying, members=2)
