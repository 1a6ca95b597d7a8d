"""UCI regression benchmark: every posterior of `tdg.inference` next to VI and MC dropout.

The protocol of Hernández-Lobato & Adams (2015), used by Gal & Ghahramani
(2016) and Lakshminarayanan et al. (2017): random 90/10 train/test splits, a
network with one hidden layer of 50 ReLU units, test RMSE and test
log-likelihood (of the predictive mixture, per example, in the target's own
units), reported as mean ± standard error over the splits. Every network ends
in `tdg.heads.IndependentNormal()`, so it predicts a noise scale per input.

Methods: MAP (a plain Keras MLP, Gaussian prior as weight decay), VI
(`DenseFlipout`, KL weight 1/N), MC dropout (`MCDropout` after the hidden
layer), SWAG (the callback riding on the MAP run), Laplace (post hoc on the
MAP network: last-layer KFAC and all-weights diagonal, prior precision tuned
on the evidence), SGLD (started at the MAP weights, thinned samples kept by
`CollectSamples`), HMC (full-batch, 4 chains, on fewer splits: it is the
slowest) and a deep ensemble (5 members, adversarial training with
epsilon = 0.01 as in the paper).

Data: the only offline UCI regression sets, Boston housing (506 towns, 13
features; mlxtend) and diabetes (442 patients, 10 features; scikit-learn),
through `tdg.datasets`. Features are standardised with the training split's
statistics, targets too for training; every number is in the original units.

Run from the repository root, after `pip install -e ".[examples]"` there:

    python examples/uci_regression.py [--splits 20] [--hmc-splits 5]
        [--datasets boston diabetes] [--methods map vi ...] [--seed 0] [--quick]

About 10 minutes on two CPU cores (20 splits of both data sets, 587 s after
TensorFlow's start-up); `--quick` (2 splits, 6 passes) takes about a minute and
writes under `examples/output/quick/`. The table goes to
`examples/output/uci_regression.md`. Measured with `--seed 0`:

| Data set | Method | Splits | Test RMSE | Test LL | Seconds per split |
|---|---|---|---|---|---|
| boston | MAP | 20 | 3.18 ± 0.20 | -2.83 ± 0.12 | 1.0 |
| boston | VI (flipout) | 20 | 3.26 ± 0.22 | -2.49 ± 0.05 | 1.5 |
| boston | MC dropout | 20 | 3.23 ± 0.22 | -2.48 ± 0.05 | 1.1 |
| boston | SWAG | 20 | 3.14 ± 0.21 | -2.56 ± 0.08 | 1.1 |
| boston | Laplace, last layer, KFAC | 20 | 3.18 ± 0.20 | -2.59 ± 0.07 | 1.8 |
| boston | Laplace, all weights, diag | 20 | 3.24 ± 0.19 | -2.45 ± 0.04 | 2.0 |
| boston | SGLD | 20 | 3.17 ± 0.21 | -2.64 ± 0.09 | 2.9 |
| boston | HMC | 5 | 3.13 ± 0.35 | -2.38 ± 0.08 | 9.0 |
| boston | Deep ensemble (5, adversarial) | 20 | 3.12 ± 0.22 | -2.47 ± 0.08 | 5.4 |
| diabetes | MAP | 20 | 56.89 ± 1.16 | -5.60 ± 0.06 | 0.9 |
| diabetes | VI (flipout) | 20 | 57.12 ± 1.17 | -5.48 ± 0.04 | 1.5 |
| diabetes | MC dropout | 20 | 57.23 ± 1.11 | -5.49 ± 0.03 | 0.9 |
| diabetes | SWAG | 20 | 56.65 ± 1.13 | -5.51 ± 0.04 | 1.0 |
| diabetes | Laplace, last layer, KFAC | 20 | 56.87 ± 1.16 | -5.51 ± 0.04 | 1.8 |
| diabetes | Laplace, all weights, diag | 20 | 56.82 ± 1.05 | -5.44 ± 0.02 | 2.0 |
| diabetes | SGLD | 20 | 57.84 ± 0.97 | -5.54 ± 0.03 | 2.7 |
| diabetes | HMC | 5 | 54.59 ± 1.54 | -5.40 ± 0.05 | 8.6 |
| diabetes | Deep ensemble (5, adversarial) | 20 | 56.30 ± 1.30 | -5.47 ± 0.04 | 5.4 |

Largest split R-hat of HMC's chains, per split: Boston 997, 2540, 1260, 760,
2020; diabetes 398, 342, 169, 886, 573 (mixed chains give < 1.01).

The papers' numbers come from their own 20 splits, so agreement is within
the standard errors, not to the digit. Published numbers for
Boston (20 splits; RMSE / LL): PBP 3.01 ± 0.18 / -2.57 ± 0.09
(Hernández-Lobato & Adams 2015), MC dropout 2.97 ± 0.19 / -2.46 ± 0.06 (Gal &
Ghahramani 2016, with a grid search over dropout rate and noise precision per
split that this script does not do), deep ensembles 3.28 ± 1.00 / -2.41 ± 0.25
(Lakshminarayanan et al. 2017). The papers report no diabetes numbers.

On Boston every Bayesian method improves MAP's log-likelihood (-2.83) by
0.2 to 0.4 nats at equal RMSE; the all-weights diagonal Laplace (-2.45), the
ensemble (-2.47), MC dropout (-2.48) and VI (-2.49) match the published MC
dropout (-2.46) and come within a standard error of the published ensemble
(-2.41), all better than PBP (-2.57). RMSE (3.1-3.3) is within the
published spread (2.97-3.28). HMC's chains do not mix (largest R-hat
hundreds to thousands: each chain stays near its own mode around the MAP
weights), so its row is a local exploration, not the posterior; its better
log-likelihood comes from 5 splits only. On diabetes the methods differ by
less than their standard errors except MAP, which is worst.
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf

import tfp_deepgen as tdg

DATASETS = {"boston": tdg.datasets.load_boston_housing, "diabetes": tdg.datasets.load_diabetes}
METHODS = (
    "map",
    "vi",
    "mc_dropout",
    "swag",
    "laplace_kron",
    "laplace_diag",
    "sgld",
    "hmc",
    "ensemble",
)
LABELS = {
    "map": "MAP",
    "vi": "VI (flipout)",
    "mc_dropout": "MC dropout",
    "swag": "SWAG",
    "laplace_kron": "Laplace, last layer, KFAC",
    "laplace_diag": "Laplace, all weights, diag",
    "sgld": "SGLD",
    "hmc": "HMC",
    "ensemble": "Deep ensemble (5, adversarial)",
}
TEST_FRACTION = 0.1
HIDDEN_UNITS = 50
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
# Passes over the training data (the papers' 40 epochs); 400 overfitted MAP's noise
# scale on Boston (test LL -5.8 against -3.3, 2 splits), and VI and MC dropout did
# no better with them.
PASSES = 40
PASSES_PER_EPOCH = 1  # SWAG collects once per Keras epoch: 20 snapshots
PRIOR_PRECISION = 1.0  # Gaussian prior N(0, 1) on the weights of MAP, SGLD and HMC
DROPOUT_RATE = 0.05
SGLD_PASSES, SGLD_BURN_IN_PASSES, SGLD_THINNING_PASSES = 200, 50, 3
NUM_SAMPLES = 100  # Monte-Carlo samples per prediction
HMC_BURN_IN, HMC_RESULTS = 500, 250  # steps per chain; 4 chains
QUICK = dict(passes=6, sgld_passes=12, sgld_burn_in=4, sgld_thinning=1, hmc=(40, 20))


def mlp(num_inputs, num_train, method, seed):
    """The 1 x 50 ReLU network of `method`, ending in an `IndependentNormal` head."""
    head = tdg.heads.IndependentNormal()
    if method == "vi":
        hidden = [
            tdg.layers.DenseFlipout(
                HIDDEN_UNITS, activation="relu", kl_weight=1 / num_train, seed=seed
            ),
            tdg.layers.DenseFlipout(head.input_size, kl_weight=1 / num_train, seed=seed + 1),
        ]
    else:
        # Keras adds `l2 * sum(w**2)` to the mean loss: the prior N(0, 1/precision)
        # on every weight is `precision / (2 N) * sum(w**2)` per example.
        decay = dict(
            kernel_regularizer=keras.regularizers.L2(PRIOR_PRECISION / (2 * num_train)),
            bias_regularizer=keras.regularizers.L2(PRIOR_PRECISION / (2 * num_train)),
        )
        hidden = [keras.layers.Dense(HIDDEN_UNITS, activation="relu", **decay)]
        if method == "mc_dropout":
            hidden.append(tdg.layers.MCDropout(DROPOUT_RATE, seed=seed))
        hidden.append(keras.layers.Dense(head.input_size, **decay))
    return keras.Sequential([keras.Input((num_inputs,)), *hidden, head])


def batches(x, z, passes_per_epoch, seed):
    """Shuffled equal-sized batches; one Keras epoch is `passes_per_epoch` passes."""
    return (
        tf.data.Dataset.from_tensor_slices((x, z))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE, drop_remainder=True)
        .repeat(passes_per_epoch)
    )


def train(model, x, z, passes, seed, optimizer=None, callbacks=()):
    steps_per_pass = len(x) // BATCH_SIZE
    passes_per_epoch = min(PASSES_PER_EPOCH, passes)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(LEARNING_RATE),
        loss=tdg.heads.final_head(model).loss,
        steps_per_execution=steps_per_pass,
    )
    model.fit(
        batches(x, z, passes_per_epoch, seed),
        epochs=max(1, passes // passes_per_epoch),
        shuffle=False,  # the dataset reshuffles itself
        verbose=0,
        callbacks=list(callbacks),
    )
    return model


def copy_of(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def evaluate(model, x, y, y_mean, y_sd, num_samples):
    """Test RMSE and mean log predictive density of `y`, in its own units."""
    head = tdg.heads.final_head(model)
    params = tdg.predictive.MonteCarloPredictive(model, num_samples).parameter_samples(x)
    z = (y - y_mean) / y_sd
    log_probs = head.distribution(params).log_prob(z[None, :, None])  # (S, n)
    # The predictive density is the mixture's: average the densities, then log.
    log_mixture = tf.reduce_logsumexp(log_probs, axis=0) - np.log(num_samples)
    log_likelihood = float(np.mean(log_mixture)) - np.log(y_sd)
    mean_z = np.mean(head.distribution(params).mean().numpy()[..., 0], axis=0)
    rmse = float(np.sqrt(np.mean((mean_z * y_sd + y_mean - y) ** 2)))
    return rmse, log_likelihood


def run_split(load, split, methods, settings, seed):
    """{method: (rmse, log_likelihood, seconds)} on one random split."""
    (x_train, y_train), (x_test, y_test) = load(TEST_FRACTION, seed=seed + split)
    y_mean, y_sd = float(y_train.mean()), float(y_train.std())
    z_train = ((y_train - y_mean) / y_sd)[:, None].astype("float32")
    n, d = x_train.shape
    results = {}

    def record(method, model, num_samples, started):
        rmse, ll = evaluate(model, x_test, y_test, y_mean, y_sd, num_samples)
        results[method] = (rmse, ll, time.perf_counter() - started)

    model_seed = 1000 * (seed + split)
    map_methods = {"map", "swag", "laplace_kron", "laplace_diag", "sgld", "hmc"}
    if map_methods & set(methods):
        started = time.perf_counter()
        keras.utils.set_random_seed(model_seed)
        swag = tdg.inference.SWAG(rank=20)
        trained = train(
            mlp(d, n, "map", model_seed),
            x_train,
            z_train,
            settings["passes"],
            model_seed,
            callbacks=[swag],
        )
        fit_seconds = time.perf_counter() - started
        map_model = copy_of(trained)  # SWAG's posterior moves `trained` to the SWA mean
        if "map" in methods:
            record("map", map_model, 1, started)
        if "swag" in methods:
            started = time.perf_counter() - fit_seconds
            record("swag", swag.posterior(seed=model_seed), NUM_SAMPLES, started)
        for method, subset, hessian in (
            ("laplace_kron", "last_layer", "kron"),
            ("laplace_diag", "all", "diag"),
        ):
            if method in methods:
                started = time.perf_counter() - fit_seconds
                laplace = tdg.inference.Laplace(map_model, subset, hessian, seed=model_seed)
                laplace.fit(x_train, z_train)
                laplace.optimize_prior_precision()
                record(method, laplace, NUM_SAMPLES, started)
        if "sgld" in methods:
            started = time.perf_counter() - fit_seconds
            steps_per_pass = n // BATCH_SIZE
            collector = tdg.inference.CollectSamples(
                burn_in=settings["sgld_burn_in"] * steps_per_pass,
                thinning=settings["sgld_thinning"] * steps_per_pass,
            )
            sgld = tdg.inference.SGLD(data_size=n, prior_precision=PRIOR_PRECISION, seed=model_seed)
            train(
                copy_of(map_model),
                x_train,
                z_train,
                settings["sgld_passes"],
                model_seed,
                optimizer=sgld,
                callbacks=[collector],
            )
            samples = collector.posterior()
            record("sgld", samples, samples.num_stored, started)
        if "hmc" in methods and split < settings["hmc_splits"]:
            started = time.perf_counter() - fit_seconds
            burn_in, kept = settings["hmc"]
            hmc = tdg.inference.HMC(
                map_model,
                prior_precision=PRIOR_PRECISION,
                num_burnin_steps=burn_in,
                num_results=kept,
                seed=model_seed,
            )
            samples = hmc.sample(x_train, z_train)
            results["hmc_r_hat"] = hmc.diagnostics["max_r_hat"]
            print(
                f"    HMC: max R-hat {results['hmc_r_hat']:.3g}, "
                f"min ESS {hmc.diagnostics['min_ess']:.0f}"
            )
            record("hmc", samples, samples.num_stored, started)
    for method in ("vi", "mc_dropout"):
        if method in methods:
            started = time.perf_counter()
            keras.utils.set_random_seed(model_seed + 1)
            model = train(
                mlp(d, n, method, model_seed + 1),
                x_train,
                z_train,
                settings["passes"],
                model_seed + 1,
            )
            record(method, model, NUM_SAMPLES, started)
    if "ensemble" in methods:
        started = time.perf_counter()
        keras.utils.set_random_seed(model_seed + 2)
        ensemble = tdg.inference.DeepEnsemble(
            lambda: mlp(d, n, "map", None), members=5, adversarial_epsilon=0.01, seed=model_seed
        )
        train(ensemble, x_train, z_train, settings["passes"], model_seed + 2)
        record("ensemble", ensemble, 5 * (NUM_SAMPLES // 5), started)
    return results


def summary(values):
    """`mean ± standard error` of the per-split values."""
    values = np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1) / np.sqrt(len(values)):.2f}"


def table(results, methods):
    """A markdown table: one row per data set and method."""
    lines = [
        "| Data set | Method | Splits | Test RMSE | Test LL | Seconds per split |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, per_split in results.items():
        for method in methods:
            rows = [split[method] for split in per_split if method in split]
            if not rows:
                continue
            rmse, ll, seconds = zip(*rows, strict=True)
            lines.append(
                f"| {dataset} | {LABELS[method]} | {len(rows)} | {summary(rmse)} | "
                f"{summary(ll)} | {np.mean(seconds):.1f} |"
            )
    for dataset, per_split in results.items():
        r_hats = [split["hmc_r_hat"] for split in per_split if "hmc_r_hat" in split]
        if r_hats:
            lines.append(
                f"\nHMC on {dataset}: largest split R-hat over the weights, per split: "
                + ", ".join(f"{r:.3g}" for r in r_hats)
                + " (mixed chains give < 1.01)."
            )
    return "\n".join(lines)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--splits",
        type=int,
        default=20,
        help="random 90/10 splits per data set (default: 20, as in the papers)",
    )
    parser.add_argument(
        "--hmc-splits",
        type=int,
        default=5,
        help="splits HMC runs on, the first ones (default: 5; it is the slowest method)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=sorted(DATASETS),
        default=sorted(DATASETS),
        help="data sets to run (default: boston diabetes)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="methods to run (default: all)",
    )
    _cli.add_seed_argument(parser)
    _cli.add_quick_argument(
        parser, f"2 splits, {QUICK['passes']} passes over the data, short SGLD and HMC chains"
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    for name in ("splits", "hmc_splits"):
        if getattr(args, name) < (1 if name == "splits" else 0):
            raise SystemExit(
                f"--{name.replace('_', '-')} must be positive; got {getattr(args, name)}"
            )
    splits = 2 if args.quick else args.splits
    settings = dict(
        passes=PASSES,
        sgld_passes=SGLD_PASSES,
        sgld_burn_in=SGLD_BURN_IN_PASSES,
        sgld_thinning=SGLD_THINNING_PASSES,
        hmc=(HMC_BURN_IN, HMC_RESULTS),
        hmc_splits=args.hmc_splits,
    )
    if args.quick:
        settings.update(QUICK)
    methods = [method for method in METHODS if method in args.methods]
    start = time.perf_counter()
    results = {}
    for dataset in args.datasets:
        results[dataset] = []
        for split in range(splits):
            print(f"{dataset}, split {split + 1}/{splits}", flush=True)
            scores = run_split(DATASETS[dataset], split, methods, settings, args.seed)
            for method in methods:
                if method not in scores:
                    continue
                rmse, ll, seconds = scores[method]
                print(f"  {LABELS[method]:<32} RMSE {rmse:6.3f}  LL {ll:7.3f}  ({seconds:.1f} s)")
            results[dataset].append(scores)
    text = table(results, methods)
    print("\nMean ± standard error over the splits (test LL per example, original units):")
    print(text)
    path = _cli.output_dir(args.quick) / "uci_regression.md"
    path.write_text(
        f"# UCI regression ({splits} splits, seed {args.seed})\n\n{text}\n", encoding="utf-8"
    )
    print(f"\nSaved the table to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
