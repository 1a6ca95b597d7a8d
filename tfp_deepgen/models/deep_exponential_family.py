"""Deep Exponential Families (Ranganath et al. 2015) as a `keras.Model` trained with `fit(x)`."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.models import exponential_families as ef
from tfp_deepgen.models import variational_families as vf
from tfp_deepgen.models.deep_exponential_family_data import DocumentData, dense_float32
from tfp_deepgen.models.deep_exponential_family_inference import DocumentInference
from tfp_deepgen.models.latent import LatentSampler

__all__ = ["DeepExponentialFamily"]

_DISCRETE_NUM_SAMPLES = 8


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DeepExponentialFamily(DocumentData, DocumentInference, keras.Model):
    """Deep Exponential Family (Ranganath et al. 2015) with amortized variational inference.

    Layers of latent variables sit above the observations. Layer sizes run
    from the bottom (next to the data) to the top. The top layer draws from a
    fixed prior; every other layer, and the data, draw from an exponential
    family whose parameter is `eta = z_{l+1} W_l`, the layer above times a
    weight matrix. The sparse gamma DEF over word counts is the default:

        z_L ~ Gamma(prior_shape, prior_rate)
        z_l ~ Gamma(prior_shape, prior_shape / (z_{l+1} W_l))   (mean z_{l+1} W_l)
        x   ~ Poisson(z_1 W_0),   W ~ Gamma(weight_shape, weight_rate)

    When latents and weights are non-negative (gamma weights, and gamma,
    Poisson or Bernoulli latents) a gamma or Poisson mean is `eta` itself;
    otherwise it is `softplus(eta)`. Bernoulli layers take `eta` as logits
    (with Normal weights, a sigmoid belief network) and Normal layers as the
    mean (unit variance; a Normal observation learns one scale per column).
    Top-layer priors: Gamma(prior_shape, prior_rate), Poisson(prior_rate),
    Bernoulli(1/2) and N(0, 1).

    Inference is amortized: an encoder network (on `log1p(x)` for count data,
    each hidden layer batch-normalized as in Srivastava & Sutton's ProdLDA,
    synchronized across replicas) gives each document's q over every layer,
    independent across layers and units. Without the normalization the
    encoder's shared offset lets one unit explain every document early on and
    the others die; with it, the factors of a known gamma-Poisson model are
    recovered (`tests/test_deep_exponential_family.py`).

    Gamma latents get a log-normal q and Normal latents a Normal q, both
    reparameterized; Poisson and Bernoulli latents get a q of their own
    family and the score-function (BBVI) gradient with a leave-one-out
    baseline over the `num_samples` draws as control variate. Weights get a
    log-normal (gamma weights) or Normal q whose KL counts `1/num_examples`
    per document, or with `variational_weights=False` are point-estimated by
    maximum likelihood. All gamma quantities are sampled and scored in log
    space, so the sparse shape 0.1, whose float32 draws underflow to 0, gives
    finite losses and gradients.

    Inside `tdg.layers.sampling_mode(model, "mean")` every draw is replaced
    by q's mean (a deterministic evaluation of the same objective).

    `fit(x)` takes an N x V matrix (dense, or a `tf.SparseTensor` densified a
    batch at a time) and minimizes the negative ELBO per document. It logs
    `loss`, `reconstruction` (`-E_q log p(x|z, W)`) and `kl` (the local KL
    plus the weights' share). The loss goes in through `add_loss`, so
    compile with an optimizer and no loss.

    Args:
        layer_sizes: Units per latent layer, bottom to top.
        latent: `"gamma"`, `"poisson"`, `"bernoulli"` or `"normal"`.
        weights: `"gamma"` (non-negative) or `"normal"`.
        observation: `"poisson"`, `"bernoulli"` or `"normal"`.
        prior_shape: Shape of every gamma latent layer (0.1: sparse gamma).
        prior_rate: Rate of a gamma top layer, or a Poisson top layer's mean.
        weight_shape: Shape of the gamma weight prior.
        weight_rate: Rate of the gamma weight prior.
        variational_weights: Fit a q over the weights (else point estimates).
        num_examples: Number of training documents, over which the weights'
            KL is spread (variational weights). By default the first `fit`
            sets it from its data: the rows of `x` less a `validation_split`,
            or the documents of a finite `tf.data.Dataset` (counted in one
            pass when its last batch may be partial). From then on it is
            kept, like a value passed here: later fits use it, `get_config`
            and `.keras` files save it, so a reloaded model continues with
            the same N. A value passed here wins even where it differs from
            the data's size (e.g. for a subsample of a larger corpus).
            Needed explicitly only for data of unknown size (an infinite or
            unknown-length dataset, a generator), or for `evaluate`,
            `predict`, `train_on_batch` or `elbo` before any `fit`.
        encoder_units: Hidden layer sizes of the encoder.
        num_samples: Draws of the latents per document and step (default 1,
            or 8 for Poisson and Bernoulli latents, whose score-function
            gradient needs at least 2).
        seed: Seed of all draws.

    Example:

    >>> import numpy as np, tfp_deepgen as tdg
    >>> counts = np.random.RandomState(0).poisson(2.0, (64, 30)).astype("float32")
    >>> model = tdg.models.DeepExponentialFamily([4, 2], seed=0)
    >>> model.compile("adam")
    >>> history = model.fit(counts, epochs=1, verbose=0)
    >>> model.num_examples  # from the data
    64
    >>> sorted(history.history)
    ['kl', 'loss', 'reconstruction']
    >>> [tuple(z.shape) for z in model.transform(counts)]
    [(64, 4), (64, 2)]
    """

    def __init__(
        self,
        layer_sizes=(100, 30, 15),
        latent="gamma",
        weights="gamma",
        observation="poisson",
        prior_shape=0.1,
        prior_rate=0.1,
        weight_shape=0.1,
        weight_rate=0.3,
        variational_weights=True,
        num_examples=None,
        encoder_units=(256,),
        num_samples=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.layer_sizes = _positive_ints("layer_sizes", layer_sizes, allow_empty=False)
        self.latent = _validation.one_of("latent", latent, ef.LATENT_FAMILIES)
        self.weight_family = _validation.one_of("weights", weights, ef.WEIGHT_FAMILIES)
        self.observation = _validation.one_of("observation", observation, ef.OBSERVATION_FAMILIES)
        self.prior_shape = _validation.positive_float("prior_shape", prior_shape)
        self.prior_rate = _validation.positive_float("prior_rate", prior_rate)
        self.weight_shape = _validation.positive_float("weight_shape", weight_shape)
        self.weight_rate = _validation.positive_float("weight_rate", weight_rate)
        self.variational_weights = _validation.boolean("variational_weights", variational_weights)
        self.num_examples = num_examples
        self.encoder_units = _positive_ints("encoder_units", encoder_units, allow_empty=True)
        self.reparameterized = self.latent in vf.REPARAMETERIZED
        if num_samples is None:
            num_samples = 1 if self.reparameterized else _DISCRETE_NUM_SAMPLES
        self.num_samples = _validation.positive_int("num_samples", num_samples)
        if not self.reparameterized and self.num_samples < 2:
            raise ValueError(
                f"`num_samples` must be >= 2 for {self.latent} latents: their score-function "
                f"gradient uses the other draws as its baseline. Received: "
                f"num_samples={num_samples!r}"
            )
        self.seed = _validation.seed("seed", seed)
        self.positive = self.weight_family == "gamma" and self.latent in ef.POSITIVE_FAMILIES
        self.sampler = LatentSampler(seed=self.seed, name="sampler")
        self.encoder_layers = [
            keras.layers.Dense(units, activation="softplus", name=f"encoder_{i}")
            for i, units in enumerate(self.encoder_units)
        ]
        self.encoder_norms = [
            keras.layers.BatchNormalization(synchronized=True, name=f"encoder_{i}_normalization")
            for i in range(len(self.encoder_units))
        ]
        num_parameters = vf.num_parameters(self.latent)
        self.posterior_layers = [
            keras.layers.Dense(
                num_parameters * size,
                kernel_initializer=_PosteriorKernelInitializer(seed=_offset(self.seed, 100 + i)),
                bias_initializer=_posterior_bias(self.latent, size),
                name=f"posterior_{i + 1}",
            )
            for i, size in enumerate(self.layer_sizes)
        ]
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    # -- the Keras model -----------------------------------------------------

    def build(self, input_shape):
        num_columns = input_shape[-1]
        if num_columns is None:
            raise ValueError("The number of columns of `x` must be known to build the model.")
        self.num_columns = int(num_columns)
        features = self.num_columns
        for dense, normalization in zip(self.encoder_layers, self.encoder_norms, strict=True):
            dense.build((None, features))
            features = dense.units
            normalization.build((None, features))
        for layer in self.posterior_layers:
            layer.build((None, features))

        # weight_locs[0] maps layer 1 to the data; weight_locs[l] layer l+1 to layer l.
        sizes = [*self.layer_sizes]
        below = [self.num_columns, *sizes[:-1]]
        self.weight_locs, self.weight_scales = [], []
        for index, (rows, columns) in enumerate(zip(sizes, below, strict=True)):
            self.weight_locs.append(
                self.add_weight(
                    shape=(rows, columns),
                    initializer=self._weight_initializer(index, columns),
                    name=f"weights_{index}_loc",
                )
            )
            if self.variational_weights:
                self.weight_scales.append(
                    self.add_weight(
                        shape=(rows, columns),
                        initializer=keras.initializers.Constant(-4.0),
                        name=f"weights_{index}_scale",
                    )
                )
        if self.observation == "normal":
            self.observation_scale = self.add_weight(
                shape=(self.num_columns,),
                initializer=keras.initializers.Constant(0.5413),  # softplus -> 1
                name="observation_scale",
            )
        self.built = True

    def _weight_initializer(self, index, columns):
        seed = _offset(self.seed, 1000 + index)
        if self.weight_family == "gamma":
            # log W around -log(columns): each unit starts as a spread-out
            # profile over the layer below, noisy to break symmetry.
            return keras.initializers.RandomNormal(-math.log(columns), 0.5, seed=seed)
        return keras.initializers.RandomNormal(0.0, 1.0 / math.sqrt(columns), seed=seed)

    def call(self, inputs, training=None):
        terms = self._terms(inputs, self.num_samples, training=training)
        self.add_loss(-tf.reduce_mean(terms["surrogate"]) + terms["weights_kl"])
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])
        return terms["posterior_means"][0]

    @property
    def metrics(self):
        return [*super().metrics, self.reconstruction_tracker, self.kl_tracker]

    # -- the model: encoder, weights and ELBO ----------------------------------

    def _posterior_raw(self, x, training=False):
        """Raw parameters of q(z_l | x) for each layer, bottom to top."""
        features = tf.math.log1p(x) if self.observation == "poisson" else x
        for dense, normalization in zip(self.encoder_layers, self.encoder_norms, strict=True):
            features = normalization(dense(features), training=training)
        raws = []
        for layer in self.posterior_layers:
            raws.append(tf.split(layer(features), vf.num_parameters(self.latent), axis=-1))
        return raws

    def _weight_draws(self, sample):
        """Draws (or with `sample=False` posterior means) of the weights, and their KL.

        The KL is summed over the weights, not yet divided among documents;
        at the means it is the one-point value of `log q - log p`.
        """
        draws, kl = [], tf.constant(0.0)
        for index, loc in enumerate(self.weight_locs):
            raw = [loc, self.weight_scales[index]] if self.variational_weights else [loc]
            if not self.variational_weights:
                draws.append(vf.point(self.weight_family, raw))
                continue
            seed = self.sampler.next_seed() if sample else None
            draw, log_q = vf.sample(self.weight_family, raw, None, seed, at_mean=not sample)
            log_p = ef.log_prob(
                self.weight_family, draw, self._weight_prior_parameter(), shape=self.weight_shape
            )
            draws.append(draw)
            kl += tf.reduce_sum(log_q - log_p)
        return draws, kl

    def _weights_kl_share(self, weights_kl):
        """Each document's share `weights_kl / num_examples` of the weights' KL."""
        if not self.variational_weights:
            return tf.constant(0.0)
        self._require_num_examples("call")
        return weights_kl / self.num_examples

    def _weight_prior_parameter(self):
        if self.weight_family == "gamma":
            return math.log(self.weight_shape / self.weight_rate)
        return 0.0

    def _top_parameter(self):
        if self.latent == "gamma":
            return math.log(self.prior_shape / self.prior_rate)
        if self.latent == "poisson":
            return math.log(self.prior_rate)
        return 0.0

    def _observation_parameter(self, bottom, weights):
        return ef.child_parameter(self.observation, bottom, weights[0], self.positive)

    def _observation_log_prob(self, x, parameter):
        scale = None
        if self.observation == "normal":
            scale = tf.nn.softplus(self.observation_scale) + 1e-4
        return tf.reduce_sum(ef.log_prob(self.observation, x, parameter, scale=scale), -1)

    def _terms(
        self, x, num_samples, training=False, sample_weights=True, raws=None, weights_share=True
    ):
        """Per-document ELBO pieces from `num_samples` draws of the latents.

        `raws` replaces the encoder's q parameters (see `_refine`).
        `weights_share=False` leaves the weights' KL share (which needs
        `num_examples`) out of `weights_kl` and `kl`, for the callers that
        use neither.
        """
        x = dense_float32(x)
        if raws is None:
            raws = self._posterior_raw(x, training)
        sample = self.sampler.sampling_enabled
        weights, weights_kl = self._weight_draws(sample_weights and sample)
        draws, log_q = [], 0.0
        for raw in raws:
            seed = self.sampler.next_seed() if sample else None
            draw, layer_log_q = vf.sample(self.latent, raw, num_samples, seed, at_mean=not sample)
            draws.append(draw)
            log_q += tf.reduce_sum(layer_log_q, -1)  # (k, batch)
        log_p = 0.0
        for index in reversed(range(len(draws))):
            if index == len(draws) - 1:
                parameter = self._top_parameter()
            else:
                parameter = ef.child_parameter(
                    self.latent, draws[index + 1], weights[index + 1], self.positive
                )
            layer_log_p = ef.log_prob(self.latent, draws[index], parameter, shape=self.prior_shape)
            log_p += tf.reduce_sum(layer_log_p, -1)
        log_likelihood = self._observation_log_prob(
            x[None], self._observation_parameter(draws[0], weights)
        )
        local_kl = log_q - log_p
        elbo = log_likelihood - local_kl  # (k, batch)
        surrogate = elbo
        if not self.reparameterized:
            # Score-function gradient with the leave-one-out mean as baseline;
            # adds exactly zero to the value.
            baseline = (tf.reduce_sum(elbo, 0, keepdims=True) - elbo) / (num_samples - 1)
            signal = tf.stop_gradient(elbo - baseline)
            surrogate = elbo + signal * (log_q - tf.stop_gradient(log_q))
        per_document_weights_kl = (
            self._weights_kl_share(weights_kl) if weights_share else tf.constant(0.0)
        )
        return {
            "elbo": elbo,  # (k, batch), without the weights' KL
            "surrogate": tf.reduce_mean(surrogate, 0),
            "weights_kl": per_document_weights_kl,
            "reconstruction": -tf.reduce_mean(log_likelihood, 0),
            "kl": tf.reduce_mean(local_kl, 0) + per_document_weights_kl,
            "posterior_means": [vf.mean(self.latent, raw) for raw in raws],
            "draws": draws,
            "weights": weights,
        }

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer_sizes": list(self.layer_sizes),
                "latent": self.latent,
                "weights": self.weight_family,
                "observation": self.observation,
                "prior_shape": self.prior_shape,
                "prior_rate": self.prior_rate,
                "weight_shape": self.weight_shape,
                "weight_rate": self.weight_rate,
                "variational_weights": self.variational_weights,
                "num_examples": self.num_examples,
                "encoder_units": list(self.encoder_units),
                "num_samples": self.num_samples,
                "seed": self.seed,
            }
        )
        return config


def _positive_ints(name, value, allow_empty):
    allowed = "a list of positive integers" + ("" if allow_empty else " (at least one)")
    try:
        values = list(value)
    except TypeError:
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}") from None
    if (not values and not allow_empty) or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0 for v in values
    ):
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")
    return tuple(int(v) for v in values)


def _offset(seed, offset):
    """A distinct initializer seed derived from the model's (None stays None)."""
    return None if seed is None else seed + offset


class _PosteriorKernelInitializer(keras.initializers.Initializer):
    """Normal kernels with std `0.5 / sqrt(fan_in)`.

    Behind batch-normalized features this gives each document's q a spread
    of about 0.5 around the bias, as random per-document starts would in
    non-amortized inference: enough to break the symmetry between units,
    small enough that no unit starts out explaining every document.
    """

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        stddev = 0.5 / math.sqrt(shape[0])
        return keras.initializers.RandomNormal(0.0, stddev, seed=self.seed)(shape, dtype)

    def get_config(self):
        return {"seed": self.seed}


def _posterior_bias(family, size):
    """Biases of a posterior layer: a small initial scale for log-normal and Normal q."""
    if family in vf.REPARAMETERIZED:
        return keras.initializers.Constant(np.concatenate([np.zeros(size), np.full(size, -2.0)]))
    return "zeros"
