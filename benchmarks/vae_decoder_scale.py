"""How close a linear VAE with a heteroscedastic decoder gets to PPCA, by `scale_slope`.

The setting of issue 18: PPCA data (n = 4000, D = 6, K = 2, noise 0.3, the
loadings and mean drawn from N(0, 1) per teacher), encoder and decoder one
`Dense` each, the decoder ending in `tdg.heads.IndependentNormal(6)` (a scale
per example), Adam(0.01), batch 200, 150 epochs under XLA. Prints, per slope,
`exact PPCA log-likelihood - ELBO` (nats per example) for each teacher.

Run: `python benchmarks/vae_decoder_scale.py [--slopes 1 0.3] [--teachers 0 1 2 3]`
(about 15 s per teacher and slope on 2 cores).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

N, DATA_DIM, LATENT_DIM, NOISE = 4000, 6, 2, 0.3


def ppca_data(teacher):
    rng = np.random.RandomState(teacher)
    loadings, mean = rng.randn(DATA_DIM, LATENT_DIM), rng.randn(DATA_DIM)
    x = rng.randn(N, LATENT_DIM) @ loadings.T + mean + NOISE * rng.randn(N, DATA_DIM)
    return x.astype("float32")


def ppca_log_likelihood(x):
    """Tipping & Bishop's maximum log-likelihood per example, closed form."""
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    noise_variance = eigenvalues[LATENT_DIM:].mean()
    return -0.5 * (
        DATA_DIM * np.log(2 * np.pi)
        + np.sum(np.log(eigenvalues[:LATENT_DIM]))
        + (DATA_DIM - LATENT_DIM) * np.log(noise_variance)
        + DATA_DIM
    )


def gap(teacher, slope):
    x = ppca_data(teacher)
    keras.utils.set_random_seed(teacher)
    q = tdg.heads.IndependentNormal(LATENT_DIM)
    p = tdg.heads.IndependentNormal(DATA_DIM, scale_slope=slope)
    encoder = keras.Sequential([keras.Input((DATA_DIM,)), keras.layers.Dense(q.input_size), q])
    decoder = keras.Sequential([keras.Input((LATENT_DIM,)), keras.layers.Dense(p.input_size), p])
    vae = tdg.models.VAE(encoder, decoder, seed=teacher)
    vae.compile(keras.optimizers.Adam(0.01), jit_compile=True)
    vae.fit(x, batch_size=200, epochs=150, verbose=0)
    elbo = float(tf.reduce_mean(vae.elbo(x, num_samples=200, batch_size=len(x))))
    return ppca_log_likelihood(x) - elbo


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slopes", nargs="+", type=float, default=[1.0, 0.3])
    parser.add_argument("--teachers", nargs="+", type=int, default=[0, 1, 2, 3])
    args = parser.parse_args()
    print("| scale_slope | " + " | ".join(f"teacher {t}" for t in args.teachers) + " |")
    print("|---" * (len(args.teachers) + 1) + "|")
    for slope in args.slopes:
        gaps = [gap(teacher, slope) for teacher in args.teachers]
        print(f"| {slope:g} | " + " | ".join(f"{g:.3f}" for g in gaps) + " |", flush=True)


if __name__ == "__main__":
    main()
