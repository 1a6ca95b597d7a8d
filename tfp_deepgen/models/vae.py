"""The variational autoencoder as a `keras.Model` trained with plain `fit(x)`."""

import copy
import functools

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen._untracked import Untracked
from tfp_deepgen.heads import final_head
from tfp_deepgen.layers.base import sampling_states
from tfp_deepgen.models import _fit_data, latent
from tfp_deepgen.models._batches import in_batches
from tfp_deepgen.models._labels import network_inputs

__all__ = ["VAE"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class VAE(keras.Model):
    """Variational autoencoder (Kingma & Welling 2014), with the IWAE bound (Burda et al. 2016).

    The encoder is any Keras model mapping `x` to the parameters of q(z|x);
    it ends in a `tdg.heads.IndependentNormal(latent_dim)` head (diagonal
    Normal) or `tdg.heads.MultivariateNormalTriL(latent_dim)` (full
    covariance). The decoder is any Keras model mapping `z` to the
    parameters of p(x|z) and ends in a head over the flattened `x`
    (`IndependentBernoulli` for binary images, `IndependentNormal`, ...).

    `fit(x)` maximizes, per example, the ELBO
    `E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))`, or with
    `num_importance_samples=k > 1` the IWAE bound
    `E[log (1/k) sum_i p(x|z_i) p(z_i)^beta / q(z_i|x)^beta]`, which is
    tighter and reaches log p(x) as k grows (`bound="elbo"` averages the
    ELBO over the k draws instead). It logs `loss` (the negative
    bound per example), `reconstruction` (`-E_q log p(x|z)`) and `kl`. The
    bound is added with `add_loss`, so compile with an optimizer and no loss;
    `sample_weight` is not applied to it.

    A linear decoder with an `IndependentNormal(scale="homoscedastic")`
    head is factor analysis, and with one shared noise scale probabilistic
    PCA (Tipping & Bishop 1999): the ELBO of a linear VAE reaches their exact
    log-likelihood (see `tests/test_vae.py`).

    Calling the model on `x` returns the decoder's parameters for one draw
    z ~ q(z|x) (a stochastic reconstruction). Inside
    `tdg.layers.sampling_mode(vae, "mean")`, z is the posterior mean.

    Args:
        encoder: Keras model, `x -> params of q(z|x)`.
        decoder: Keras model, `z -> params of p(x|z)`.
        prior: p(z), independent over the latent coordinates: a
            `tdg.priors.Normal` (default N(0, 1)) or `ScaleMixtureNormal`.
        beta: Weight of the KL term (beta-VAE, Higgins et al. 2017), >= 0.
        num_importance_samples: k >= 1 samples per example in training.
        analytic_kl: Use the closed-form KL (needs a Normal prior); else the
            one-sample estimate `log q(z|x) - log p(z)`. The IWAE bound does
            not use it: it is made of the sampled log-weights.
        bound: With k > 1, `"iwae"` (default) trains the IWAE bound and
            `"elbo"` the ELBO averaged over the k draws (Burda et al.'s
            "VAE, k samples"), a lower-variance estimate of the same ELBO.
        seed: Seed of the latent draws.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> q, p = tdg.heads.IndependentNormal(2), tdg.heads.IndependentBernoulli(6)
    >>> encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(q.input_size), q])
    >>> decoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(p.input_size), p])
    >>> vae = tdg.models.VAE(encoder, decoder, seed=0)
    >>> vae.compile("adam")
    >>> x = (np.random.RandomState(0).rand(32, 6) > 0.5).astype("float32")
    >>> history = vae.fit(x, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['kl', 'loss', 'reconstruction']
    >>> tuple(vae.log_likelihood(x, num_samples=10).shape)
    (32,)
    """

    # Config entries holding serialized Keras objects, rebuilt by `from_config`.
    nested_objects = ("encoder", "decoder", "prior")

    def __init__(
        self,
        encoder,
        decoder,
        prior=None,
        beta=1.0,
        num_importance_samples=1,
        analytic_kl=True,
        bound="iwae",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder_head = latent.posterior_head(encoder, "encoder")
        self.decoder_head = final_head(decoder, "decoder")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = self.encoder_head.event_size
        self._check_decoder_input(decoder)
        self.prior = latent.checked_prior(prior)
        self.beta = _validation.non_negative_float("beta", beta)
        self.num_importance_samples = _validation.positive_int(
            "num_importance_samples", num_importance_samples
        )
        analytic_kl = _validation.boolean("analytic_kl", analytic_kl)
        if analytic_kl and not self.prior.has_analytic_kl:
            raise ValueError(
                f"`analytic_kl=True` needs a prior with a closed-form KL "
                f"(tdg.priors.Normal); {self.prior!r} has none. Pass analytic_kl=False."
            )
        self.analytic_kl = analytic_kl
        self.bound = _validation.one_of("bound", bound, ("iwae", "elbo"))
        self.seed = seed
        self.latent_sampler = latent.LatentSampler(seed=seed, name="latent_sampler")
        self._bound_graphs = Untracked({})  # see _bound_graph
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def _check_decoder_input(self, decoder):
        """Refuses a decoder whose z input does not have the encoder's latent size."""
        inputs = getattr(decoder, "inputs", None)
        if not inputs:  # built lazily: `build` gives it (None, latent_dim)
            return
        size = inputs[0].shape[-1]
        if size is not None and size != self.latent_dim:
            raise ValueError(
                f"The encoder's head has {self.latent_dim} latent coordinates "
                f"(event_size={self.latent_dim}), but the decoder's first input takes "
                f"{size} per example (shape {tuple(inputs[0].shape)}). Give the decoder "
                f"keras.Input(({self.latent_dim},)) or the encoder head event_size={size}."
            )

    # -- the Keras model -----------------------------------------------------

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.decoder.built:
            self.decoder.build((None, self.latent_dim))
        self._check_data_size(input_shape)
        self.built = True

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the model built from `x` first.

        Building before Keras traces the first step lets callbacks that read the
        variables at the start of training, such as
        `keras.callbacks.BackupAndRestore`, work with lazily built networks.
        """
        if not self.built:
            input_shape = self._fit_input_shape(x, y)
            if input_shape is not None:
                self.build(input_shape)
        return super().fit(x, y, *args, **kwargs)

    def _fit_input_shape(self, x, y):
        """The shape structure `build` takes for `fit(x, y)`, or None if unknown."""
        del y  # the bound needs no labels
        return _fit_data.example_shape(x)

    def _check_data_size(self, input_shape):
        size = int(np.prod(input_shape[1:])) if None not in input_shape[1:] else None
        expected = self.decoder_head.event_size
        if size is not None and not self.decoder_head.integer_labels and size != expected:
            raise ValueError(
                f"The decoder's head models {expected} values per example "
                f"(event_size={expected}), but `x` has shape {tuple(input_shape)}, i.e. "
                f"{size} values per example."
            )

    def call(self, inputs, training=None):
        terms = self._bound_terms(
            inputs, self.num_importance_samples, self._iwae, beta=self.beta, training=training
        )
        self._record(terms)
        return terms["decoder_params"][0]

    @property
    def _iwae(self):
        """Whether training maximizes the IWAE bound (else the k-draw ELBO)."""
        return self.num_importance_samples > 1 and self.bound == "iwae"

    def _record(self, terms):
        """Adds the negative bound as the loss and logs its parts."""
        self.add_loss(-tf.reduce_mean(terms["bound"]))
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])

    @property
    def metrics(self):
        return [*super().metrics, self.reconstruction_tracker, self.kl_tracker]

    # -- the bound -----------------------------------------------------------

    def _bound_terms(self, x, num_samples, iwae, beta, training=False, condition=None):
        """Per-example bound, reconstruction and KL from `num_samples` draws of z.

        The bound is the ELBO (`iwae=False`, its expectation estimated from the
        draws) or the IWAE bound over them, with the KL weighted by `beta`.
        `condition` (conditional models) is a second input of the encoder and
        the decoder.
        """
        x = tf.convert_to_tensor(x)
        params = self.encoder(network_inputs(x, condition), training=training)
        z = self.latent_sampler.posterior_sample(self.encoder_head, params, num_samples)
        decoder_params = self._decode_samples(z, training, condition)
        x_flat = tf.reshape(tf.cast(x, "float32"), [tf.shape(x)[0], -1])
        targets = tf.broadcast_to(x_flat[None], tf.concat([[num_samples], tf.shape(x_flat)], 0))
        if self.decoder_head.integer_labels:  # one class id per example
            targets = targets[..., 0]
        log_likelihood = -self.decoder_head.checked_nll(targets, decoder_params)  # (k, batch)
        if iwae or not self.analytic_kl:
            # log q(z|x) - log p(z) at each draw, (k, batch).
            prior = latent.latent_prior(self.prior, self.latent_dim)
            log_ratio = self.encoder_head.distribution(params).log_prob(z) - prior.log_prob(z)
        if self.analytic_kl:
            kl = latent.analytic_kl(self.encoder_head, params, self.prior)
        else:
            kl = tf.reduce_mean(log_ratio, 0)
        if iwae:
            log_weights = log_likelihood - beta * log_ratio
            # num_samples may be a tensor (see _bound_graph).
            log_k = tf.math.log(tf.cast(num_samples, log_weights.dtype))
            bound = tf.reduce_logsumexp(log_weights, 0) - log_k
        else:
            bound = tf.reduce_mean(log_likelihood, 0) - beta * kl
        return {
            "bound": bound,
            "reconstruction": -tf.reduce_mean(log_likelihood, 0),
            "kl": kl,
            "decoder_params": decoder_params,
        }

    def _decode_samples(self, z, training=False, condition=None):
        """Decoder parameters at z of shape `(k, batch, latent_dim)`, shape `(k, batch, P)`."""
        if condition is not None:  # the same condition for each of the k draws
            condition = tf.reshape(
                tf.tile(condition[None], [tf.shape(z)[0], 1, 1]), [-1, condition.shape[-1]]
            )
        flat_z = tf.reshape(z, [-1, self.latent_dim])
        flat = self.decoder(network_inputs(flat_z, condition), training=training)
        return tf.reshape(flat, tf.concat([tf.shape(z)[:2], [self.decoder_head.output_size]], 0))

    # -- public methods ------------------------------------------------------

    def encode(self, x):
        """Parameters of q(z|x) (the encoder head's output), shape `(batch, P)`."""
        return self.encoder(x, training=False)

    def posterior(self, x):
        """q(z|x) as a TFP distribution, one per example."""
        return self.encoder_head.distribution(self.encode(x))

    def decode(self, z):
        """Parameters of p(x|z) (the decoder head's output), shape `(batch, P)`."""
        return self.decoder(z, training=False)

    def likelihood(self, z):
        """p(x|z) as a TFP distribution over the flattened `x`, one per row of `z`."""
        return self.decoder_head.distribution(self.decode(z))

    def sample_prior(self, n):
        """`n` draws z ~ p(z), shape `(n, latent_dim)`."""
        return self.latent_sampler.prior_sample(self.prior, self.latent_dim, n)

    def generate(self, n):
        """Mean of p(x|z) for `n` draws z ~ p(z): what one plots as samples."""
        return decoder_mean(self.decoder_head, self.decode(self.sample_prior(n)))

    def sample(self, n):
        """`n` draws x ~ p(x|z) p(z), shape `(n, event_size)` (flattened)."""
        seed = self.latent_sampler.next_seed()
        return self.likelihood(self.sample_prior(n)).sample(seed=seed)

    def reconstruct(self, x):
        """Mean of p(x|z) at one draw z ~ q(z|x), flattened."""
        x = tf.convert_to_tensor(x)
        z = self.latent_sampler.posterior_sample(self.encoder_head, self.encode(x), 1)[0]
        return decoder_mean(self.decoder_head, self.decode(z))

    def elbo(self, x, num_samples=1, batch_size=None):
        """Per-example ELBO `E_q[log p(x|z)] - KL(q(z|x) || p(z))`.

        The expectation over z is estimated from `num_samples` draws (the KL
        is closed-form when `analytic_kl` is set). This is the bound on
        log p(x), so the KL weight is 1 whatever `beta` the model trains with.
        """
        return self._evaluate_bound(x, num_samples, batch_size, iwae=False)

    def log_likelihood(self, x, num_samples=1000, batch_size=None):
        """Importance-sampled estimate of log p(x) per example (Burda et al. 2016).

        `log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)` with k = `num_samples`
        draws from the encoder: a lower bound on log p(x) in expectation that
        tightens as k grows (k = 5000 in Burda et al.'s evaluation). The k
        draws are computed in one vectorized pass per batch of examples;
        `batch_size` (default: about 2**16 / k examples) bounds the memory.
        """
        return self._evaluate_bound(x, num_samples, batch_size, iwae=True)

    def _evaluate_bound(self, x, num_samples, batch_size, iwae, condition=None):
        num_samples = _validation.positive_int("num_samples", num_samples)
        if batch_size is None:
            batch_size = max(1, 2**16 // num_samples)
        batch_size = _validation.positive_int("batch_size", batch_size)
        x = tf.convert_to_tensor(x)
        if not self.decoder_head.integer_labels:
            self.decoder_head.check_in_support(x, argument="x")
        if condition is not None:
            condition = tf.convert_to_tensor(condition)
        graph = self._bound_graph(x, condition)
        arguments = (tf.constant(num_samples, tf.int32), tf.constant(iwae))
        return in_batches(graph, x, condition, batch_size, *arguments)

    def _bound_graph(self, x, condition):
        """`graph(x, condition, num_samples, iwae)`: the XLA-compiled per-example bound.

        Traced once per model, kind of data and sampling state (a trace fixes
        whether z is drawn or the posterior mean, as in `sampling_mode`): the
        batch size is left open, and `num_samples` and `iwae` (IWAE bound, else
        ELBO) are tensors, so evaluating many batches, or the ELBO and then the
        IWAE estimate, reuses one graph (XLA compiles each new shape without a
        retrace).
        """
        key = tuple(None if t is None else (t.dtype, tuple(t.shape[1:])) for t in (x, condition))
        key += (sampling_states(self),)
        graphs = self._bound_graphs.value
        if key not in graphs:
            signature = [_batch_spec(x), tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.bool)]
            if condition is not None:
                signature.append(_batch_spec(condition))
            # A partial, not a closure: TensorFlow's retracing warning counts
            # the traces of all functions sharing one code object, so several
            # models tracing once each would add up to a false warning.
            bound = functools.partial(self._elbo_or_iwae)
            graphs[key] = tf.function(bound, input_signature=signature, jit_compile=True)
        compiled = graphs[key]

        def graph(x, condition, num_samples, iwae):
            conditions = () if condition is None else (condition,)
            return compiled(x, num_samples, iwae, *conditions)

        return graph

    def _elbo_or_iwae(self, x, num_samples, iwae, condition=None):
        """The IWAE bound where the boolean tensor `iwae` is set, else the ELBO (beta 1)."""
        terms = self._bound_terms(x, num_samples, True, 1.0, condition=condition)
        elbo = -terms["reconstruction"] - terms["kl"]
        return tf.where(iwae, terms["bound"], elbo)

    # -- serving -----------------------------------------------------------

    def serving_endpoints(self, num_samples):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        - `encode` and `serving_default`: `x` -> `mean`, `stddev` (of each
          latent coordinate under q(z|x)) and `params` (the encoder head's).
        - `decode`: `z` -> `mean` (E[x|z], flattened) and `params`.
        - `generate`: a scalar int32 `count` -> `samples` (x ~ p(x|z) p(z))
          and `mean` (E[x|z] at the same z).
        - `reconstruct`: `x` -> `mean` (E[x|z] at one z ~ q(z|x)).
        - `log_likelihood`: `x` -> `log_likelihood`, the IWAE estimate with
          `num_samples` importance samples.
        """
        num_samples = _validation.positive_int("num_samples", num_samples)
        x_spec, z_spec = self._data_specs()
        count_spec = tf.TensorSpec((), tf.int32, name="count")

        def encode(x):
            params = self.encode(x)
            marginal = self.encoder_head.marginal(params)
            return {"mean": marginal.mean(), "stddev": marginal.stddev(), "params": params}

        def decode(z):
            params = self.decode(z)
            return {"mean": decoder_mean(self.decoder_head, params), "params": params}

        def generate(count):
            params = self.decode(self.sample_prior(count))
            seed = self.latent_sampler.next_seed()
            samples = self.decoder_head.distribution(params).sample(seed=seed)
            return {"samples": samples, "mean": decoder_mean(self.decoder_head, params)}

        def reconstruct(x):
            return {"mean": self.reconstruct(x)}

        def log_likelihood(x):
            terms = self._bound_terms(x, num_samples, iwae=True, beta=1.0)
            return {"log_likelihood": terms["bound"]}

        return {
            "serving_default": (encode, [x_spec], ("mean", "stddev", "params")),
            "encode": (encode, [x_spec], ("mean", "stddev", "params")),
            "decode": (decode, [z_spec], ("mean", "params")),
            "generate": (generate, [count_spec], ("samples", "mean")),
            "reconstruct": (reconstruct, [x_spec], ("mean",)),
            "log_likelihood": (log_likelihood, [x_spec], ("log_likelihood",)),
        }

    def _data_specs(self):
        """Input signatures of `x` and `z` for export."""
        inputs = getattr(self.encoder, "inputs", None)
        if not inputs:
            raise ValueError(
                "Exporting needs an encoder with known inputs (a Sequential or "
                "functional model built on keras.Input)."
            )
        x_spec = tf.TensorSpec((None, *inputs[0].shape[1:]), inputs[0].dtype, name="x")
        if not self.built:  # e.g. only its methods were called: Keras exports built models
            self.build(self._input_shape(tuple(x_spec.shape)))
        return x_spec, tf.TensorSpec((None, self.latent_dim), "float32", name="z")

    def _input_shape(self, x_shape):
        """The shape structure `build` takes for data of shape `x_shape`."""
        return x_shape

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "prior": keras.saving.serialize_keras_object(self.prior),
                "beta": self.beta,
                "num_importance_samples": self.num_importance_samples,
                "analytic_kl": self.analytic_kl,
                "bound": self.bound,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Keras's deserialization empties the nested configs it is given.
        config = copy.deepcopy(config)
        for key in cls.nested_objects:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def decoder_mean(head, params):
    """E[x | z] under a decoder head (class probabilities for class-id labels)."""
    if head.integer_labels:
        return head.probabilities(params)
    return head.mean(params)


def _batch_spec(tensor):
    """A `TensorSpec` of `tensor` with any batch size."""
    return tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype)
