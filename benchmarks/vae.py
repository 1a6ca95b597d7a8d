"""Training-step time of `tdg.models.VAE` against hand-written VAEs, side by side.

Run from the repository root (2 shared CPU cores: about 2 minutes, much of it XLA
compilation; ``--quick``: under a minute):

    python benchmarks/vae.py            # both shapes, XLA and graph mode
    python benchmarks/vae.py --quick    # fewer steps, for a smoke test
    python benchmarks/vae.py --xla-only

Every contender runs one `tf.function` per step (forward, negative ELBO per example,
backward, Adam update) on the same architecture: Burda et al.'s one-stochastic-layer
MLP for binarized MNIST (784-200-200-50, tanh, Bernoulli pixels; batch 100) and a
digits-sized one (64-64-64-8; batch 64). Contenders:

- ``keras``: the VAE a Keras user writes by hand (as in the Keras examples): encoder
  outputs mean and log-variance, ``z = mean + exp(logvar / 2) * eps`` with
  `keras.random.normal`, sigmoid cross-entropy plus the closed-form KL. The floor.
- ``tfp``: the same written with TFP distributions (``tfd.Normal(...).sample(seed=...)``,
  ``tfd.Bernoulli(logits).log_prob``, ``tfd.kl_divergence``), no tfp.layers.
- ``tdg``: ``tdg.models.VAE`` with ``IndependentNormal`` / ``IndependentBernoulli``
  heads (softplus scale, Philox normals, the label check of the Bernoulli head).
- ``tdg-iwae5``: the same with ``num_importance_samples=5`` (5 decoder passes).

No targets: the ratios are printed as measurements.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from _harness import (  # noqa: E402
    Contender,
    added_losses,
    make_loss_step,
    parse_timing_args,
    report,
    run_contenders,
)

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")
tfd = tfp.distributions

# name: (data_dim, hidden, latent_dim, batch)
SHAPES = {
    "MNIST 784-200-200-50": (784, 200, 50, 100),
    "digits 64-64-64-8": (64, 64, 8, 64),
}
KINDS = ("keras", "tfp", "tdg", "tdg-iwae5")
RATIOS = (("tdg", "keras"), ("tdg", "tfp"), ("tfp", "keras"), ("tdg-iwae5", "tdg"))


def mlp(inputs, hidden, outputs):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(outputs),
        ]
    )


def hand_written_step(data_dim, hidden, latent_dim, use_tfp, jit_compile):
    """A training step of a VAE written without tfp_deepgen."""
    encoder, decoder = mlp(data_dim, hidden, 2 * latent_dim), mlp(latent_dim, hidden, data_dim)
    variables = encoder.trainable_variables + decoder.trainable_variables
    seeds = keras.random.SeedGenerator(0)

    def negative_elbo(x):
        mean, log_variance = tf.split(encoder(x, training=True), 2, axis=-1)
        scale = tf.exp(0.5 * log_variance)
        if use_tfp:
            seed = tf.cast(tf.math.floormod(seeds.next(), tf.int32.max - 1), tf.int32)
            posterior = tfd.Independent(tfd.Normal(mean, scale), 1)
            z = posterior.sample(seed=seed)
            logits = decoder(z, training=True)
            log_likelihood = tfd.Independent(tfd.Bernoulli(logits=logits), 1).log_prob(x)
            prior = tfd.Independent(tfd.Normal(tf.zeros_like(mean), 1.0), 1)
            kl = tfd.kl_divergence(posterior, prior)
        else:
            z = mean + scale * keras.random.normal(tf.shape(mean), seed=seeds)
            logits = decoder(z, training=True)
            log_likelihood = -tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), -1
            )
            kl = 0.5 * tf.reduce_sum(
                tf.square(mean) + tf.exp(log_variance) - 1.0 - log_variance, -1
            )
        return -tf.reduce_mean(log_likelihood - kl)

    return make_loss_step(variables, negative_elbo, jit_compile)


def tdg_step(data_dim, hidden, latent_dim, num_importance_samples, jit_compile):
    """A training step of `tdg.models.VAE` (what `fit` runs, minus Keras's bookkeeping)."""
    q = tdg.heads.IndependentNormal(latent_dim)
    p = tdg.heads.IndependentBernoulli(data_dim)
    encoder = keras.Sequential([mlp(data_dim, hidden, q.input_size), q])
    decoder = keras.Sequential([mlp(latent_dim, hidden, p.input_size), p])
    vae = tdg.models.VAE(encoder, decoder, num_importance_samples=num_importance_samples, seed=0)
    vae.build((None, data_dim))
    return make_loss_step(vae.trainable_variables, added_losses(vae), jit_compile)


def make(kind, shape, jit_compile):
    data_dim, hidden, latent_dim, _ = shape
    if kind in ("keras", "tfp"):
        return hand_written_step(data_dim, hidden, latent_dim, kind == "tfp", jit_compile)
    k = 5 if kind == "tdg-iwae5" else 1
    return tdg_step(data_dim, hidden, latent_dim, k, jit_compile)


def main(argv=None):
    args = parse_timing_args(
        __doc__.split("\n", 1)[0], argv, rounds=6, budget=0.25, quick_budget=0.1
    )
    modes = args.modes
    rng = np.random.default_rng(0)
    for name, shape in SHAPES.items():
        data_dim, batch = shape[0], shape[3]
        x = tf.constant((rng.random((batch, data_dim)) < 0.3).astype("float32"))
        contenders = {
            (kind, mode): Contender(f"{kind} ({mode})", make(kind, shape, mode == "xla"), (x,))
            for kind in KINDS
            for mode in modes
        }
        print(f"\n[{name}] warming up {len(contenders)} contenders ...", file=sys.stderr)
        run_contenders(list(contenders.values()), args)
        report(f"VAE training step, {name}, batch {batch}", contenders, RATIOS, modes)


if __name__ == "__main__":
    main()
