"""Heteroscedastic regression on Boston housing: a Bayesian MLP next to a plain one.

Both MLPs end in `tdg.heads.IndependentNormal()`, so each predicts, per town,
a mean *and* a noise scale of MEDV (median home value, $1000s): aleatoric
uncertainty that varies with the input. The Bayesian MLP (`DenseFlipout`
layers, `Normal(0, 0.3)` prior, KL weight 1 / number of training towns) adds
epistemic uncertainty, the spread of that mean over posterior weight samples.
The plain MLP (`keras.layers.Dense`, same shape, same head and loss) is given
its best training length by early stopping on a validation split.

Each pair is trained twice: on LSTAT (% lower-status population) alone, which
the figure shows, and on all 13 features. The script prints test NLL per town
(of the Monte-Carlo predictive mixture for the Bayesian MLP), RMSE and the
coverage and width of the 5%-95% predictive interval, all in $1000s; it saves
the figure to `examples/output/heteroscedastic_regression.png` and exports the
LSTAT-only Bayesian MLP's predictive for TF Serving to
`savedmodels/heteroscedastic_regression/1`. The models train on standardised
LSTAT and MEDV; the export takes raw LSTAT (a `keras.layers.Normalization`
layer with the training split's statistics goes in front of the trained
layers) and answers in $1000s (`target_mean` / `target_stddev`).

Run from the repository root, after `pip install -e ".[examples]"` there:

    python examples/heteroscedastic_regression.py [--seed 0] [--quick]

About 45 s on two CPU cores; `--quick` (50 passes) takes a few seconds of
training and writes its figure and export under `examples/output/quick/`.
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

import tfp_deepgen as tdg

PASSES = 1000  # passes over the training data (Bayesian MLP; cap for the plain one)
PASSES_PER_LOG = 100  # passes per Keras "epoch": one compiled call and one log line each
BATCH_SIZE = 32
HIDDEN_UNITS = 50
LEARNING_RATE = 3e-3
PRIOR_SCALE = 0.3  # chosen by validation NLL among 0.1, 0.3, 1 (seeds 0, 1)
NUM_SAMPLES = 100  # Monte-Carlo samples of the weights per prediction
PLOT_SAMPLES = 1000  # more for the figure: smooth bands on a 300-point grid
LSTAT = 12  # column of LSTAT among the 13 features
# --quick: 50 passes in 10 Keras epochs. Enough calls per compiled function keep
# TensorFlow from warning that the fits of the six models retrace too often.
QUICK_PASSES, QUICK_PASSES_PER_LOG = 50, 5
PROGRESS_PASSES = 200  # passes per progress line


def bayesian_mlp(num_inputs, num_train, seed):
    head = tdg.heads.IndependentNormal()  # heteroscedastic: the network outputs the scale
    # kl_weight = 1 / num_train makes the training loss the negative ELBO per example.
    variational = dict(kernel_prior=tdg.priors.Normal(0.0, PRIOR_SCALE), kl_weight=1 / num_train)
    return keras.Sequential(
        [
            keras.Input((num_inputs,), name="features"),
            tdg.layers.DenseFlipout(HIDDEN_UNITS, activation="relu", seed=seed, **variational),
            tdg.layers.DenseFlipout(head.input_size, seed=seed + 1, **variational),
            head,
        ],
        name="bayesian_mlp",
    )


def plain_mlp(num_inputs):
    head = tdg.heads.IndependentNormal()
    return keras.Sequential(
        [
            keras.Input((num_inputs,), name="features"),
            keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
            keras.layers.Dense(head.input_size),
            head,
        ],
        name="plain_mlp",
    )


def train(model, x, y, passes, seed, passes_per_log=PASSES_PER_LOG, callbacks=(), **fit_kwargs):
    # Equal-sized batches keep one XLA program; repeating the shuffled data
    # makes one Keras epoch `passes_per_log` passes, run in one compiled call.
    passes_per_log = min(passes_per_log, passes)
    steps = len(x) // BATCH_SIZE * passes_per_log
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(BATCH_SIZE, drop_remainder=True)
        .repeat(passes_per_log)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=model.layers[-1].loss,
        jit_compile=True,
        steps_per_execution=steps,
    )
    epochs = max(1, round(passes / passes_per_log))
    print(f"  {epochs} Keras epochs of {passes_per_log} passes over the data")
    progress = _cli.EpochProgress(every=max(1, PROGRESS_PASSES // passes_per_log))
    return model.fit(
        batches,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, progress],
        **fit_kwargs,
    )


def tuned_plain_mlp(x, y, max_passes, seed):
    """A plain MLP trained for the number of passes with the best validation NLL.

    The length (at most `max_passes`) is picked on a held-out 20% of the
    training split (checked every 10 passes), then the model is retrained on
    the whole split.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    val, fit = order[: len(x) // 5], order[len(x) // 5 :]
    probe = plain_mlp(x.shape[1])
    stop = keras.callbacks.EarlyStopping("val_loss", patience=20)
    history = train(
        probe,
        x[fit],
        y[fit],
        max_passes,
        seed,
        passes_per_log=10,
        validation_data=(x[val], y[val]),
        callbacks=[stop],
    )
    best_passes = 10 * (int(np.argmin(history.history["val_loss"])) + 1)
    print(f"plain MLP: best validation NLL after {best_passes} passes; retraining on all")
    model = plain_mlp(x.shape[1])
    train(model, x, y, best_passes, seed, passes_per_log=best_passes)
    return model


def evaluate(model, x, y, y_mean, y_sd, num_samples):
    """NLL per example, RMSE, coverage and width of the 90% interval, in y's units.

    The model predicts standardised targets `z = (y - y_mean) / y_sd`; the
    density of `y` is that of `z` divided by `y_sd`, so NLL_y = NLL_z + log y_sd.
    """
    head = model.layers[-1]
    params = tdg.predictive.MonteCarloPredictive(model, num_samples).parameter_samples(x)
    z = (y - y_mean) / y_sd
    log_probs = head.distribution(params).log_prob(z[None, :, None])  # (S, n)
    # The predictive is the mixture 1/S sum_s p(z | W_s): average densities, not logs.
    log_mixture = tf.reduce_logsumexp(log_probs, axis=0) - np.log(num_samples)
    nll = -np.mean(log_mixture) + np.log(y_sd)
    units = dict(target_mean=y_mean, target_stddev=y_sd)  # summaries in $1000s
    out = tdg.predictive.predict(
        model, x, num_samples, quantiles=(0.05, 0.95), outputs=("mean", "quantiles"), **units
    )
    mean = out["mean"][:, 0]
    lower, upper = out["quantiles"][:, :, 0].T
    rmse = np.sqrt(np.mean((mean - y) ** 2))
    coverage = float(tdg.metrics.interval_coverage(y, lower, upper))
    return nll, rmse, coverage, np.mean(upper - lower)


def serving_model(model, raw_lstat_train):
    """`model` behind a `Normalization` layer: takes raw LSTAT (the same layers
    and weights; the statistics are those the loader standardised with)."""
    normalize = keras.layers.Normalization(
        mean=raw_lstat_train.mean(), variance=raw_lstat_train.var(), name="standardize"
    )
    return keras.Sequential(
        [keras.Input((1,), name="lstat"), normalize, *model.layers], name="served_mlp"
    )


def plot(models, x_train, y_train, x_test, y_test, y_mean, y_sd, path):
    grid = np.linspace(min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max()), 300)
    grid = grid[:, None].astype("float32")
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (name, model, num_samples) in zip(axes, models, strict=True):
        out = tdg.predictive.predict(
            model, grid, num_samples, (0.05, 0.95), target_mean=y_mean, target_stddev=y_sd
        )
        mean = out["mean"][:, 0]
        lower, upper = out["quantiles"][:, :, 0].T
        epistemic = 2 * np.sqrt(out["epistemic_variance"][:, 0])
        ax.fill_between(grid[:, 0], lower, upper, color="C0", alpha=0.2, label="5%-95% predictive")
        if num_samples > 1:
            ax.fill_between(
                grid[:, 0],
                mean - epistemic,
                mean + epistemic,
                color="C0",
                alpha=0.45,
                label="mean ± 2 sd (epistemic)",
            )
        ax.plot(grid[:, 0], mean, color="C0", label="predictive mean")
        ax.scatter(x_train, y_train, s=8, color="0.4", alpha=0.6, label="train")
        ax.scatter(x_test, y_test, s=14, color="C1", marker="x", label="test")
        ax.set(title=name, xlabel="LSTAT, % lower-status population (standardised)")
        ax.legend(loc="upper right", fontsize="small")
    axes[0].set_ylabel("MEDV, median home value ($1000s)")
    figure.suptitle("Boston housing: heteroscedastic Normal head, MEDV given LSTAT")
    figure.savefig(path, dpi=120)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    _cli.add_seed_argument(parser)
    _cli.add_quick_argument(parser, f"{QUICK_PASSES} passes over the data")
    return parser


def main():
    args = _cli.parse_args(build_parser())
    seed = args.seed
    passes = QUICK_PASSES if args.quick else PASSES
    passes_per_log = QUICK_PASSES_PER_LOG if args.quick else PASSES_PER_LOG
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = tdg.datasets.load_boston_housing(0.2, seed)
    # Features come standardised with the training split's statistics; so are targets.
    y_mean, y_sd = float(y_train.mean()), float(y_train.std())
    z_train = ((y_train - y_mean) / y_sd)[:, None]  # (n, 1): one output per town
    print(f"Boston housing: {len(x_train)} train, {len(x_test)} test towns, 13 features")

    rows, trained = [], {}
    for features, columns in (("LSTAT", [LSTAT]), ("all 13", slice(None))):
        xs_train, xs_test = x_train[:, columns], x_test[:, columns]
        print(f"\nBayesian MLP (DenseFlipout), features: {features}")
        bayesian = bayesian_mlp(xs_train.shape[1], len(xs_train), seed)
        train(bayesian, xs_train, z_train, passes, seed, passes_per_log)
        print(f"\nPlain MLP (Dense), features: {features}")
        plain = tuned_plain_mlp(xs_train, z_train, passes, seed)
        trained[features] = bayesian, plain
        for name, model, num_samples in (
            ("plain MLP", plain, 1),
            (f"Bayesian MLP, MC S={NUM_SAMPLES}", bayesian, NUM_SAMPLES),
        ):
            metrics = evaluate(model, xs_test, y_test, y_mean, y_sd, num_samples)
            rows.append((features, name, *metrics))

    header = f"test set ({len(x_test)} towns), $1000s"
    print(f"\n{header:<48} {'NLL':>6} {'RMSE':>6} {'90% cov':>8} {'width':>6}")
    for features, name, nll, rmse, coverage, width in rows:
        print(f"{features:<7} {name:<40} {nll:>6.3f} {rmse:>6.3f} {coverage:>8.3f} {width:>6.2f}")

    bayesian, plain = trained["LSTAT"]
    figure_path = _cli.output_dir(args.quick) / "heteroscedastic_regression.png"
    plot(
        [("Plain MLP", plain, 1), (f"Bayesian MLP (MC, S={PLOT_SAMPLES})", bayesian, PLOT_SAMPLES)],
        x_train[:, LSTAT],
        y_train,
        x_test[:, LSTAT],
        y_test,
        y_mean,
        y_sd,
        figure_path,
    )
    print(f"\nSaved the figure to {figure_path}")

    # The export takes raw LSTAT and answers in $1000s.
    (raw_train, _), (raw_test, _) = tdg.datasets.load_boston_housing(0.2, seed, standardize=False)
    served = serving_model(bayesian, raw_train[:, LSTAT])
    with tdg.layers.sampling_mode(bayesian, "mean"):
        gap = np.abs(served(raw_test[:, [LSTAT]]) - bayesian(x_test[:, [LSTAT]])).max()
    print(f"\nRaw-input model vs trained model, posterior means: max difference {gap:.1e}")
    path = _cli.export(
        served,
        "heteroscedastic_regression",
        args.quick,
        num_samples=NUM_SAMPLES,
        target_mean=y_mean,
        target_stddev=y_sd,
    )
    print(f"Exported the LSTAT Bayesian MLP's predictive (S={NUM_SAMPLES}) to {path}")
    print("It takes raw LSTAT (% lower-status population) and answers in $1000s of MEDV.")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
