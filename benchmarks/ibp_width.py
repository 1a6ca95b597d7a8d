"""How many units `tdg.layers.IBPDense` keeps on data from a teacher of known width.

The setting of issue 18, as a user writes it: a teacher tanh network with k
hidden units (`tdg.datasets.teacher_network_regression`, 2,000 examples,
noise 0.1), a student `IBPDense(50, activation="tanh", kl_weight=1/n)` +
`Dense(1)` with the MSE loss, Adam(0.01), batch 200. Two gate starts are
trained per teacher, and each is counted at three thresholds:

- `uniform 0.9`: every gate starts at p = 0.9 (the default up to 0.1.0);
- `prior`: gate k starts at the prior's E[pi_k] = (alpha / (1 + alpha))^(k+1)
  (the default now);
- thresholds 0.5 (the default of 0.1.0), 0.9 and 0.99 (the default now).

`--alpha` sets the IBP concentration (the layer's default, 10, otherwise; it
was 5 up to 0.1.0).

Prints the active units per teacher and, per row, how many teachers end
within +-1 of k. `--min-unit-stddev 0` draws the raw teachers, some of whose
units move y by a tenth of the noise.

Run: `python benchmarks/ibp_width.py [--teachers 100 101 102 103 104] [--epochs 300]`
(about 6 s per fit on 2 cores: 2 starts x 2 widths x 5 teachers, 2 minutes).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

THRESHOLDS = (0.5, 0.9, 0.99)


def fit_student(x, y, initial_probability, epochs, seed, **layer_kwargs):
    keras.utils.set_random_seed(seed)
    layer = tdg.layers.IBPDense(
        50,
        activation="tanh",
        kl_weight=1.0 / len(x),
        initial_probability=initial_probability,
        **layer_kwargs,
    )
    model = keras.Sequential([keras.Input(x.shape[1:]), layer, keras.layers.Dense(1)])
    steps = len(x) // 200
    model.compile(keras.optimizers.Adam(0.01), "mse", steps_per_execution=steps)
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(200, drop_remainder=True)
    )
    # All epochs as one Keras epoch: Keras's per-epoch overhead exceeds these steps.
    model.fit(batches.repeat(epochs), verbose=0)
    return layer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--widths", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--min-unit-stddev", type=float, default=None)
    parser.add_argument("--alpha", type=float, default=None, help="default: the layer's")
    parser.add_argument(
        "--kernel-prior-scale", type=float, default=None, help="variational weights, N(0, s)"
    )
    parser.add_argument("--starts", nargs="+", default=["uniform", "prior"])
    args = parser.parse_args()
    starts = {"uniform 0.9": 0.9, "prior": "prior"}
    starts = {name: start for name, start in starts.items() if name.split()[0] in args.starts}
    layer_kwargs = {}
    if args.alpha is not None:
        layer_kwargs["alpha"] = args.alpha
    if args.kernel_prior_scale is not None:
        layer_kwargs["kernel_prior"] = tdg.priors.Normal(0.0, args.kernel_prior_scale)
    for k in args.widths:
        counts = {(s, t): [] for s in starts for t in THRESHOLDS}
        for teacher in args.teachers:
            (x, y), _ = tdg.datasets.teacher_network_regression(
                k, min_unit_stddev=args.min_unit_stddev, seed=teacher
            )
            for name, start in starts.items():
                layer = fit_student(x, y, start, args.epochs, teacher, **layer_kwargs)
                for threshold in THRESHOLDS:
                    counts[name, threshold].append(layer.active_units(threshold))
        print(
            f"\nteacher width k={k}, teachers {args.teachers}, {args.epochs} epochs, "
            f"layer arguments {layer_kwargs or 'defaults'}"
        )
        print(f"{'gate start':<12} {'threshold':>9}  active units per teacher   within +-1")
        for (name, threshold), active in counts.items():
            hits = sum(abs(a - k) <= 1 for a in active)
            print(f"{name:<12} {threshold:>9}  {str(active):<26} {hits}/{len(active)}")


if __name__ == "__main__":
    main()
