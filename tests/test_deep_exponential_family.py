"""Deep Exponential Families: the ELBO against an independent TFP computation,
exact score-function gradients, factor recovery, underflow, I/O and serving."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conformance import serve_signatures
from scipy.optimize import linear_sum_assignment

import tfp_deepgen as tdg

tfd = tfp.distributions
DEF = tdg.models.DeepExponentialFamily


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _counts(n=6, v=5, seed=0):
    return np.random.RandomState(seed).poisson(1.5, (n, v)).astype("float32")


def _tiny(latent, weights, observation, **kwargs):
    """A built two-layer DEF with wide weight posteriors (a demanding ELBO check)."""
    model = DEF([3, 2], latent, weights, observation, num_examples=10, encoder_units=(4,), **kwargs)
    model.build((None, 5))
    for scale in model.weight_scales:
        scale.assign(tf.fill(scale.shape, -2.0))  # q scales of about 0.13
    if observation == "normal":
        model.observation_scale.assign(tf.fill([5], 0.3))
    return model


def _data(observation):
    rng = np.random.RandomState(1)
    if observation == "poisson":
        return rng.poisson(1.5, (3, 5)).astype("float32")
    if observation == "bernoulli":
        return (rng.rand(3, 5) > 0.5).astype("float32")
    return rng.randn(3, 5).astype("float32")


# -- an independent computation of the ELBO with TFP distributions ------------


def _scale(raw):
    """q's scale: softplus, bent smoothly below 3."""
    return 3.0 * tf.tanh((tf.nn.softplus(raw) + 1e-4) / 3.0)


def _q(family, raw):
    loc = raw[0]
    if family == "gamma":
        return tfd.LogNormal(loc, _scale(raw[1]))
    if family == "normal":
        return tfd.Normal(loc, _scale(raw[1]))
    if family == "poisson":
        return tfd.Poisson(rate=tf.nn.softplus(loc) + 1e-4)
    return tfd.Bernoulli(logits=loc, dtype=tf.float32)


def _p(model, family, eta=None):
    """The model's distribution of a layer (or the data) given `eta`, or its top prior."""
    if eta is None:
        return {
            "gamma": tfd.Gamma(model.prior_shape, model.prior_rate),
            "poisson": tfd.Poisson(rate=model.prior_rate),
            "bernoulli": tfd.Bernoulli(logits=0.0, dtype=tf.float32),
            "normal": tfd.Normal(0.0, 1.0),
        }[family]
    mean = eta if model.positive else tf.nn.softplus(eta)
    mean = tf.maximum(mean, np.exp(-60.0))  # the model's documented floor
    if family == "gamma":
        return tfd.Gamma(model.prior_shape, model.prior_shape / mean)
    if family == "poisson":
        return tfd.Poisson(rate=mean)
    if family == "bernoulli":
        return tfd.Bernoulli(logits=eta, dtype=tf.float32)
    scale = 1.0
    if family == "normal" and eta.shape[-1] == model.num_columns:
        scale = tf.nn.softplus(model.observation_scale) + 1e-4
    return tfd.Normal(eta, scale)


def _reference_elbo(model, x, num_draws, seed=7):
    """Per-document ELBO draws: z ~ q, W ~ q, all densities from TFP."""
    seeds = iter(tfp.random.split_seed(seed, 20))
    raws = model._posterior_raw(tf.constant(x))
    z = [_q(model.latent, raw).sample(num_draws, seed=next(seeds)) for raw in raws]
    log_q = sum(
        tf.reduce_sum(_q(model.latent, raw).log_prob(s), -1) for raw, s in zip(raws, z, strict=True)
    )
    w_family = tfd.LogNormal if model.weight_family == "gamma" else tfd.Normal
    w_prior = (
        tfd.Gamma(model.weight_shape, model.weight_rate)
        if model.weight_family == "gamma"
        else tfd.Normal(0.0, 1.0)
    )
    q_w = [
        w_family(loc, _scale(scale))
        for loc, scale in zip(model.weight_locs, model.weight_scales, strict=True)
    ]
    w = [q.sample(num_draws, seed=next(seeds)) for q in q_w]
    weights_kl = sum(
        tf.reduce_sum(q.log_prob(s) - w_prior.log_prob(s), [1, 2])
        for q, s in zip(q_w, w, strict=True)
    )
    log_p = tf.reduce_sum(_p(model, model.latent).log_prob(z[-1]), -1)
    for index in range(len(z) - 1):
        eta = tf.einsum("nbk,nkm->nbm", z[index + 1], w[index + 1])
        log_p += tf.reduce_sum(_p(model, model.latent, eta).log_prob(z[index]), -1)
    eta = tf.einsum("nbk,nkm->nbm", z[0], w[0])
    log_p += tf.reduce_sum(_p(model, model.observation, eta).log_prob(x), -1)
    return (log_p - log_q - weights_kl[:, None] / model.num_examples).numpy()


@pytest.mark.parametrize(
    "latent, weights, observation",
    [
        ("gamma", "gamma", "poisson"),  # sparse gamma DEF
        ("gamma", "normal", "poisson"),  # softplus link
        ("poisson", "normal", "poisson"),
        ("bernoulli", "normal", "bernoulli"),  # sigmoid belief network
        ("normal", "normal", "normal"),
    ],
)
def test_elbo_is_unbiased_against_an_independent_tfp_computation(latent, weights, observation):
    model = _tiny(latent, weights, observation, prior_shape=0.5, seed=3)
    x = _data(observation)
    reference = _reference_elbo(model, x, num_draws=100000)
    # The model's estimates: each chunk of 10 copies of the 3 documents shares
    # a draw of the weights, so chunks are the independent replicates.
    copies = 8000
    estimates = model.elbo(np.tile(x, (copies, 1)), num_samples=1, batch_size=30).numpy()
    per_chunk = estimates.reshape(copies // 10, 10, 3).mean(1)
    error = np.abs(per_chunk.mean(0) - reference.mean(0))
    standard_error = np.sqrt(
        per_chunk.var(0) / per_chunk.shape[0] + reference.var(0) / reference.shape[0]
    )
    assert np.all(np.isfinite(reference))
    assert np.all(error < 4.5 * standard_error), (error, standard_error)


def test_score_function_gradient_matches_exact_enumeration():
    """Bernoulli latents: the ELBO and its gradient by summing over all 2**3 states."""
    model = DEF(
        [3],
        "bernoulli",
        "normal",
        "bernoulli",
        variational_weights=False,
        encoder_units=(),
        num_samples=20000,
        seed=5,
    )
    model.build((None, 4))
    model.posterior_layers[0].kernel.assign(np.random.RandomState(2).randn(4, 3).astype("float32"))
    model.weight_locs[0].assign(np.random.RandomState(3).randn(3, 4).astype("float32"))
    x = (np.random.RandomState(4).rand(2, 4) > 0.5).astype("float32")
    variables = model.trainable_variables
    states = tf.constant(list(itertools.product([0.0, 1.0], repeat=3)))  # (8, 3)

    with tf.GradientTape() as tape:
        logits = model._posterior_raw(tf.constant(x))[0][0]  # (2, 3)
        q = tfd.Independent(tfd.Bernoulli(logits=logits[:, None], dtype=tf.float32), 1)
        log_q = q.log_prob(states[None])  # (2, 8)
        prior = tf.reduce_sum(tfd.Bernoulli(logits=0.0, dtype=tf.float32).log_prob(states), -1)
        likelihood = tfd.Independent(
            tfd.Bernoulli(logits=states @ model.weight_locs[0], dtype=tf.float32), 1
        ).log_prob(x[:, None])  # (2, 8)
        exact = tf.reduce_sum(tf.exp(log_q) * (likelihood + prior - log_q), -1)
        exact_objective = tf.reduce_mean(exact)
    exact_gradients = tape.gradient(exact_objective, variables)

    with tf.GradientTape() as tape:
        terms = model._terms(tf.constant(x), model.num_samples)
        objective = tf.reduce_mean(terms["surrogate"])
    gradients = tape.gradient(objective, variables)

    np.testing.assert_allclose(tf.reduce_mean(terms["elbo"], 0), exact, atol=0.05)
    for estimate, truth in zip(gradients, exact_gradients, strict=True):
        scale = np.abs(truth.numpy()).max()
        np.testing.assert_allclose(estimate, truth, atol=0.05 * scale + 1e-3)


def test_recovers_the_factors_of_a_one_layer_gamma_poisson_model():
    """Counts from x ~ Poisson(z W): the learned rows of E[W] match the true ones.

    Matching score: cosine similarity between true and learned rows, paired
    by the Hungarian algorithm (factors are identified up to permutation and
    scale); every pair must exceed 0.99.
    """
    rng = np.random.RandomState(0)
    true_weights = np.zeros((3, 30))
    for row in true_weights:
        row[rng.choice(30, 8, replace=False)] = rng.gamma(2.0, 1.0, 8)
    z = rng.gamma(0.5, 20.0, (1000, 3))
    x = rng.poisson(z @ true_weights).astype("float32")
    model = DEF([3], num_examples=1000, encoder_units=(64,), seed=0)
    model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit(x, epochs=100, batch_size=100, verbose=0)
    learned = np.asarray(model.weight_means()[0])

    def normalize(rows):
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    cosine = normalize(true_weights) @ normalize(learned).T
    rows, columns = linear_sum_assignment(-cosine)
    assert np.all(cosine[rows, columns] > 0.99), cosine[rows, columns]
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(
        losses[-1], history.history["reconstruction"][-1] + history.history["kl"][-1], rtol=1e-4
    )


def test_sparse_gamma_underflow_gives_finite_loss_and_gradients():
    """Draws of exp(-120) underflow float32 to 0; densities in log space stay finite."""
    assert np.isinf(tfd.Gamma(0.1, 1.0).log_prob(tf.exp(-120.0)).numpy())  # the hazard
    model = DEF([4, 2], num_examples=10, seed=0)
    model.build((None, 5))
    for layer in model.posterior_layers:
        bias = layer.bias.numpy()
        bias[: bias.size // 2] = -120.0  # q locations of log z
        layer.bias.assign(bias)
    for loc in model.weight_locs:
        loc.assign(tf.fill(loc.shape, -120.0))
    x = _counts()
    with tf.GradientTape() as tape:
        terms = model._terms(tf.constant(x), 4, training=True)
        loss = -tf.reduce_mean(terms["surrogate"]) + terms["weights_kl"]
    assert np.all(terms["draws"][0].value.numpy() == 0.0)  # the draws did underflow
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    for gradient in gradients:
        assert np.all(np.isfinite(gradient.numpy()))
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(x, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_sparse_input_trains_and_evaluates_like_dense():
    x = _counts(n=8)
    results = []
    for data in (x, tf.sparse.from_dense(x)):
        keras.utils.set_random_seed(0)
        model = DEF([3], num_examples=8, seed=1)
        model.compile(keras.optimizers.Adam(1e-2))
        history = model.fit(data, epochs=2, batch_size=4, shuffle=False, verbose=0)
        results.append((history.history["loss"], model.transform(data)[0].numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


def test_transform_components_and_perplexity():
    model = DEF([4, 2], num_examples=6, seed=0)
    model.compile(keras.optimizers.Adam(1e-2))
    x = _counts()
    model.fit(x, epochs=2, verbose=0)
    means = model.transform(x)
    assert [tuple(m.shape) for m in means] == [(6, 4), (6, 2)]
    assert all(np.all(m.numpy() > 0) for m in means)
    top = model.components(top_n=3)
    w0, w1 = (np.asarray(w) for w in model.weight_means())
    np.testing.assert_array_equal(top[0], np.argsort(-w0, 1)[:, :3])
    np.testing.assert_array_equal(top[1], np.argsort(-(w1 @ w0), 1)[:, :3])
    words = model.components(top_n=2, vocabulary=list("abcde"))
    assert words[0][0] == ["abcde"[i] for i in top[0][0][:2]]

    observed, heldout = tdg.datasets.split_document_words(x, 0.5, seed=0)
    perplexity = float(model.perplexity(observed, heldout, num_samples=4000))
    # Reference: p(word) = E_q[rate / sum(rate)] with z ~ q(z | observed), W at its mean.
    z = _q("gamma", model._posterior_raw(tf.constant(observed))[0]).sample(4000, seed=[1, 2])
    rates = tf.einsum("nbk,kv->nbv", z, w0)
    word_probs = tf.reduce_mean(rates / tf.reduce_sum(rates, -1, keepdims=True), 0).numpy()
    reference = np.exp(-(heldout * np.log(word_probs)).sum() / heldout.sum())
    np.testing.assert_allclose(perplexity, reference, rtol=0.01)


def test_config_keras_file_and_xla_fit(tmp_path):
    model = DEF([3, 2], latent="gamma", num_examples=6, encoder_units=(8,), seed=4)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    x = _counts()
    model.fit(x, epochs=2, verbose=0)
    config = model.get_config()
    assert DEF.from_config(config).get_config() == config
    path = tmp_path / "def.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.transform(x), loaded.transform(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(model.weight_means(), loaded.weight_means(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Same seed state: the loaded model draws the same numbers.
    np.testing.assert_allclose(model.elbo(x), loaded.elbo(x), rtol=1e-5)
    loaded.fit(x, epochs=1, verbose=0)


def test_elbo_in_mean_mode_uses_q_means_after_a_sampled_trace():
    # A graph traced while sampling must not be reused in mean mode.
    x = _counts()
    model = DEF([3, 2], latent="gamma", num_examples=6, encoder_units=(8,), seed=4)
    model.build((None, 5))
    fresh = DEF.from_config(model.get_config())
    fresh.build((None, 5))
    fresh.set_weights(model.get_weights())
    sampled = model.elbo(x).numpy()
    with tdg.layers.sampling_mode(model, "mean"):
        mean = model.elbo(x).numpy()
        np.testing.assert_array_equal(model.elbo(x).numpy(), mean)
    with tdg.layers.sampling_mode(fresh, "mean"):
        np.testing.assert_allclose(fresh.elbo(x).numpy(), mean, rtol=1e-5)
    assert not np.allclose(mean, sampled)
    assert not np.allclose(model.elbo(x).numpy(), model.elbo(x).numpy())


def test_export_serves_transform_and_perplexity_without_tfp_deepgen(tmp_path):
    model = DEF([3, 2], num_examples=6, encoder_units=(8,), seed=4)
    model.compile(keras.optimizers.Adam(1e-2))
    x = _counts()
    model.fit(x, epochs=2, verbose=0)
    assert set(tdg.export.signature_outputs(model)) == {
        "serving_default",
        "transform",
        "perplexity",
    }
    export_dir = tdg.export.export_saved_model(model, tmp_path / "def", num_samples=2000)
    observed, heldout = tdg.datasets.split_document_words(x, 0.5, seed=0)
    requests = {
        "serving_default": {"x": x},
        "transform": {"x": x},
        "perplexity": {"x_observed": observed, "x_heldout": heldout},
    }
    served = serve_signatures(export_dir, requests, tmp_path)
    means = model.transform(x)
    for name in ("serving_default", "transform"):
        for index, mean in enumerate(means):
            np.testing.assert_allclose(served[f"{name}/layer_{index + 1}"], mean, rtol=1e-5)
    np.testing.assert_allclose(served["perplexity/num_words"], heldout.sum(1))
    in_process = np.stack(
        [model._heldout_log_prob(observed, heldout, 2000).numpy() for _ in range(5)]
    )
    spread = 4 * in_process.std(0) + 0.02
    assert np.all(np.abs(served["perplexity/log_prob"] - in_process.mean(0)) < spread)
    np.testing.assert_allclose(
        served["perplexity/perplexity"],
        np.exp(-served["perplexity/log_prob"] / heldout.sum(1)),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"layer_sizes": []}, "layer_sizes"),
        ({"layer_sizes": [3, 0]}, "layer_sizes"),
        ({"latent": "beta"}, "latent"),
        ({"weights": "poisson"}, "weights"),
        ({"observation": "gamma"}, "observation"),
        ({"prior_shape": 0.0}, "prior_shape"),
        ({"prior_rate": -1.0}, "prior_rate"),
        ({"weight_shape": float("nan")}, "weight_shape"),
        ({"weight_rate": 0}, "weight_rate"),
        ({"variational_weights": "yes"}, "variational_weights"),
        ({"num_examples": 0}, "num_examples"),
        ({"num_examples": 2.5}, "num_examples"),
        ({"encoder_units": [8, -1]}, "encoder_units"),
        ({"num_samples": 0}, "num_samples"),
        ({"latent": "poisson", "num_samples": 1}, "num_samples"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    arguments = {"layer_sizes": [3], "num_examples": 10, **kwargs}
    with pytest.raises(ValueError, match=argument):
        DEF(**arguments)


def test_bad_data_is_rejected_with_a_clear_error():
    model = DEF([2], num_examples=4, seed=0)
    model.compile("adam")
    with pytest.raises(ValueError, match="non-negative integer counts"):
        model.fit(np.array([[1.0, -1.0]], "float32"), verbose=0)
    with pytest.raises(ValueError, match="non-negative integer counts"):
        model.fit(np.array([[1.5, 1.0]], "float32"), verbose=0)
    with pytest.raises(ValueError, match="2-D"):
        model.fit(np.ones((2, 3, 4), "float32"), verbose=0)
    model.fit(_counts(n=4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="5 columns"):
        model.transform(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="x_heldout"):
        model.perplexity(_counts(n=2), np.full((2, 5), 0.5, "float32"))
    with pytest.raises(ValueError, match="top_n"):
        model.components(top_n=0)
    with pytest.raises(ValueError, match="vocabulary"):
        model.components(vocabulary=["a"])
    bernoulli = DEF([2], observation="bernoulli", num_examples=4, seed=0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        bernoulli.elbo(np.full((2, 3), 2.0, "float32"))
    with pytest.raises(ValueError, match="observation='poisson'"):
        bernoulli.perplexity(np.ones((2, 3)), np.ones((2, 3)))


def test_wide_posteriors_are_capped_and_stay_finite():
    """An unused unit's q drifts towards the sparse gamma prior (log z spread ~10):
    q scales are bent below 3, so draws and losses stay finite."""
    from tfp_deepgen.models import variational_families

    model = DEF([4, 2], num_examples=10, seed=0)
    model.build((None, 5))
    for layer in model.posterior_layers:
        bias = layer.bias.numpy()
        bias[: bias.size // 2] = 20.0  # log z around 20
        bias[bias.size // 2 :] = 100.0  # raw scales far beyond the cap
        layer.bias.assign(bias)
    for scale in model.weight_scales:
        scale.assign(tf.fill(scale.shape, 100.0))
    assert float(variational_families.scale_of(tf.constant(100.0))) <= 3.0
    with tf.GradientTape() as tape:
        terms = model._terms(tf.constant(_counts()), 64, training=True)
        loss = -tf.reduce_mean(terms["surrogate"]) + terms["weights_kl"]
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_inference_steps_raise_each_documents_elbo():
    model = DEF([4, 2], num_examples=6, encoder_units=(8,), seed=2)
    model.compile(keras.optimizers.Adam(1e-2))
    x = _counts()
    model.fit(x, epochs=3, verbose=0)
    encoder_raws = model._local_posterior(tf.constant(x), 0)
    refined_raws = model._local_posterior(tf.constant(x), 200)

    def elbo(raws):
        terms = model._terms(tf.constant(x), 4000, sample_weights=False, raws=raws)
        return tf.reduce_mean(terms["elbo"], 0).numpy()

    assert np.all(elbo(refined_raws) > elbo(encoder_raws) + 0.1)
    refined = model.transform(x, inference_steps=50)
    assert [tuple(m.shape) for m in refined] == [(6, 4), (6, 2)]
    observed, heldout = tdg.datasets.split_document_words(x, 0.5, seed=0)
    assert np.isfinite(float(model.perplexity(observed, heldout, inference_steps=20)))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="inference_steps"):
            model.transform(x, inference_steps=bad)
    discrete = DEF([2], latent="poisson", num_examples=6, seed=0)
    with pytest.raises(ValueError, match="reparameterized"):
        discrete.transform(x, inference_steps=5)


# -- num_examples from the data (issue 18) ------------------------------------


def _fit_def(data, num_examples=None, jit_compile=False, **fit_kwargs):
    keras.utils.set_random_seed(0)
    model = DEF([3], num_examples=num_examples, encoder_units=(4,), seed=1)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    fit_kwargs = {"epochs": 2, "verbose": 0, **fit_kwargs}
    history = model.fit(data, **fit_kwargs)
    return model, history.history["loss"]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_on_an_array_infers_num_examples(jit_compile):
    x = _counts(n=8)
    inferred, losses = _fit_def(x, None, jit_compile, batch_size=4, shuffle=False)
    explicit, explicit_losses = _fit_def(x, 8, jit_compile, batch_size=4, shuffle=False)
    assert inferred.num_examples == 8
    np.testing.assert_allclose(losses, explicit_losses, rtol=1e-6)
    for a, b in zip(inferred.get_weights(), explicit.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    if not jit_compile:  # SparseReorder, used to densify a batch, has no XLA kernel
        sparse, _ = _fit_def(tf.sparse.from_dense(x), batch_size=4)
        assert sparse.num_examples == 8


def test_fit_on_a_batched_dataset_infers_num_examples():
    x = _counts(n=10)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)  # last batch partial
    inferred, losses = _fit_def(dataset)
    explicit, explicit_losses = _fit_def(dataset, 10)
    assert inferred.num_examples == 10
    np.testing.assert_allclose(losses, explicit_losses, rtol=1e-6)
    for a, b in zip(inferred.get_weights(), explicit.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    dropped, _ = _fit_def(tf.data.Dataset.from_tensor_slices(x).batch(4, drop_remainder=True))
    assert dropped.num_examples == 8  # the examples fit sees
    pairs, _ = _fit_def(tf.data.Dataset.from_tensor_slices((x, x)).shuffle(10).batch(3))
    assert pairs.num_examples == 10


def test_fit_holds_out_the_validation_split_from_num_examples():
    model, _ = _fit_def(_counts(n=10), validation_split=0.25, epochs=1)
    assert model.num_examples == 7  # Keras trains on floor(10 * 0.75) rows


def test_data_of_unknown_size_asks_for_num_examples():
    x = _counts(n=8)
    infinite = tf.data.Dataset.from_tensor_slices(x).batch(4).repeat()
    model = DEF([3], encoder_units=(4,), seed=1)
    model.compile(keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="infinite.*`num_examples=`"):
        model.fit(infinite, steps_per_epoch=2, verbose=0)
    unknown = infinite.take(2).filter(lambda batch: True)
    with pytest.raises(ValueError, match="`num_examples=`"):
        model.fit(unknown, verbose=0)
    assert model.num_examples is None
    explicit = DEF([3], num_examples=8, encoder_units=(4,), seed=1)
    explicit.compile(keras.optimizers.Adam(1e-2))
    explicit.fit(infinite, steps_per_epoch=2, verbose=0)
    assert explicit.num_examples == 8


def test_an_explicit_num_examples_wins_over_the_data_size():
    """E.g. a subsample of a larger corpus: the user's N is kept, no error."""
    x = _counts(n=6)
    model, losses = _fit_def(x, 1000, batch_size=6, shuffle=False)
    assert model.num_examples == 1000
    inferred, inferred_losses = _fit_def(x, None, batch_size=6, shuffle=False)
    assert inferred.num_examples == 6
    # A share 1/1000 of the weights' KL instead of 1/6.
    assert losses[0] < inferred_losses[0]


def test_methods_that_need_num_examples_before_fit_raise_clearly():
    x = _counts(n=6)
    model = DEF([3], encoder_units=(4,), seed=1)
    assert model.num_examples is None and model.get_config()["num_examples"] is None
    model.compile(keras.optimizers.Adam(1e-2))
    for method in (model.evaluate, model.predict, model.train_on_batch, model.elbo):
        with pytest.raises(ValueError, match="`num_examples`"):
            method(x)
    # The weights' KL is not part of these: no N needed.
    assert model.transform(x)[0].shape == (6, 3)
    assert model.log_likelihood(x, num_samples=4).shape == (6,)
    observed, heldout = tdg.datasets.split_document_words(x, 0.5, seed=0)
    assert np.isfinite(float(model.perplexity(observed, heldout, num_samples=4)))
    model.fit(x, epochs=1, verbose=0)  # the failed calls left the model usable
    assert model.num_examples == 6
    assert np.isfinite(model.evaluate(x, verbose=0, return_dict=True)["loss"])
    assert np.all(np.isfinite(model.elbo(x).numpy()))
    points = DEF([3], variational_weights=False, encoder_units=(4,), seed=1)
    points.compile(keras.optimizers.Adam(1e-2))
    # No weights' KL to spread: no N needed.
    assert np.isfinite(points.evaluate(x, verbose=0, return_dict=True)["loss"])


def test_an_inferred_num_examples_is_saved_and_kept(tmp_path):
    """The first fit fixes N; the config and a `.keras` file keep it, so a
    reloaded model continues with the same objective, whatever data it sees next."""
    x = _counts(n=6)
    model, _ = _fit_def(x, jit_compile=True)
    assert model.get_config()["num_examples"] == 6
    path = tmp_path / "def.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.num_examples == 6
    np.testing.assert_allclose(model.elbo(x), loaded.elbo(x), rtol=1e-5)
    more = _counts(n=12, seed=3)
    for fitted in (model, loaded):
        fitted.fit(more, epochs=1, verbose=0)
        assert fitted.num_examples == 6
    # Setting it anew drops the traced graphs that hold the old value.
    loaded.num_examples = 12
    assert loaded.train_function is None and loaded._evaluation_graph is None
    with pytest.raises(ValueError, match="num_examples"):
        loaded.num_examples = -1
