"""Deep Exponential Families (Ranganath et al. 2015) as a `keras.Model` trained with `fit(x)`."""

import inspect
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.models import exponential_families as ef
from tfp_deepgen.models import variational_families as vf
from tfp_deepgen.models._batches import in_batches
from tfp_deepgen.models._fit_data import count_examples
from tfp_deepgen.models.latent import LatentSampler

__all__ = ["DeepExponentialFamily"]

_DISCRETE_NUM_SAMPLES = 8


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DeepExponentialFamily(keras.Model):
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
                kernel_initializer=_PosteriorKernelInitializer(seed=_offset(seed, 100 + i)),
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

    @property
    def num_examples(self):
        """Training documents the weights' KL is spread over (None until known)."""
        return self._num_examples

    @num_examples.setter
    def num_examples(self, value):
        if value is not None:
            value = _validation.positive_int("num_examples", value)
        if value != getattr(self, "_num_examples", None):
            # Traced graphs hold N as a constant: trace them again.
            self.train_function = self.test_function = self.predict_function = None
            self._evaluation_graph = None
        self._num_examples = value

    def fit(self, x=None, *args, **kwargs):
        if isinstance(x, np.ndarray | tf.Tensor | tf.SparseTensor):
            self._check_data(x, "x")
        if self.variational_weights and self.num_examples is None:
            arguments = inspect.signature(keras.Model.fit).bind(self, x, *args, **kwargs).arguments
            validation_split = arguments.get("validation_split", 0.0)
            if arguments.get("validation_data") is not None:
                validation_split = 0.0  # Keras ignores the split then
            self.num_examples = count_examples(x, validation_split)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._require_num_examples("evaluate")
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self._require_num_examples("predict")
        return super().predict(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._require_num_examples("train_on_batch")
        return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        self._require_num_examples("test_on_batch")
        return super().test_on_batch(*args, **kwargs)

    def predict_on_batch(self, *args, **kwargs):
        self._require_num_examples("predict_on_batch")
        return super().predict_on_batch(*args, **kwargs)

    # -- the model's pieces -------------------------------------------------

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

    def _require_num_examples(self, method):
        """A ValueError for `method` if the weights' KL share cannot be computed yet.

        Checked before Keras builds or traces anything: a failure inside its
        symbolic build would leave half-initialized variables behind.
        """
        if self.variational_weights and self.num_examples is None:
            raise ValueError(
                f"`{method}` needs `num_examples` (the number of training documents, over "
                "which the weights' KL is spread), which is not known yet: `fit(x)` sets it "
                "from its data. Fit first, pass num_examples=... to DeepExponentialFamily, "
                "or use variational_weights=False for point estimates."
            )

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
        x = _dense(x)
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

    # -- public methods ------------------------------------------------------

    def transform(self, x, inference_steps=0):
        """Posterior mean of each latent layer given `x`: a list, bottom layer first.

        Args:
            x: Data, shape `(documents, columns)`.
            inference_steps: Steps of per-document optimization of q after the
                encoder's guess (see `perplexity`); 0 uses the encoder alone.
        """
        x = self._checked(x, "x")
        return [vf.mean(self.latent, raw) for raw in self._local_posterior(x, inference_steps)]

    def _local_posterior(self, x, inference_steps):
        """q's raw parameters for `x`: the encoder's, refined for `inference_steps` steps."""
        if (
            isinstance(inference_steps, bool)
            or not isinstance(inference_steps, numbers.Integral)
            or inference_steps < 0
        ):
            raise ValueError(
                f"`inference_steps` must be an integer >= 0. Received: "
                f"inference_steps={inference_steps!r}"
            )
        if not self.built:
            self.build(tuple(x.shape))
        raws = self._posterior_raw(x)
        if inference_steps == 0:
            return raws
        return self._refine(x, raws, int(inference_steps))

    def _refine(self, x, raws, steps, learning_rate=0.05, num_samples=8):
        """Per-document q parameters optimized by Adam on each document's ELBO.

        Starts from the encoder's output (semi-amortized inference, Kim et al.
        2018), with the weights at their posterior mean: it closes the gap
        between the encoder's guess and the best q for each document, which
        is widest for inputs unlike the training documents (such as the
        observed halves of document completion).
        """
        if not self.reparameterized:
            raise ValueError(
                f"`inference_steps` needs reparameterized latents (gamma or normal); this "
                f"model has latent={self.latent!r}."
            )
        variables = [[keras.Variable(part, trainable=True) for part in raw] for raw in raws]
        flat = [v for raw in variables for v in raw]
        optimizer = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                current = [[tf.convert_to_tensor(v) for v in raw] for raw in variables]
                terms = self._terms(
                    x, num_samples, sample_weights=False, raws=current, weights_share=False
                )
                objective = tf.reduce_sum(terms["surrogate"])
            gradients = tape.gradient(objective, flat)
            optimizer.apply_gradients(zip([-g for g in gradients], flat, strict=True))

        for _ in range(steps):
            step()
        return [[tf.convert_to_tensor(v) for v in raw] for raw in variables]

    def weight_means(self):
        """Posterior means (or point estimates) of the weight matrices, bottom first.

        Entry 0 has shape `(layer_sizes[0], num_columns)`, entry l
        `(layer_sizes[l], layer_sizes[l - 1])`.
        """
        draws, _ = self._weight_draws(sample=False)
        return [draw.value for draw in draws]

    def components(self, top_n=10, vocabulary=None):
        """The observation columns (e.g. words) each unit of each layer weighs most.

        A unit of layer 1 is its row of E[W_0]; a unit of layer l is its row
        of the product E[W_{l-1}] ... E[W_0], its expected effect on the data.

        Args:
            top_n: How many columns per unit.
            vocabulary: Optional names of the columns; then names are returned.

        Returns:
            A list over layers of arrays `(units, top_n)` of column indices
            (or lists of names), largest first.
        """
        top_n = _validation.positive_int("top_n", top_n)
        if vocabulary is not None and len(vocabulary) != self.num_columns:
            raise ValueError(
                f"`vocabulary` must name all {self.num_columns} columns; it has "
                f"{len(vocabulary)} entries."
            )
        means = [np.asarray(w) for w in self.weight_means()]
        effect, result = None, []
        for weights in means:
            effect = weights if effect is None else weights @ effect
            top = np.argsort(-effect, axis=1)[:, :top_n]
            if vocabulary is not None:
                top = [[vocabulary[i] for i in row] for row in top]
            result.append(top)
        return result

    def elbo(self, x, num_samples=1, batch_size=None):
        """Per-document ELBO, the weights' KL share included, with weights drawn from q."""
        self._require_num_examples("elbo")
        return self._evaluate(x, num_samples, batch_size, "elbo")

    def log_likelihood(self, x, num_samples=1000, batch_size=None):
        """Importance-sampled log p(x | W) per document at the weights' posterior mean.

        `log (1/k) sum_i p(x, z_i | W) / q(z_i | x)` with k = `num_samples`
        draws from the encoder's q: a lower bound in expectation that
        tightens as k grows.
        """
        return self._evaluate(x, num_samples, batch_size, "log_likelihood")

    def perplexity(
        self, x_observed, x_heldout, num_samples=100, inference_steps=0, batch_size=None
    ):
        """Held-out perplexity by document completion (Poisson observations).

        q(z | x_observed) comes from the encoder, or with `inference_steps`
        > 0 from that many Adam steps (learning rate 0.05, 8 draws) on each
        document's ELBO starting there; each held-out word's probability is
        `E_q[rate_v / sum_w rate_w]`, averaged over `num_samples` draws of z
        at the weights' posterior mean. Returns
        `exp(-sum log p(held-out words) / number of held-out words)`.

        An encoder trained on whole documents sees only halves here; a few
        hundred inference steps close most of that gap (gamma and normal
        latents).
        """
        if self.observation != "poisson":
            raise ValueError(
                "`perplexity` needs word counts (observation='poisson'); this model has "
                f"observation={self.observation!r}."
            )
        x_observed = self._checked(x_observed, "x_observed")
        x_heldout = self._checked(x_heldout, "x_heldout")
        if x_observed.shape != x_heldout.shape:
            raise ValueError(
                f"`x_observed` and `x_heldout` must have the same shape; got "
                f"{tuple(x_observed.shape)} and {tuple(x_heldout.shape)}."
            )
        if inference_steps:
            raws = self._local_posterior(x_observed, inference_steps)
            _validation.positive_int("num_samples", num_samples)
            log_probs = self._heldout_log_prob(x_observed, x_heldout, num_samples, raws)
        else:
            log_probs = self._evaluate(
                x_observed, num_samples, batch_size, "heldout", extra=x_heldout
            )
        total = tf.reduce_sum(x_heldout)
        return tf.exp(-tf.reduce_sum(log_probs) / total)

    def _heldout_log_prob(self, x_observed, x_heldout, num_samples, raws=None):
        """Per-document log p(held-out words | observed words)."""
        terms = self._terms(
            x_observed, num_samples, sample_weights=False, raws=raws, weights_share=False
        )
        log_rate = self._observation_parameter(terms["draws"][0], terms["weights"])
        word_probs = tf.reduce_mean(tf.nn.softmax(log_rate, -1), 0)
        return tf.reduce_sum(x_heldout * tf.math.log(word_probs + 1e-30), -1)

    def _evaluate(self, x, num_samples, batch_size, kind, extra=None):
        num_samples = _validation.positive_int("num_samples", num_samples)
        if batch_size is None:
            batch_size = max(1, 2**14 // num_samples)
        batch_size = _validation.positive_int("batch_size", batch_size)
        x = self._checked(x, "x")
        if not self.built:
            self.build(tuple(x.shape))
        if getattr(self, "_evaluation_graph", None) is None:

            def evaluate(x, extra, num_samples, kind):
                if kind == "heldout":
                    return self._heldout_log_prob(x, extra, num_samples)
                if kind == "elbo":
                    terms = self._terms(x, num_samples)
                    return tf.reduce_mean(terms["elbo"], 0) - terms["weights_kl"]
                terms = self._terms(x, num_samples, sample_weights=False, weights_share=False)
                return tf.reduce_logsumexp(terms["elbo"], 0) - math.log(num_samples)

            self._evaluation_graph = tf.function(evaluate, jit_compile=True, reduce_retracing=True)
        return in_batches(self._evaluation_graph, x, extra, batch_size, num_samples, kind)

    def _checked(self, x, argument):
        x = _dense(tf.convert_to_tensor(x) if not isinstance(x, tf.SparseTensor) else x)
        x = tf.cast(x, "float32")
        self._check_data(x, argument)
        return x

    def _check_data(self, x, argument):
        """A ValueError naming `argument` if `x` cannot be data of this model."""
        values = x.values if isinstance(x, tf.SparseTensor) else x
        values = np.asarray(values)
        rank = len(x.shape)
        if rank != 2:
            raise ValueError(
                f"`{argument}` must be a 2-D (documents, columns) matrix; got shape "
                f"{tuple(x.shape)}."
            )
        if getattr(self, "num_columns", None) is not None and x.shape[-1] != self.num_columns:
            raise ValueError(
                f"`{argument}` must have {self.num_columns} columns, as in training; got "
                f"{x.shape[-1]}."
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"`{argument}` must be finite.")
        if self.observation == "poisson" and (
            np.any(values < 0) or np.any(values != np.round(values))
        ):
            raise ValueError(
                f"`{argument}` must hold non-negative integer counts for a Poisson "
                "observation model."
            )
        if self.observation == "bernoulli" and np.any((values != 0) & (values != 1)):
            raise ValueError(f"`{argument}` must hold only 0 and 1 for a Bernoulli observation.")

    # -- serving -----------------------------------------------------------

    def serving_endpoints(self, num_samples):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        - `transform` and `serving_default`: `x` -> `layer_1` ... `layer_L`,
          the posterior mean of each latent layer.
        - `perplexity` (Poisson observations): `x_observed`, `x_heldout` ->
          per document `log_prob` (of the held-out words, from `num_samples`
          draws), `num_words` and `perplexity`.
        """
        num_samples = _validation.positive_int("num_samples", num_samples)
        if not self.built:
            raise ValueError("Fit or build the model before exporting it.")
        spec = tf.TensorSpec((None, self.num_columns), tf.float32, name="x")
        layer_names = tuple(f"layer_{i + 1}" for i in range(len(self.layer_sizes)))

        def transform(x):
            means = [vf.mean(self.latent, raw) for raw in self._posterior_raw(x)]
            return dict(zip(layer_names, means, strict=True))

        endpoints = {
            "serving_default": (transform, [spec], layer_names),
            "transform": (transform, [spec], layer_names),
        }
        if self.observation == "poisson":

            def perplexity(x_observed, x_heldout):
                log_prob = self._heldout_log_prob(x_observed, x_heldout, num_samples)
                num_words = tf.reduce_sum(x_heldout, -1)
                return {
                    "log_prob": log_prob,
                    "num_words": num_words,
                    "perplexity": tf.exp(-log_prob / tf.maximum(num_words, 1.0)),
                }

            endpoints["perplexity"] = (
                perplexity,
                [
                    tf.TensorSpec((None, self.num_columns), tf.float32, name="x_observed"),
                    tf.TensorSpec((None, self.num_columns), tf.float32, name="x_heldout"),
                ],
                ("log_prob", "num_words", "perplexity"),
            )
        return endpoints

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


def _dense(x):
    """`x` as a dense float32 tensor (a `tf.SparseTensor` is densified)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.sparse.reorder(x))
    return tf.cast(x, "float32")
