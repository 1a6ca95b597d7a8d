"""The generative adversarial network as a `keras.Model` trained with plain `fit(x)`."""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation, random
from tfp_deepgen.layers.base import not_finite_flag
from tfp_deepgen.models import gan_losses, latent
from tfp_deepgen.models._labels import network_inputs, one_hot_labels

__all__ = ["GAN"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class GAN(keras.Model):
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
        self._check_players()

    # -- construction checks -------------------------------------------------

    def _check_players(self):
        """Builds the players when their shapes allow and checks that they fit together."""
        condition_shape = [(None, self.num_classes)] if self.num_classes else []
        generator_inputs = _input_shapes(self.generator)
        if generator_inputs is not None:
            expected = [(None, self.latent_dim), *condition_shape]
            if [shape[-1] for shape in generator_inputs] != [shape[-1] for shape in expected]:
                raise ValueError(
                    f"The generator must take {_describe_inputs(self.num_classes)}, inputs of "
                    f"shapes {expected}; its inputs have shapes {generator_inputs}."
                )
        elif not self.generator.built:
            z_shape = (None, self.latent_dim)
            self.generator.build([z_shape, *condition_shape] if condition_shape else z_shape)
        sample_shape = self._sample_shape()
        discriminator_inputs = _input_shapes(self.discriminator)
        if discriminator_inputs is not None:
            if sample_shape is not None and tuple(discriminator_inputs[0][1:]) != sample_shape:
                raise ValueError(
                    f"The generator makes examples of shape {sample_shape}, but the "
                    f"discriminator takes examples of shape {tuple(discriminator_inputs[0][1:])}."
                )
            if len(discriminator_inputs) != 1 + len(condition_shape) or (
                condition_shape and discriminator_inputs[1][-1] != self.num_classes
            ):
                raise ValueError(
                    f"The discriminator must take {_describe_inputs(self.num_classes, 'x')}; its "
                    f"inputs have shapes {discriminator_inputs}."
                )
        elif not self.discriminator.built and sample_shape is not None:
            x_shape = (None, *sample_shape)
            self.discriminator.build([x_shape, *condition_shape] if condition_shape else x_shape)
        score_shape = _output_shape(self.discriminator)
        if score_shape is not None and tuple(score_shape[1:]) not in ((), (1,)):
            raise ValueError(
                "The discriminator must output one score per example, shape (batch, 1) or "
                f"(batch,); its output has shape {tuple(score_shape)}."
            )
        if self.generator.built and self.discriminator.built:
            self.built = True

    def _sample_shape(self):
        """Shape of one generated example, or None while unknown."""
        shape = _output_shape(self.generator)
        return None if shape is None else tuple(shape[1:])

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

    # -- training ------------------------------------------------------------

    def compile(
        self,
        generator_optimizer="adam",
        discriminator_optimizer="adam",
        run_eagerly=False,
        jit_compile="auto",
        steps_per_execution=1,
        **kwargs,
    ):
        """Sets each player's optimizer (names, configs or instances) and the run options.

        Under a `mixed_float16` policy the optimizers are wrapped in
        `keras.optimizers.LossScaleOptimizer` unless they already are.
        `loss` and `metrics` are not accepted: the adversarial loss is the
        model's `loss` argument and its metrics are logged automatically.
        """
        for name in ("loss", "metrics", "weighted_metrics", "loss_weights", "optimizer"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"GAN.compile takes no `{name}`: pass `generator_optimizer` and "
                    "`discriminator_optimizer`; the loss is the model's `loss` argument."
                )
            kwargs.pop(name, None)
        super().compile(
            optimizer=None,
            run_eagerly=run_eagerly,
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
            **kwargs,
        )
        self._optimizer_configs = {
            "generator_optimizer": generator_optimizer,
            "discriminator_optimizer": discriminator_optimizer,
        }
        self.generator_optimizer = _optimizer(generator_optimizer, self.dtype_policy)
        self.discriminator_optimizer = _optimizer(discriminator_optimizer, self.dtype_policy)
        if self.generator_optimizer is self.discriminator_optimizer:
            raise ValueError(
                "`generator_optimizer` and `discriminator_optimizer` must be two optimizer "
                "objects: each keeps its own state (pass names or two instances)."
            )
        if self.built:
            self.generator_optimizer.build(self.generator.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {
            "generator_optimizer": keras.saving.serialize_keras_object(self.generator_optimizer),
            "discriminator_optimizer": keras.saving.serialize_keras_object(
                self.discriminator_optimizer
            ),
            "run_eagerly": self.run_eagerly,
            "jit_compile": self.jit_compile,
            "steps_per_execution": self.steps_per_execution,
        }

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("generator_optimizer", "discriminator_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        self.compile(**config)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; afterwards each player takes its optimizer's final values.

        Keras finalizes only `model.optimizer`, so an optimizer with `use_ema=True`
        would otherwise leave its player on the raw weights rather than their moving
        average.
        """
        history = super().fit(*args, **kwargs)
        if history.epoch:
            for player, optimizer in (
                (self.generator, self.generator_optimizer),
                (self.discriminator, self.discriminator_optimizer),
            ):
                if player.trainable_weights and optimizer.built:
                    optimizer.finalize_variable_values(player.trainable_weights)
        return history

    @property
    def metrics(self):
        trackers = [
            self.total_loss_tracker,
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.quality_tracker,
        ]
        if self.gradient_penalty > 0:
            trackers.append(self.penalty_tracker)
        return trackers

    def _unpack(self, data):
        """`(x, one-hot condition or None)` from a batch of `fit` / `evaluate`."""
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.num_classes:
            if labels is None:
                raise ValueError(
                    f"This GAN is conditional (num_classes={self.num_classes}): train it with "
                    "`fit(x, labels)` (or a dataset of `(x, labels)` pairs)."
                )
            condition = self.condition(labels)
        else:
            if labels is not None:
                raise ValueError(
                    "This GAN is unconditional: `fit(x)` takes no labels. Pass `num_classes` "
                    "to the GAN to condition on labels."
                )
            condition = None
        x = tf.convert_to_tensor(x)
        if not self.built or not self.discriminator.built:
            self._build_from_data(x.shape)
        sample_shape = self._sample_shape()
        if sample_shape is not None and tuple(x.shape[1:]) != sample_shape:
            raise ValueError(
                f"The generator makes examples of shape {sample_shape}, but `x` holds "
                f"examples of shape {tuple(x.shape[1:])}."
            )
        return tf.cast(x, self.compute_dtype), condition

    def _build_from_data(self, x_shape):
        condition_shape = [(None, self.num_classes)] if self.num_classes else []
        if not self.discriminator.built:
            x_shape = (None, *x_shape[1:])
            self.discriminator.build([x_shape, *condition_shape] if condition_shape else x_shape)
        self.built = True

    def _latents_and_epsilon(self, batch_size):
        z = self.sample_latents(batch_size)
        if self.gradient_penalty == 0:
            return z, None
        return z, random.uniform([batch_size], self.latent_sampler.next_seed())

    def _discriminator_objective(self, x, condition, training):
        """`(d_loss, penalty, real scores, fake scores)` on a batch and fresh samples."""
        z, epsilon = self._latents_and_epsilon(tf.shape(x)[0])
        fake = tf.stop_gradient(self._generate(z, condition, training=training))
        real_scores = self._scores(x, condition, training=training)
        fake_scores = self._scores(fake, condition, training=training)
        d_loss = gan_losses.discriminator_loss(self.adversarial_loss, real_scores, fake_scores)
        # NaN when `x` is: a fused matmul + ReLU can turn a NaN row into zeros.
        d_loss += not_finite_flag(x)
        penalty = tf.zeros((), tf.float32)
        if epsilon is not None:
            penalty = gan_losses.gradient_penalty(
                lambda inputs: self._scores(inputs, condition, training=training),
                x,
                fake,
                epsilon,
            )
        return d_loss, penalty, real_scores, fake_scores

    def _generator_objective(self, batch_size, condition, training):
        z = self.sample_latents(batch_size)
        fake_scores = self._scores(
            self._generate(z, condition, training=training), condition, training=training
        )
        return gan_losses.generator_loss(self.adversarial_loss, fake_scores)

    def train_step(self, data):
        if self.generator_optimizer is None:
            raise ValueError("Call `compile()` before `fit()`.")
        x, condition = self._unpack(data)
        batch_size = tf.shape(x)[0]
        # Optimizers sum the replicas' gradients: scale each replica's loss.
        replica_scale = 1.0 / tf.distribute.get_strategy().num_replicas_in_sync
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        for _ in range(self.discriminator_steps):
            with tf.GradientTape() as tape:
                d_loss, penalty, real_scores, fake_scores = self._discriminator_objective(
                    x, condition, training=True
                )
                objective = (d_loss + self.gradient_penalty * penalty) * replica_scale
                objective = self.discriminator_optimizer.scale_loss(objective)
            if d_vars:
                gradients = tape.gradient(objective, d_vars)
                self.discriminator_optimizer.apply(gradients, d_vars)
        with tf.GradientTape() as tape:
            g_loss = self._generator_objective(batch_size, condition, training=True)
            objective = self.generator_optimizer.scale_loss(g_loss * replica_scale)
        if g_vars:  # a frozen generator (e.g. to train the discriminator alone)
            gradients = tape.gradient(objective, g_vars)
            self.generator_optimizer.apply(gradients, g_vars)
        return self._record(d_loss, g_loss, penalty, real_scores, fake_scores)

    def test_step(self, data):
        x, condition = self._unpack(data)
        d_loss, penalty, real_scores, fake_scores = self._discriminator_objective(
            x, condition, training=False
        )
        g_loss = self._generator_objective(tf.shape(x)[0], condition, training=False)
        return self._record(d_loss, g_loss, penalty, real_scores, fake_scores)

    def _record(self, d_loss, g_loss, penalty, real_scores, fake_scores):
        self.total_loss_tracker.update_state(d_loss + g_loss)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        if self.adversarial_loss == "wasserstein":
            self.quality_tracker.update_state(
                tf.reduce_mean(real_scores) - tf.reduce_mean(fake_scores)
            )
        else:
            self.quality_tracker.update_state(
                gan_losses.discriminator_accuracy(self.adversarial_loss, real_scores, fake_scores)
            )
        if self.gradient_penalty > 0:
            self.penalty_tracker.update_state(penalty)
        return {metric.name: metric.result() for metric in self.metrics}

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
        sample_shape = self._sample_shape()
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
        config = dict(config)
        for key in ("generator", "discriminator", "latent_prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _optimizer(identifier, policy):
    optimizer = keras.optimizers.get(identifier)
    if policy.name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _input_shapes(model):
    """Shapes of a functional model's inputs, or None when unknown."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return [tuple(tensor.shape) for tensor in inputs]


def _output_shape(model):
    """Shape of a model's (single) output, or None when unknown."""
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tuple(outputs[0].shape)
    return None


def _describe_inputs(num_classes, first="z"):
    if num_classes:
        return f"[{first}, one-hot labels of size {num_classes}]"
    return f"one input {first}"
