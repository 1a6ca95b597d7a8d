"""ConditionalVAE and SemiSupervisedVAE (M2): exact bounds where the posterior is
known, learning from labels and from unlabelled data, fit/serialization/export."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import serve_signatures

import tfp_deepgen as tdg
from tfp_deepgen.heads.base import DEFAULT_SCALE_SLOPE

DATA_DIM, LATENT_DIM, NUM_CLASSES = 10, 2, 3


@pytest.fixture(autouse=True)
def _seeded():
    """Fixed initial weights: every number these tests check is reproducible."""
    keras.utils.set_random_seed(0)


def _joined_model(first_dim, condition_dim, head, hidden=None):
    """`[first, condition] -> head params` through a concatenation."""
    first, condition = keras.Input((first_dim,)), keras.Input((condition_dim,))
    h = keras.layers.Concatenate()([first, condition])
    if hidden:
        h = keras.layers.Dense(hidden, activation="tanh")(h)
    return keras.Model([first, condition], head(keras.layers.Dense(head.input_size)(h)))


def _conditional_parts(hidden=None, condition_dim=NUM_CLASSES):
    encoder = _joined_model(
        DATA_DIM, condition_dim, tdg.heads.IndependentNormal(LATENT_DIM), hidden
    )
    decoder = _joined_model(
        LATENT_DIM, condition_dim, tdg.heads.IndependentBernoulli(DATA_DIM), hidden
    )
    return encoder, decoder


def _classifier(hidden=None):
    layers = [keras.Input((DATA_DIM,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="tanh"))
    layers += [keras.layers.Dense(NUM_CLASSES), tdg.heads.Categorical(NUM_CLASSES)]
    return keras.Sequential(layers)


def _clustered_data(n, seed=0, flip=0.1):
    """Binary vectors near one of NUM_CLASSES prototypes; the prototype is the class."""
    rng = np.random.RandomState(seed)
    prototypes = np.random.RandomState(99).rand(NUM_CLASSES, DATA_DIM) > 0.5
    labels = rng.randint(NUM_CLASSES, size=n)
    x = (prototypes[labels] ^ (rng.rand(n, DATA_DIM) < flip)).astype("float32")
    return x, labels, prototypes.astype("float32")


def _class_logits():
    return np.random.RandomState(3).randn(NUM_CLASSES, DATA_DIM).astype("float32")


def _make_posterior_exact(encoder, decoder, logits):
    """q(z|x, y) = p(z) = N(0, I); p(x|y, z) = Bernoulli(logits[y]), z ignored."""
    # The head's scale is softplus(slope * raw): raw = softplus^-1(1) / slope gives 1.
    unit_scale = np.log(np.e - 1) / DEFAULT_SCALE_SLOPE
    dense = encoder.layers[-2]
    kernel, _ = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), np.repeat([0.0, unit_scale], LATENT_DIM)])
    dense = decoder.layers[-2]
    kernel = np.concatenate([np.zeros((LATENT_DIM, DATA_DIM)), logits])
    dense.set_weights([kernel, np.zeros(DATA_DIM)])


def _log_likelihood_given_class(x, logits):
    """log p(x | y) for every class, shape (n, classes)."""
    log_on, log_off = -np.log1p(np.exp(-logits)), -np.log1p(np.exp(logits))
    return x @ log_on.T + (1 - x) @ log_off.T


# -- ConditionalVAE --------------------------------------------------------------


def test_conditional_bounds_equal_the_exact_class_likelihood():
    encoder, decoder = _conditional_parts()
    logits = _class_logits()
    _make_posterior_exact(encoder, decoder, logits)
    cvae = tdg.models.ConditionalVAE(encoder, decoder, num_classes=NUM_CLASSES, seed=0)
    x, labels, _ = _clustered_data(9)
    exact = _log_likelihood_given_class(x, logits)[np.arange(9), labels]
    np.testing.assert_allclose(cvae.elbo(x, labels, num_samples=2), exact, rtol=1e-5)
    np.testing.assert_allclose(cvae.log_likelihood(x, labels, num_samples=5), exact, rtol=1e-5)
    cvae.compile("sgd")
    logs = cvae.evaluate(x, labels, batch_size=9, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], -exact.mean(), rtol=1e-5)


def test_conditional_vae_generates_the_class_it_is_asked_for():
    x, labels, prototypes = _clustered_data(600)
    encoder, decoder = _conditional_parts(hidden=16)
    cvae = tdg.models.ConditionalVAE(encoder, decoder, num_classes=NUM_CLASSES, seed=1)
    cvae.compile(keras.optimizers.Adam(0.02), jit_compile=True)
    history = cvae.fit(x, labels, batch_size=60, epochs=15, verbose=0)
    assert set(history.history) == {"loss", "reconstruction", "kl"}
    asked = np.repeat(np.arange(NUM_CLASSES), 50)
    generated = cvae.generate(asked).numpy()
    nearest = np.argmin(np.abs(generated[:, None, :] - prototypes[None]).sum(-1), axis=1)
    assert np.mean(nearest == asked) > 0.95


def test_condition_vectors_without_num_classes():
    x, labels, _ = _clustered_data(64)
    condition = np.eye(NUM_CLASSES, dtype="float32")[labels] * 2.0 - 1.0
    encoder, decoder = _conditional_parts()
    cvae = tdg.models.ConditionalVAE(encoder, decoder, seed=0)
    cvae.compile("adam", jit_compile=True)
    assert np.isfinite(cvae.fit(x, condition, epochs=1, verbose=0).history["loss"][0])
    assert tuple(cvae.reconstruct(x, condition).shape) == (64, DATA_DIM)


def test_conditional_errors_name_the_labels():
    encoder, decoder = _conditional_parts()
    cvae = tdg.models.ConditionalVAE(encoder, decoder, num_classes=NUM_CLASSES)
    x, labels, _ = _clustered_data(8)
    cvae.compile("adam")
    with pytest.raises(ValueError, match="needs labels"):
        cvae.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        cvae.elbo(x, labels + 3)
    with pytest.raises(ValueError, match="integer class ids"):
        cvae.elbo(x, labels + 0.5)
    with pytest.raises(ValueError, match="one class id per example"):
        cvae.encode(x, np.eye(NUM_CLASSES)[labels])
    with pytest.raises(ValueError, match="`num_classes`"):
        tdg.models.ConditionalVAE(encoder, decoder, num_classes=0)


def test_conditional_round_trip(tmp_path):
    x, labels, _ = _clustered_data(16)
    encoder, decoder = _conditional_parts(hidden=8)
    cvae = tdg.models.ConditionalVAE(encoder, decoder, num_classes=NUM_CLASSES, beta=2.0, seed=3)
    cvae.compile("adam", jit_compile=True)
    cvae.fit(x, labels, epochs=1, verbose=0)
    path = tmp_path / "cvae.keras"
    cvae.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, tdg.models.ConditionalVAE)
    assert (loaded.num_classes, loaded.beta) == (NUM_CLASSES, 2.0)
    np.testing.assert_array_equal(loaded.encode(x, labels), cvae.encode(x, labels))
    np.testing.assert_array_equal(loaded.reconstruct(x, labels), cvae.reconstruct(x, labels))


# -- SemiSupervisedVAE (M2) -------------------------------------------------------


def _exact_m2(classification_weight=1.0):
    """M2 whose posteriors are exact: q(z|x,y) = p(z) and q(y|x) = p(y|x).

    With Bernoulli(logits[y]) pixels, log p(x|y) is linear in x, so a linear
    classifier holds the exact class posterior.
    """
    logits = _class_logits()
    encoder, decoder = _conditional_parts()
    _make_posterior_exact(encoder, decoder, logits)
    classifier = _classifier()
    log_off = -np.log1p(np.exp(logits))
    classifier.layers[0].set_weights([(logits).T, log_off.sum(1)])
    m2 = tdg.models.SemiSupervisedVAE(
        classifier, encoder, decoder, classification_weight=classification_weight, seed=0
    )
    return m2, logits


def test_m2_bound_is_log_p_x_when_the_classifier_is_the_exact_posterior():
    m2, logits = _exact_m2()
    x, _, _ = _clustered_data(12)
    per_class = _log_likelihood_given_class(x, logits) - np.log(NUM_CLASSES)
    log_p_x = np.logaddexp.reduce(per_class, axis=1)
    posterior = np.exp(per_class - log_p_x[:, None])
    np.testing.assert_allclose(m2.classify(x), posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m2.elbo(x), log_p_x, rtol=1e-5)
    np.testing.assert_allclose(m2.log_likelihood(x, num_samples=4), log_p_x, rtol=1e-5)
    # A wrong classifier loosens U(x) = E_q(y|x)[log p(x, y) - log q(y|x)].
    m2.classifier.layers[0].set_weights([np.zeros((DATA_DIM, NUM_CLASSES)), np.zeros(3)])
    assert np.all(m2.elbo(x).numpy() < log_p_x - 1e-3)


def test_m2_loss_mixes_labelled_and_unlabelled_terms():
    m2, logits = _exact_m2(classification_weight=2.5)
    x, labels, _ = _clustered_data(12)
    labels[::2] = tdg.models.UNLABELLED
    per_class = _log_likelihood_given_class(x, logits) - np.log(NUM_CLASSES)
    log_p_x = np.logaddexp.reduce(per_class, axis=1)
    log_q = per_class - log_p_x[:, None]
    rows = np.arange(12)
    labelled = labels >= 0
    safe = np.where(labelled, labels, 0)
    expected = np.where(labelled, -per_class[rows, safe] - 2.5 * log_q[rows, safe], -log_p_x).mean()
    m2.compile("sgd")
    logs = m2.evaluate(x, labels, batch_size=12, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    predicted = np.argmax(log_q, 1)
    np.testing.assert_allclose(logs["accuracy"], np.mean(predicted[labelled] == labels[labelled]))
    np.testing.assert_allclose(logs["kl"], 0.0, atol=1e-5)
    # fit(x) without labels: every example unlabelled.
    logs = m2.evaluate(x, batch_size=12, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], -log_p_x.mean(), rtol=1e-5)


def test_m2_reaches_the_bayes_optimal_accuracy_from_six_labels():
    flip = 0.15
    x, labels, prototypes = _clustered_data(600, flip=flip)
    x_test, labels_test, _ = _clustered_data(300, seed=1, flip=flip)
    partial = np.full_like(labels, tdg.models.UNLABELLED)
    known = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(NUM_CLASSES)])
    partial[known] = labels[known]  # 2 labels per class, 6 in all
    # The classifier that knows the generating prototypes and flip rate.
    log_likelihood = (
        x_test @ np.log(np.where(prototypes, 1 - flip, flip)).T
        + (1 - x_test) @ np.log(np.where(prototypes, flip, 1 - flip)).T
    )
    bayes = np.mean(np.argmax(log_likelihood, 1) == labels_test)

    keras.utils.set_random_seed(0)
    encoder, decoder = _conditional_parts(hidden=16)
    m2 = tdg.models.SemiSupervisedVAE(
        _classifier(hidden=16), encoder, decoder, classification_weight=0.1 * 600 / 6, seed=0
    )
    m2.compile(keras.optimizers.Adam(0.01), jit_compile=True)
    history = m2.fit(x, partial, batch_size=60, epochs=60, verbose=0)
    assert set(history.history) == {"loss", "reconstruction", "kl", "accuracy"}
    accuracy = np.mean(np.argmax(m2.classify(x_test), 1) == labels_test)
    assert accuracy > bayes - 0.02, (accuracy, bayes)


def test_m2_arguments_and_round_trip(tmp_path):
    encoder, decoder = _conditional_parts(hidden=8)
    with pytest.raises(ValueError, match="`classifier` must be"):
        tdg.models.SemiSupervisedVAE(encoder, encoder, decoder)
    with pytest.raises(ValueError, match="`num_classes`"):
        tdg.models.SemiSupervisedVAE(_classifier(), encoder, decoder, num_classes=4)
    with pytest.raises(ValueError, match="`num_importance_samples` must be 1"):
        tdg.models.SemiSupervisedVAE(_classifier(), encoder, decoder, num_importance_samples=5)
    with pytest.raises(ValueError, match="`classification_weight`"):
        tdg.models.SemiSupervisedVAE(_classifier(), encoder, decoder, classification_weight=-1)
    m2 = tdg.models.SemiSupervisedVAE(
        _classifier(hidden=8), encoder, decoder, classification_weight=3.0, seed=2
    )
    x, labels, _ = _clustered_data(16)
    m2.compile("adam", jit_compile=True)
    m2.fit(x, labels, epochs=1, verbose=0)
    path = tmp_path / "m2.keras"
    m2.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, tdg.models.SemiSupervisedVAE)
    assert loaded.classification_weight == 3.0
    np.testing.assert_array_equal(loaded.classify(x), m2.classify(x))
    np.testing.assert_array_equal(loaded.reconstruct(x, labels), m2.reconstruct(x, labels))


# -- export ------------------------------------------------------------------------


def test_m2_export_serves_classify_and_the_conditional_signatures(tmp_path):
    m2, logits = _exact_m2()
    x, labels, _ = _clustered_data(5)
    z = np.random.RandomState(0).randn(5, LATENT_DIM).astype("float32")
    export_dir = tdg.export.export_saved_model(m2, tmp_path / "m2", num_samples=3)
    labels = labels.astype("int32")
    requests = {name: {"x": x} for name in ("classify", "serving_default", "log_likelihood")}
    requests.update(
        encode={"x": x, "labels": labels},
        reconstruct={"x": x, "labels": labels},
        decode={"z": z, "labels": labels},
        generate={"labels": labels},
    )
    served = serve_signatures(export_dir, requests, tmp_path)
    probabilities = m2.classify(x).numpy()
    for name in ("serving_default", "classify"):
        np.testing.assert_allclose(served[f"{name}/probabilities"], probabilities, rtol=1e-5)
        np.testing.assert_array_equal(served[f"{name}/label"], probabilities.argmax(1))
    # The posteriors are exact here, so the served estimate is log p(x) itself.
    per_class = _log_likelihood_given_class(x, logits) - np.log(NUM_CLASSES)
    np.testing.assert_allclose(
        served["log_likelihood/log_likelihood"], np.logaddexp.reduce(per_class, 1), rtol=1e-5
    )
    np.testing.assert_allclose(served["encode/params"], m2.encode(x, labels), rtol=1e-5)
    np.testing.assert_allclose(
        served["decode/mean"], tf.sigmoid(logits[labels]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(served["generate/mean"], tf.sigmoid(logits[labels]), rtol=1e-5)
    assert served["reconstruct/mean"].shape == (5, DATA_DIM)
