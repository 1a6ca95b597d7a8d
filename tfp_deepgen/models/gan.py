"""The generative adversarial network as a `keras.Model` trained with plain `fit(x)`."""

import copy

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.models import gan_losses, gan_players, latent
from tfp_deepgen.models._labels import network_inputs, one_hot_labels
from tfp_deepgen.models.gan_training import AdversarialTraining

__all__ = ["GAN"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class GAN(AdversarialTraining, keras.Model):
    """Generative adversarial network (Goodfellow et al. 2014), conditional or not.

    The generator maps a latent draw z ~ p(z) (N(0, 1) by default) to an
    example; the discriminator maps an example to one unbounded score (a
    logit, or a critic value for the Wasserstein loss). `fit(x)` plays the
    game: each batch takes `discriminator_steps` discriminator updates, each
    on the same real batch against fresh generated samples, then one
    generator update. With `num_classes`, `fit(x, labels)` trains a
    conditional GAN (Mirza & Osindero 2014): both players take the one-hot
    label as a second input, `generator([z, y])` and `discriminator([x, y])`.

    It logs `d_loss`, `g_loss` and, for the Wasserstein loss, the critic's
    estimate `wasserstein` of the Wasserstein-1 distance, otherwise the
    discriminator's `d_accuracy` on real and generated examples (see
    `tdg.models.gan_losses`), plus `gradient_penalty` when one is applied.
    `evaluate(x)` reports the same quantities without updating anything.
    It also logs `loss = d_loss + g_loss`, which is NaN exactly when the
    step's losses or its real batch hold NaN or inf, so callbacks that watch
    `loss` (`keras.callbacks.TerminateOnNaN`) work; it says nothing about
    how well the game goes: a GAN's losses do not fall as it improves.

    Calling the model on z (or `[z, labels]`) returns generated examples.

    Args:
        generator: Keras model `z -> x` (conditional: `[z, one-hot y] -> x`).
        discriminator: Keras model `x -> score` of shape `(batch, 1)` or
            `(batch,)` (conditional: `[x, one-hot y] -> score`).
        latent_dim: Size of z.
        loss: One of `tdg.models.gan_losses.LOSSES`: `"minimax"`,
            `"non_saturating"` (default), `"wasserstein"`, `"hinge"` or
            `"least_squares"`.
        discriminator_steps: Discriminator updates per generator update
            (5 in WGAN-GP).
        gradient_penalty: Weight of the WGAN-GP penalty
            `E (||grad D(x_hat)|| - 1)^2`; default 10 for the Wasserstein loss
            (which needs a Lipschitz critic) and 0 (off) for the others.
        num_classes: Number of classes of a conditional GAN, or None.
        latent_prior: p(z), a `tdg.priors` prior with a density (default
            `tdg.priors.Normal(0, 1)`).
        seed: Seed of the latent draws and the penalty's interpolation.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> gan = tdg.models.GAN(generator, discriminator, latent_dim=2, seed=0)
    >>> gan.compile(generator_optimizer="adam", discriminator_optimizer="adam")
    >>> x = np.random.RandomState(0).normal(size=(64, 3)).astype("float32")
    >>> history = gan.fit(x, epochs=1, batch_size=32, verbose=0)
    >>> sorted(history.history)
    ['d_accuracy', 'd_loss', 'g_loss', 'loss']
    >>> tuple(gan.generate(5).shape), tuple(gan.discriminate(x[:4]).shape)
    ((5, 3), (4,))
    """

    def __init__(
        self,
        generator,
        discriminator,
        latent_dim,
        loss="non_saturating",
        discriminator_steps=1,
        gradient_penalty=None,
        num_classes=None,
        latent_prior=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, player in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(player, keras.layers.Layer):
                raise ValueError(
                    f"`{name}` must be a Keras model (or layer). Received: {name}={player!r}"
                )
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = _validation.positive_int("latent_dim", latent_dim)
        self.adversarial_loss = _validation.one_of("loss", loss, gan_losses.LOSSES)
        self.discriminator_steps = _validation.positive_int(
            "discriminator_steps", discriminator_steps
        )
        if gradient_penalty is None:
            gradient_penalty = 10.0 if self.adversarial_loss == "wasserstein" else 0.0
        self.gradient_penalty = _validation.non_negative_float("gradient_penalty", gradient_penalty)
        if num_classes is not None:
            num_classes = _validation.positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.latent_prior = latent.checked_prior(latent_prior, "latent_prior")
        self.seed = _validation.seed("seed", seed)
        self.latent_sampler = latent.LatentSampler(seed=self.seed, name="latent_sampler")
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        if self.adversarial_loss == "wasserstein":
            self.quality_tracker = keras.metrics.Mean(name="wasserstein")
        else:
            self.quality_tracker = keras.metrics.Mean(name="d_accuracy")
        self.penalty_tracker = keras.metrics.Mean(name="gradient_penalty")
        self.generator_optimizer = None
        self.discriminator_optimizer = None
        if gan_players.check_players(generator, discriminator, self.latent_dim, num_classes):
            self.built = True

    def build(self, input_shape=None):
        # Both players are built in `__init__` when their shapes are known;
        # otherwise from the first batch, in `train_step`.
        self.built = True

    # -- the players ---------------------------------------------------------

    def condition(self, labels):
        """One-hot vectors of integer class ids `labels`, shape `(batch, num_classes)`."""
        return one_hot_labels(labels, self.num_classes)

    def _generate(self, z, condition, training=False):
        return self.generator(network_inputs(z, condition), training=training)

    def _scores(self, x, condition, training=False):
        """Discriminator scores as float32, shape `(batch,)`."""
        scores = self.discriminator(network_inputs(x, condition), training=training)
        return tf.reshape(tf.cast(scores, tf.float32), [-1])

    def sample_latents(self, count):
        """`count` draws z ~ p(z), shape `(count, latent_dim)`."""
        return self.latent_sampler.prior_sample(self.latent_prior, self.latent_dim, count)

    def call(self, inputs, training=None):
        if self.num_classes:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError(
                    "A conditional GAN is called on `[z, labels]` (integer class ids)."
                )
            z, labels = inputs
            return self._generate(z, self.condition(labels), training)
        return self._generate(inputs, None, training)

    # -- public methods ------------------------------------------------------

    def generate(self, count_or_z=None, labels=None):
        """Generated examples.

        Args:
            count_or_z: How many to draw (an int), or the latent points z
                themselves, shape `(batch, latent_dim)`. A conditional GAN may
                leave it out: one example per label.
            labels: Class ids of a conditional GAN: one per example, or one
                for all.

        Returns:
            The generator's output (inference mode), one example per row.
        """
        if count_or_z is None and labels is None:
            raise ValueError("Pass `count_or_z` (a count or latent points), or `labels`.")
        condition = None
        if self.num_classes:
            if labels is None:
                raise ValueError(
                    f"This GAN is conditional (num_classes={self.num_classes}): pass `labels`."
                )
            labels = np.asarray(labels) if not tf.is_tensor(labels) else labels
            labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
        elif labels is not None:
            raise ValueError("This GAN is unconditional: `labels` must be None.")
        if count_or_z is None:
            z = self.sample_latents(tf.shape(labels)[0])
        elif isinstance(count_or_z, (int, np.integer)) and not isinstance(count_or_z, bool):
            count = _validation.positive_int("count_or_z", int(count_or_z))
            z = self.sample_latents(count)
        else:
            z = tf.cast(tf.convert_to_tensor(count_or_z), tf.float32)
            if z.shape.rank != 2 or z.shape[-1] != self.latent_dim:
                raise ValueError(
                    f"`count_or_z` must be a count or latent points of shape (batch, "
                    f"{self.latent_dim}); got shape {tuple(z.shape)}."
                )
        if labels is not None:
            if labels.shape[0] == 1:
                labels = tf.repeat(labels, tf.shape(z)[0])
            elif labels.shape[0] != z.shape[0]:
                raise ValueError(
                    f"`labels` must hold one class id, or one per example ({z.shape[0]}); "
                    f"got {labels.shape[0]}."
                )
            condition = self.condition(labels)
        return self._generate(z, condition)

    def discriminate(self, x, labels=None):
        """The discriminator's scores of `x` (inference mode), shape `(batch,)`.

        For the minimax and non-saturating losses `sigmoid(score)` is the
        probability that `x` is real; at the optimum it is
        `p_data(x) / (p_data(x) + p_g(x))`.
        """
        condition = None
        if self.num_classes:
            if labels is None:
                raise ValueError(
                    f"This GAN is conditional (num_classes={self.num_classes}): pass `labels`."
                )
            condition = self.condition(labels)
        elif labels is not None:
            raise ValueError("This GAN is unconditional: `labels` must be None.")
        return self._scores(tf.convert_to_tensor(x), condition)

    # -- serving -------------------------------------------------------------

    def serving_endpoints(self, num_samples=None):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        - `generate` and `serving_default`: a scalar int32 `count` (a
          conditional GAN: int32 `labels`, one example each) -> `samples`
          and the latent points `z` they came from.
        - `generate_from_z`: `z` (and `labels`) -> `samples`.
        - `discriminate`: `x` (and `labels`) -> `score`, and for the minimax
          and non-saturating losses `probability` (`sigmoid(score)`).

        `num_samples` is not used (there is nothing to average).
        """
        sample_shape = gan_players.sample_shape(self.generator)
        if sample_shape is None or None in sample_shape:
            raise ValueError(
                "Exporting needs a generator with a known output shape (a built model)."
            )
        x_spec = tf.TensorSpec((None, *sample_shape), tf.float32, name="x")
        z_spec = tf.TensorSpec((None, self.latent_dim), tf.float32, name="z")
        labels_spec = tf.TensorSpec((None,), tf.int32, name="labels")
        count_spec = tf.TensorSpec((), tf.int32, name="count")
        probability = self.adversarial_loss in ("minimax", "non_saturating")
        score_outputs = ("score", "probability") if probability else ("score",)

        def _condition(labels):
            return tf.one_hot(labels, self.num_classes)

        def discriminate_outputs(scores):
            outputs = {"score": scores}
            if probability:
                outputs["probability"] = tf.sigmoid(scores)
            return outputs

        if self.num_classes:

            def generate(labels):
                z = self.sample_latents(tf.shape(labels)[0])
                return {"samples": self._generate(z, _condition(labels)), "z": z}

            def generate_from_z(z, labels):
                return {"samples": self._generate(z, _condition(labels))}

            def discriminate(x, labels):
                return discriminate_outputs(self._scores(x, _condition(labels)))

            generate_specs = [labels_spec]
            z_specs, x_specs = [z_spec, labels_spec], [x_spec, labels_spec]
        else:

            def generate(count):
                z = self.sample_latents(count)
                return {"samples": self._generate(z, None), "z": z}

            def generate_from_z(z):
                return {"samples": self._generate(z, None)}

            def discriminate(x):
                return discriminate_outputs(self._scores(x, None))

            generate_specs, z_specs, x_specs = [count_spec], [z_spec], [x_spec]
        return {
            "serving_default": (generate, generate_specs, ("samples", "z")),
            "generate": (generate, generate_specs, ("samples", "z")),
            "generate_from_z": (generate_from_z, z_specs, ("samples",)),
            "discriminate": (discriminate, x_specs, score_outputs),
        }

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "latent_dim": self.latent_dim,
                "loss": self.adversarial_loss,
                "discriminator_steps": self.discriminator_steps,
                "gradient_penalty": self.gradient_penalty,
                "num_classes": self.num_classes,
                "latent_prior": keras.saving.serialize_keras_object(self.latent_prior),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Keras's deserialization empties the nested configs it is given.
        config = copy.deepcopy(config)
        for key in ("generator", "discriminator", "latent_prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
