"""Quickstart: a Bayesian MLP on scikit-learn's 8x8 digits, next to a plain MLP.

Both end in a `tdg.heads.Categorical` head and train with `model.fit`
under XLA. The script compares accuracy, negative log-likelihood and
expected calibration error (15 bins) on the held-out split, the Bayesian
model through its Monte-Carlo predictive (`tdg.predictive`), then exports
that predictive for TF Serving to `savedmodels/quickstart/1`.

Run from the repository root, after `pip install -e ".[examples]"` there:

    python examples/quickstart.py [--epochs 600] [--seed 0] [--quick]

About a minute on two CPU cores; `--quick` (20 epochs) takes a few seconds
of training and exports to `examples/output/quick/savedmodels/quickstart/1`
instead.
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf

import tfp_deepgen as tdg

EPOCHS = 600
BATCH_SIZE = 64
HIDDEN_UNITS = 128
PRIOR_SCALE = 2.0  # chosen by validation NLL among 1, 2, 3, 5 (see README)
NUM_SAMPLES = 50  # Monte-Carlo samples of the weights per prediction
QUICK_EPOCHS = 20
PROGRESS_EVERY = 100  # epochs per progress line when the output is not a terminal


def bayesian_mlp(num_inputs, num_classes, num_train, seed):
    kl_weight = 1.0 / num_train  # makes the training loss the negative ELBO per example
    return keras.Sequential(
        [
            # The input's name becomes the serving signatures' input key.
            keras.Input((num_inputs,), name="pixels"),
            tdg.layers.DenseFlipout(
                HIDDEN_UNITS,
                activation="relu",
                kernel_prior=tdg.priors.Normal(0.0, PRIOR_SCALE),
                kl_weight=kl_weight,
                seed=seed,
            ),
            tdg.layers.DenseFlipout(
                num_classes,
                kernel_prior=tdg.priors.Normal(0.0, PRIOR_SCALE),
                kl_weight=kl_weight,
                seed=seed + 1,
            ),
            tdg.heads.Categorical(num_classes),
        ],
        name="bayesian_mlp",
    )


def plain_mlp(num_inputs, num_classes):
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
            keras.layers.Dense(num_classes),
            tdg.heads.Categorical(num_classes),
        ],
        name="plain_mlp",
    )


def report(name, probs, labels):
    accuracy = np.mean(probs.argmax(axis=1) == labels)
    nll = tdg.metrics.negative_log_likelihood(labels, probs)
    ece = tdg.metrics.expected_calibration_error(labels, probs, num_bins=15)
    print(f"{name:<34} {accuracy:>8.4f} {float(nll):>8.4f} {float(ece):>8.4f}")


def training_batches(x, y, seed):
    # Equal-sized batches keep one XLA program: a ragged last batch would make
    # `fit` retrace and recompile. Reshuffling each epoch still visits every example.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    return dataset.batch(BATCH_SIZE, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train(model, x, y, epochs, seed, validation_data=None, callbacks=()):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=model.layers[-1].loss,  # the Categorical head's NLL
        metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=True,
        # Run a whole epoch per call into the compiled program: the digits
        # batches are tiny, so per-step Python overhead would dominate.
        steps_per_execution=len(x) // BATCH_SIZE,
    )
    batches = training_batches(x, y, seed)  # shuffles itself, hence shuffle=False below
    return model.fit(
        batches,
        epochs=epochs,
        shuffle=False,
        verbose=0,  # a line per epoch would be hundreds of lines: EpochProgress instead
        validation_data=validation_data,
        callbacks=[*callbacks, _cli.EpochProgress(PROGRESS_EVERY)],
    )


def tuned_plain_mlp(x, y, num_classes, max_epochs, seed):
    """A plain MLP given its fairest training length.

    Unregularised, it overfits long before EPOCHS: the number of epochs (at
    most `max_epochs`) is picked by validation loss on a held-out 20% of the
    training split, then the model is retrained on the whole training split
    for that many epochs.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    num_val = len(x) // 5
    val, fit = order[:num_val], order[num_val:]
    probe = plain_mlp(x.shape[1], num_classes)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=20, restore_best_weights=True)
    history = train(
        probe, x[fit], y[fit], max_epochs, seed, validation_data=(x[val], y[val]), callbacks=[stop]
    )
    best_epochs = int(np.argmin(history.history["val_loss"])) + 1
    print(f"plain MLP: best validation loss after {best_epochs} epochs; retraining on all")
    model = plain_mlp(x.shape[1], num_classes)
    train(model, x, y, best_epochs, seed)
    return model


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--epochs", type=int, help=f"epochs of the Bayesian MLP (default {EPOCHS}; --quick: 20)"
    )
    _cli.add_seed_argument(parser)
    _cli.add_quick_argument(parser, f"{QUICK_EPOCHS} epochs (unless --epochs)")
    return parser


def main():
    args = _cli.parse_args(build_parser())
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    seed = args.seed
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(test_fraction=0.2, seed=seed)
    num_inputs, num_classes, num_train = x_train.shape[1], 10, len(x_train)
    print(f"digits: {num_train} train, {len(x_test)} test, {num_inputs} pixels")

    bayesian = bayesian_mlp(num_inputs, num_classes, num_train, seed)
    print(f"\nBayesian MLP (DenseFlipout), {epochs} epochs")
    train(bayesian, x_train, y_train, epochs, seed, callbacks=[tdg.callbacks.KLDivergenceLogger()])

    print(f"\nPlain MLP (Dense), at most {epochs} epochs")
    plain = tuned_plain_mlp(x_train, y_train, num_classes, epochs, seed)

    mc_probs = tdg.predictive.predict(
        bayesian, x_test, num_samples=NUM_SAMPLES, outputs=["probabilities"]
    )["probabilities"]
    with tdg.layers.sampling_mode(bayesian, "mean"):
        mean_probs = tf.nn.softmax(bayesian.predict(x_test, verbose=0)).numpy()
    plain_probs = tf.nn.softmax(plain.predict(x_test, verbose=0)).numpy()

    header = f"test set ({len(x_test)} digits)"
    print(f"\n{header:<34} {'accuracy':>8} {'NLL':>8} {'ECE':>8}")
    report("plain MLP", plain_probs, y_test)
    report("Bayesian MLP, posterior mean", mean_probs, y_test)
    report(f"Bayesian MLP, MC predictive S={NUM_SAMPLES}", mc_probs, y_test)

    path = _cli.export(bayesian, "quickstart", args.quick, num_samples=NUM_SAMPLES)
    print(f"\nExported the MC predictive (S={NUM_SAMPLES}) to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
