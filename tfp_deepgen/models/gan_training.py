"""How a GAN trains: two optimizers, `discriminator_steps` critic updates per generator update.

`AdversarialTraining` is a mixin of `tdg.models.GAN` (as Keras's trainers are
of `keras.Model`): `compile` takes one optimizer per player, `train_step`
plays one round of the game with the losses of `tdg.models.gan_losses`, and
`test_step` reports the same quantities without updating anything.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
>>> discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
>>> gan = tdg.models.GAN(generator, discriminator, latent_dim=2, loss="wasserstein", seed=0)
>>> gan.compile(generator_optimizer="adam", discriminator_optimizer="rmsprop")
>>> x = np.random.RandomState(0).normal(size=(32, 3)).astype("float32")
>>> sorted(gan.evaluate(x, verbose=0, return_dict=True))
['d_loss', 'g_loss', 'gradient_penalty', 'loss', 'wasserstein']
"""

import keras
import tensorflow as tf

from tfp_deepgen import random
from tfp_deepgen.layers.base import not_finite_flag
from tfp_deepgen.models import gan_losses, gan_players

__all__ = ["AdversarialTraining"]


class AdversarialTraining:
    """`compile`, `fit`, `train_step` and `test_step` of a `GAN`.

    Expects of the host model: the players (`generator`, `discriminator`,
    `_generate`, `_scores`, `condition`, `sample_latents`, `latent_sampler`),
    the settings (`adversarial_loss`, `discriminator_steps`,
    `gradient_penalty`, `num_classes`) and the metric trackers made in its
    `__init__`.
    """

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
        sample_shape = gan_players.sample_shape(self.generator)
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


def _optimizer(identifier, policy):
    optimizer = keras.optimizers.get(identifier)
    if policy.name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
