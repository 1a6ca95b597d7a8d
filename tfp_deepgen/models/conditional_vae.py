"""The conditional VAE: labels (or any condition vector) feed the encoder and the decoder."""

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.models import _fit_data
from tfp_deepgen.models._labels import one_hot_labels
from tfp_deepgen.models.vae import VAE, decoder_mean

__all__ = ["ConditionalVAE"]


def _with_labels_as_inputs(data):
    """`(x, y, w)` from `fit` becomes `((x, y), None, w)`: the model's call needs y."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    return keras.utils.pack_x_y_sample_weight((x, y), None, sample_weight)


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class ConditionalVAE(VAE):
    """VAE of p(x | y) for a condition y (Sohn et al. 2015; Kingma et al. 2014's M2 decoder).

    The encoder takes `[x, condition]` to q(z|x, y) and the decoder
    `[z, condition]` to p(x|z, y); the prior p(z) does not depend on y. With
    `num_classes`, labels are class ids and the condition is their one-hot
    vector; without it, labels are real condition vectors used as given.

    Train with `fit(x, labels)`; every method takes the labels next to its
    other input. `generate(labels)` draws one example per label.

    Args:
        encoder: Keras model `[x, condition] -> params of q(z|x, y)`, ending
            in an `IndependentNormal` or `MultivariateNormalTriL` head.
        decoder: Keras model `[z, condition] -> params of p(x|z, y)`.
        num_classes: Number of classes of integer labels, or None for
            condition vectors.
        **kwargs: `prior`, `beta`, `num_importance_samples`, `analytic_kl`,
            `bound`, `seed` as for `tdg.models.VAE`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> q, p = tdg.heads.IndependentNormal(2), tdg.heads.IndependentBernoulli(6)
    >>> x_in, z_in, y_in = keras.Input((6,)), keras.Input((2,)), keras.Input((3,))
    >>> joined = keras.layers.Concatenate()([x_in, y_in])
    >>> encoder = keras.Model([x_in, y_in], q(keras.layers.Dense(q.input_size)(joined)))
    >>> joined = keras.layers.Concatenate()([z_in, y_in])
    >>> decoder = keras.Model([z_in, y_in], p(keras.layers.Dense(p.input_size)(joined)))
    >>> cvae = tdg.models.ConditionalVAE(encoder, decoder, num_classes=3, seed=0)
    >>> cvae.compile("adam")
    >>> rng = np.random.RandomState(0)
    >>> x, labels = (rng.rand(30, 6) > 0.5).astype("float32"), rng.randint(3, size=30)
    >>> history = cvae.fit(x, labels, epochs=1, verbose=0)
    >>> tuple(cvae.generate(np.array([0, 1, 2, 2])).shape)
    (4, 6)
    """

    def __init__(self, encoder, decoder, num_classes=None, **kwargs):
        super().__init__(encoder, decoder, **kwargs)
        if num_classes is not None:
            num_classes = _validation.positive_int("num_classes", num_classes)
        self.num_classes = num_classes

    def condition(self, labels):
        """The condition vector of `labels` (one-hot class ids, or the vectors as given)."""
        labels = tf.convert_to_tensor(labels)
        if self.num_classes is None:
            return tf.cast(labels, "float32")
        return one_hot_labels(labels, self.num_classes)

    # -- the Keras model -----------------------------------------------------

    def build(self, input_shape):
        x_shape, label_shape = input_shape
        if not self.encoder.built:
            self.encoder.build([x_shape, self._condition_shape(label_shape)])
        if not self.decoder.built:
            self.decoder.build([(None, self.latent_dim), self._condition_shape(label_shape)])
        self._check_data_size(x_shape)
        self.built = True

    def _input_shape(self, x_shape):
        if self.num_classes:
            return (x_shape, (None,))
        return (x_shape, (None, *self.encoder.inputs[1].shape[1:]))

    def _fit_input_shape(self, x, y):
        x_shape = _fit_data.example_shape(x)
        if self.num_classes:
            label_shape = (None,)
        elif y is None:  # a dataset of (x, condition) batches
            label_shape = _fit_data.example_shape(x, component=1)
        else:
            label_shape = _fit_data.example_shape(y)
        if x_shape is None or label_shape is None:
            return None
        return (x_shape, label_shape)

    def _condition_shape(self, label_shape):
        return (None, self.num_classes) if self.num_classes else tuple(label_shape)

    def train_step(self, data):
        return super().train_step(_with_labels_as_inputs(data))

    def test_step(self, data):
        return super().test_step(_with_labels_as_inputs(data))

    def predict_step(self, data):
        return super().predict_step(_with_labels_as_inputs(data))

    def call(self, inputs, training=None):
        x, labels = self._unpack(inputs)
        terms = self._bound_terms(
            x,
            self.num_importance_samples,
            self._iwae,
            beta=self.beta,
            training=training,
            condition=self.condition(labels),
        )
        self._record(terms)
        return terms["decoder_params"][0]

    def _unpack(self, inputs):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2 or inputs[1] is None:
            raise ValueError(
                f"{type(self).__name__} needs labels: call `fit(x, labels)`, or call "
                "the model on `(x, labels)`."
            )
        return inputs

    # -- public methods ------------------------------------------------------

    def encode(self, x, labels):
        """Parameters of q(z|x, y), shape `(batch, P)`."""
        return self.encoder([tf.convert_to_tensor(x), self.condition(labels)], training=False)

    def posterior(self, x, labels):
        """q(z|x, y) as a TFP distribution, one per example."""
        return self.encoder_head.distribution(self.encode(x, labels))

    def decode(self, z, labels):
        """Parameters of p(x|z, y), shape `(batch, P)`."""
        return self.decoder([tf.convert_to_tensor(z), self.condition(labels)], training=False)

    def likelihood(self, z, labels):
        """p(x|z, y) as a TFP distribution over the flattened `x`."""
        return self.decoder_head.distribution(self.decode(z, labels))

    def generate(self, labels):
        """Mean of p(x|z, y) for one z ~ p(z) per label."""
        labels = tf.convert_to_tensor(labels)
        z = self.sample_prior(tf.shape(labels)[0])
        return decoder_mean(self.decoder_head, self.decode(z, labels))

    def sample(self, labels):
        """One draw x ~ p(x|z, y) p(z) per label, flattened."""
        labels = tf.convert_to_tensor(labels)
        seed = self.latent_sampler.next_seed()
        return self.likelihood(self.sample_prior(tf.shape(labels)[0]), labels).sample(seed=seed)

    def reconstruct(self, x, labels):
        """Mean of p(x|z, y) at one draw z ~ q(z|x, y), flattened."""
        z = self.latent_sampler.posterior_sample(self.encoder_head, self.encode(x, labels), 1)[0]
        return decoder_mean(self.decoder_head, self.decode(z, labels))

    def elbo(self, x, labels, num_samples=1, batch_size=None):
        """Per-example ELBO of log p(x|y); see `VAE.elbo`."""
        return self._evaluate_bound(
            x, num_samples, batch_size, iwae=False, condition=self.condition(labels)
        )

    def log_likelihood(self, x, labels, num_samples=1000, batch_size=None):
        """Importance-sampled estimate of log p(x|y) per example; see `VAE.log_likelihood`."""
        return self._evaluate_bound(
            x, num_samples, batch_size, iwae=True, condition=self.condition(labels)
        )

    # -- serving -------------------------------------------------------------

    def serving_endpoints(self, num_samples):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        As `VAE.serving_endpoints`, each signature also taking `labels`
        (int32 class ids, or float32 condition vectors): `encode`
        (`serving_default`), `decode`, `generate` (takes only `labels`: one
        example per label), `reconstruct`, `log_likelihood` (of x given y).
        """
        num_samples = _validation.positive_int("num_samples", num_samples)
        x_spec, z_spec = self._data_specs()
        if self.num_classes:
            label_spec = tf.TensorSpec((None,), tf.int32, name="labels")
        else:
            condition = self.encoder.inputs[1]
            label_spec = tf.TensorSpec((None, *condition.shape[1:]), "float32", name="labels")

        def encode(x, labels):
            params = self.encode(x, labels)
            marginal = self.encoder_head.marginal(params)
            return {"mean": marginal.mean(), "stddev": marginal.stddev(), "params": params}

        def decode(z, labels):
            params = self.decode(z, labels)
            return {"mean": decoder_mean(self.decoder_head, params), "params": params}

        def generate(labels):
            params = self.decode(self.sample_prior(tf.shape(labels)[0]), labels)
            seed = self.latent_sampler.next_seed()
            samples = self.decoder_head.distribution(params).sample(seed=seed)
            return {"samples": samples, "mean": decoder_mean(self.decoder_head, params)}

        def reconstruct(x, labels):
            return {"mean": self.reconstruct(x, labels)}

        def log_likelihood(x, labels):
            terms = self._bound_terms(
                x, num_samples, iwae=True, beta=1.0, condition=self.condition(labels)
            )
            return {"log_likelihood": terms["bound"]}

        encoding = (encode, [x_spec, label_spec], ("mean", "stddev", "params"))
        return {
            "serving_default": encoding,
            "encode": encoding,
            "decode": (decode, [z_spec, label_spec], ("mean", "params")),
            "generate": (generate, [label_spec], ("samples", "mean")),
            "reconstruct": (reconstruct, [x_spec, label_spec], ("mean",)),
            "log_likelihood": (log_likelihood, [x_spec, label_spec], ("log_likelihood",)),
        }

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
