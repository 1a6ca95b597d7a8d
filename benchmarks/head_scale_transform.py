"""TFP's "Probabilistic Layers Regression" case 2 (aleatoric noise), three heads side by side.

The tutorial fits `Dense(2)` followed by `tfd.Normal(loc=t[..., :1],
scale=1e-3 + softplus(0.05 * t[..., 1:]))` to 150 points of its synthetic data
(`y = 0.125 x (1 + sin x) + 5 + noise`, noise growing with x; its data seed 43),
Adam(0.01), 1,000 full-batch-of-32 epochs, loss `-log p(y)`. Contenders:

- `tutorial`: that model, written in plain Keras 3 with the distribution in the loss;
- `stock head`: `Dense(2)` + `tdg.heads.IndependentNormal(1)` with its defaults;
- `slope 1`: the same head with `scale_slope=1.0` (the transform of 0.1.0);
- `tutorial transform`: `IndependentNormal(1, min_scale=1e-3, scale_slope=0.05)`;
- `stock head, standardized x`: the stock head behind a
  `keras.layers.Normalization` adapted to x (x spans [-20, 60] raw).

Prints the final training NLL per example for each seed.

Run: `python benchmarks/head_scale_transform.py [--seeds 0 1 2] [--epochs 1000]
[--contenders tutorial "stock head" ...]`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

tfd = tfp.distributions


def tutorial_data(n=150, seed=43):
    """The tutorial's `load_dataset`: x uniform on [-20, 60], noise sd 3 (0.25 + g^2)."""
    rng = np.random.RandomState(seed)
    low, high = -20.0, 60.0
    x = (high - low) * rng.rand(n) + low
    g = (x - low) / (high - low)
    y = 0.125 * x * (1.0 + np.sin(x)) + 5.0 + rng.randn(n) * 3.0 * (0.25 + g**2)
    return x[:, None].astype("float32"), y[:, None].astype("float32")


def tutorial_nll(y, t):
    scale = 1e-3 + tf.math.softplus(0.05 * t[..., 1:])
    return -tfd.Normal(loc=t[..., :1], scale=scale).log_prob(y)


def train(head, x, y, epochs, seed, standardize=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((1,)), keras.layers.Dense(2)]
    if standardize:
        normalization = keras.layers.Normalization()
        normalization.adapt(x)
        layers.insert(1, normalization)
    loss = tutorial_nll
    if head is not None:
        layers.append(head)
        loss = head.loss
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(0.01), loss=loss)
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return history.history["loss"][-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--contenders", nargs="+", help="default: all")
    args = parser.parse_args(argv)
    x, y = tutorial_data()
    contenders = {
        "tutorial": lambda: (None, False),
        "stock head": lambda: (tdg.heads.IndependentNormal(1), False),
        "slope 1": lambda: (tdg.heads.IndependentNormal(1, scale_slope=1.0), False),
        "tutorial transform": lambda: (
            tdg.heads.IndependentNormal(1, min_scale=1e-3, scale_slope=0.05),
            False,
        ),
        "stock head, standardized x": lambda: (tdg.heads.IndependentNormal(1), True),
    }
    contenders = {name: contenders[name] for name in args.contenders or contenders}
    print(f"final training NLL per example after {args.epochs} epochs, seeds {args.seeds}")
    for name, make in contenders.items():
        losses = []
        for seed in args.seeds:
            head, standardize = make()
            losses.append(train(head, x, y, args.epochs, seed, standardize))
        print(f"{name:>28}: " + "  ".join(f"{value:.3f}" for value in losses))


if __name__ == "__main__":
    main()
