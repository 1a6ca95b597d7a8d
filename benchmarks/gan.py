"""Training-step time of `tdg.models.GAN` against a hand-written Keras GAN, side by side.

Run from the repository root (2 shared CPU cores: a few minutes, much of it XLA
compilation; ``--quick``: about a minute):

    python benchmarks/gan.py            # every shape, XLA and graph mode
    python benchmarks/gan.py --quick    # fewer steps, for a smoke test
    python benchmarks/gan.py --xla-only

One step is what `fit` runs per batch: the discriminator's update(s) on a real
batch against fresh generated samples, then the generator's update, each with its
own Adam optimizer. Shapes:

- ``ring MLP``: the 2-D mixture networks (z 8 -> 128 -> 128 -> 2, discriminator
  2 -> 128 -> 128 -> 1, ReLU), batch 256, non-saturating loss.
- ``ring MLP WGAN-GP``: the same with the Wasserstein loss, gradient penalty 10
  and 5 critic steps per generator step (a second-order gradient each time).
- ``DCGAN 28x28``: a small DCGAN for MNIST-sized images (z 64 -> 7x7x64 ->
  transposed convolutions -> 28x28x1; discriminator two strided convolutions),
  batch 64, non-saturating loss.

Contenders: ``keras`` is the `train_step` a Keras user copies from the Keras
examples (latents from `keras.random.normal`, `sigmoid_cross_entropy_with_logits`,
the penalty through a nested `GradientTape`); ``tdg`` is `tdg.models.GAN.train_step`
(Philox latents, float32 losses, its metric trackers). No targets: the ratios are
printed as measurements.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import Contender, parse_timing_args, report, run_contenders  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")

KINDS = ("keras", "tdg")
RATIOS = (("tdg", "keras"),)


def mlp_players(latent_dim=8, hidden=128, data_dim=2):
    def mlp(inputs, outputs):
        return keras.Sequential(
            [
                keras.Input((inputs,)),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(outputs),
            ]
        )

    return mlp(latent_dim, data_dim), mlp(data_dim, 1)


def dcgan_players(latent_dim=64):
    generator = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(7 * 7 * 64, activation="relu"),
            keras.layers.Reshape((7, 7, 64)),
            keras.layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="sigmoid"),
        ]
    )
    discriminator = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 4, strides=2, padding="same"),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Conv2D(64, 4, strides=2, padding="same"),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    return generator, discriminator


# name: (players, latent_dim, data shape, batch, wasserstein)
SHAPES = {
    "ring MLP": (mlp_players, 8, (2,), 256, False),
    "ring MLP WGAN-GP": (mlp_players, 8, (2,), 256, True),
    "DCGAN 28x28": (dcgan_players, 64, (28, 28, 1), 64, False),
}


def hand_written_step(players, latent_dim, wasserstein, jit_compile):
    """The GAN `train_step` of the Keras examples, as one `tf.function`."""
    generator, discriminator = players(latent_dim)
    g_optimizer, d_optimizer = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)
    g_optimizer.build(generator.trainable_variables)
    d_optimizer.build(discriminator.trainable_variables)
    seeds = keras.random.SeedGenerator(0)
    critic_steps = 5 if wasserstein else 1

    def bce(logits, label):
        labels = tf.fill(tf.shape(logits), label)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x):
        batch = tf.shape(x)[0]
        for _ in range(critic_steps):
            z = keras.random.normal((batch, latent_dim), seed=seeds)
            fake = generator(z, training=True)
            with tf.GradientTape() as tape:
                real_logits = discriminator(x, training=True)
                fake_logits = discriminator(fake, training=True)
                if wasserstein:
                    epsilon = keras.random.uniform((batch, 1), seed=seeds)
                    mixed = x + epsilon * (fake - x)
                    with tf.GradientTape() as inner:
                        inner.watch(mixed)
                        mixed_scores = discriminator(mixed, training=True)
                    grads = inner.gradient(mixed_scores, mixed)
                    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-12)
                    d_loss = tf.reduce_mean(fake_logits) - tf.reduce_mean(real_logits)
                    d_loss += 10.0 * tf.reduce_mean(tf.square(norm - 1.0))
                else:
                    d_loss = bce(real_logits, 1.0) + bce(fake_logits, 0.0)
            d_vars = discriminator.trainable_variables
            d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        z = keras.random.normal((batch, latent_dim), seed=seeds)
        with tf.GradientTape() as tape:
            fake_logits = discriminator(generator(z, training=True), training=True)
            g_loss = -tf.reduce_mean(fake_logits) if wasserstein else bce(fake_logits, 1.0)
        g_vars = generator.trainable_variables
        g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)
        return d_loss + g_loss

    return step


def tdg_step(players, latent_dim, wasserstein, jit_compile):
    """`tdg.models.GAN.train_step` (what `fit` runs, minus Keras's loop), as one `tf.function`."""
    generator, discriminator = players(latent_dim)
    loss, steps = ("wasserstein", 5) if wasserstein else ("non_saturating", 1)
    gan = tdg.models.GAN(
        generator, discriminator, latent_dim, loss=loss, discriminator_steps=steps, seed=0
    )
    gan.compile(
        generator_optimizer=keras.optimizers.Adam(1e-4),
        discriminator_optimizer=keras.optimizers.Adam(1e-4),
    )

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x):
        logs = gan.train_step(x)
        return logs["d_loss"] + logs["g_loss"]

    return step


def main(argv=None):
    args = parse_timing_args(
        __doc__.split("\n", 1)[0], argv, rounds=6, budget=0.25, quick_budget=0.1
    )
    rng = np.random.default_rng(0)
    for name, (players, latent_dim, data_shape, batch, wasserstein) in SHAPES.items():
        x = tf.constant(rng.random((batch, *data_shape)).astype("float32"))
        contenders = {}
        for kind in KINDS:
            make = tdg_step if kind == "tdg" else hand_written_step
            for mode in args.modes:
                step = make(players, latent_dim, wasserstein, mode == "xla")
                contenders[kind, mode] = Contender(f"{kind} ({mode})", step, (x,))
        print(f"\n[{name}] warming up {len(contenders)} contenders ...", file=sys.stderr)
        run_contenders(list(contenders.values()), args)
        report(f"GAN training step, {name}, batch {batch}", contenders, RATIOS, args.modes)


if __name__ == "__main__":
    main()
