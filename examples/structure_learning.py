"""Structure learning: IBP gates pick the widths of an MLP on scikit-learn's 8x8 digits.

Both hidden layers are `tdg.layers.IBPDense` with an upper bound of 100 and
50 units: an Indian-Buffet-Process prior over which units are on, a learned
on/off probability per unit, and variational weights (`Normal(0, 1)` prior),
all trained by the negative ELBO per example (KL weight 1 / number of
training digits). After training, a unit is kept when its probability is
above 0.5; `tdg.structure.shrink` turns the gated network into a plain,
smaller Keras network that predicts what the gated one does with
deterministic gates (`tdg.layers.sampling_mode(model, "mean")`).

The gated network trains for 800 epochs with Adam and a cosine learning-rate
decay to zero (the gates settle as the rate vanishes). The script prints the
learned width of each layer and compares test accuracy, negative
log-likelihood and parameter counts of the gated network, its shrunk copy
and two plain MLPs: one of fixed widths 100 - 50 (the upper bounds), one of
the learned widths trained from scratch, each given its best training length
by early stopping on a validation split and then retrained. It plots each
layer's unit probabilities, sorted, to `examples/output/structure_learning.png`
and exports the shrunk network for TF Serving to
`savedmodels/structure_learning/1`.

Run from the repository root, after `pip install -e ".[examples]"` there:

    python examples/structure_learning.py [--seed 0] [--quick]

60-110 s on two CPU cores; `--quick` (100 epochs) takes about a minute
and writes its figure and export under `examples/output/quick/`.
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

import tfp_deepgen as tdg

MAX_UNITS = (100, 50)  # upper bounds of the two hidden layers' widths
NUM_CLASSES = 10
ALPHA = 5.0  # IBP prior: about ALPHA active units expected per layer
TEMPERATURE = 0.5  # binary Concrete relaxation of the gates in training
PRIOR_SCALE = 1.0  # Normal(0, PRIOR_SCALE) prior on the gated layers' weights
EPOCHS = 800  # widths still shrink at 400 epochs, level off by about 800
PLAIN_MAX_EPOCHS = 200  # cap for the plain MLPs, which stop early
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
# --quick: epochs of the gated MLP (with fewer, no unit is active yet: nothing to
# shrink to) and the plain MLPs' cap.
QUICK_EPOCHS, QUICK_PLAIN_MAX_EPOCHS = 100, 20


def gated_mlp(num_inputs, num_train, seed):
    def ibp_dense(units, index):
        return tdg.layers.IBPDense(
            units,
            alpha=ALPHA,
            temperature=TEMPERATURE,
            activation="relu",
            kernel_prior=tdg.priors.Normal(0.0, PRIOR_SCALE),
            # The training loss is then the negative ELBO per example.
            kl_weight=1.0 / num_train,
            seed=seed + 10 * index,
            name=f"hidden{index + 1}",
        )

    return keras.Sequential(
        [
            keras.Input((num_inputs,), name="pixels"),
            *(ibp_dense(units, i) for i, units in enumerate(MAX_UNITS)),
            keras.layers.Dense(NUM_CLASSES, name="logits"),
            tdg.heads.Categorical(NUM_CLASSES),
        ],
        name="gated_mlp",
    )


def plain_mlp(num_inputs, widths):
    return keras.Sequential(
        [
            keras.Input((num_inputs,), name="pixels"),
            *(
                keras.layers.Dense(units, activation="relu", name=f"hidden{i + 1}")
                for i, units in enumerate(widths)
            ),
            keras.layers.Dense(NUM_CLASSES, name="logits"),
            tdg.heads.Categorical(NUM_CLASSES),
        ],
        name="plain_mlp",
    )


def train(model, x, y, epochs, seed, decay_epochs=None, validation_data=None, callbacks=()):
    steps = len(x) // BATCH_SIZE
    # Cosine decay to zero over `decay_epochs` (default: all of them): as the
    # rate vanishes, the gate probabilities stop moving and settle.
    decay_steps = steps * (epochs if decay_epochs is None else decay_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=model.layers[-1].loss,  # the Categorical head's NLL
        metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=True,
        steps_per_execution=steps,  # one compiled call per epoch
    )
    # Equal-sized batches keep one XLA program; the dataset reshuffles each epoch.
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    data = data.batch(BATCH_SIZE, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return model.fit(
        data,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        validation_data=validation_data,
        callbacks=list(callbacks),
    )


def tuned_plain_mlp(x, y, widths, max_epochs, seed):
    """A plain MLP of the given widths, given its fairest training length.

    Unregularised, it overfits long before EPOCHS: the number of epochs is
    picked by validation loss on a held-out 20% of the training split (early
    stopping, patience 20, at most `max_epochs`), then the model is
    retrained on the whole training split for that many epochs along the same
    learning-rate schedule (decaying over `max_epochs`, cut where the probe
    stopped).
    """
    order = np.random.default_rng(seed).permutation(len(x))
    num_val = len(x) // 5
    val, fit = order[:num_val], order[num_val:]
    probe = plain_mlp(x.shape[1], widths)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=20, restore_best_weights=True)
    history = train(probe, x[fit], y[fit], max_epochs, seed, max_epochs, (x[val], y[val]), [stop])
    best_epochs = int(np.argmin(history.history["val_loss"])) + 1
    print(f"  best validation loss after {best_epochs} epochs; retraining on all")
    model = plain_mlp(x.shape[1], widths)
    train(model, x, y, best_epochs, seed, decay_epochs=max_epochs)
    return model


class EpochReport(keras.callbacks.Callback):
    def __init__(self, every):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            widths = tdg.structure.active_widths(self.model)
            text = ", ".join(f"{key} {value:.4g}" for key, value in sorted(logs.items()))
            print(f"  epoch {epoch + 1}: {text}; widths {list(widths.values())}", flush=True)


def logits_of(model, x):
    return model.predict(x, batch_size=len(x), verbose=0)


def report(name, widths, model, logits, labels):
    probs = tf.nn.softmax(logits).numpy()
    accuracy = np.mean(probs.argmax(axis=1) == labels)
    nll = tdg.metrics.negative_log_likelihood(labels, probs)
    text = "-".join(str(width) for width in widths)
    print(f"{name:<40} {text:>7} {accuracy:>8.4f} {float(nll):>7.4f} {model.count_params():>7}")


def plot(gated, seed, path):
    gates = [layer for layer in gated.layers if isinstance(layer, tdg.layers.IBPDense)]
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, len(gates), sharey=True)
    for ax, gate in zip(axes, gates, strict=True):
        probabilities = np.sort(gate.unit_probabilities())[::-1]
        active = gate.active_units()
        rank = np.arange(1, len(probabilities) + 1)
        ax.bar(rank, probabilities, width=1.0, color=np.where(rank <= active, "C0", "0.7"))
        ax.axhline(gate.threshold, color="C3", linestyle="--", label=f"threshold {gate.threshold}")
        ax.set(
            title=f"{gate.name}: {active} of {gate.units} units active",
            xlabel="unit, sorted by probability",
            xlim=(0.5, len(probabilities) + 0.5),
            ylim=(0, 1.02),
        )
        ax.legend(loc="upper right", fontsize="small")
    axes[0].set_ylabel("posterior probability unit is on, $p_k$")
    figure.suptitle(f"IBP gates on 8x8 digits (alpha={ALPHA:g}, seed {seed})")
    figure.savefig(path, dpi=120)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"epochs of the gated MLP (default {EPOCHS}; --quick: {QUICK_EPOCHS})",
    )
    _cli.add_seed_argument(parser)
    _cli.add_quick_argument(
        parser,
        f"{QUICK_EPOCHS} epochs for the gated MLP (unless --epochs), at most "
        f"{QUICK_PLAIN_MAX_EPOCHS} for the plain ones",
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    seed = args.seed
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    plain_max_epochs = QUICK_PLAIN_MAX_EPOCHS if args.quick else PLAIN_MAX_EPOCHS
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(test_fraction=0.2, seed=seed)
    num_inputs, num_train = x_train.shape[1], len(x_train)
    print(f"digits: {num_train} train, {len(x_test)} test, {num_inputs} pixels")

    print(f"\ngated MLP (IBPDense {MAX_UNITS[0]} - IBPDense {MAX_UNITS[1]}), {epochs} epochs")
    gated = gated_mlp(num_inputs, num_train, seed)
    train(gated, x_train, y_train, epochs, seed, callbacks=[EpochReport(max(1, epochs // 4))])

    shrunk = tdg.structure.shrink(gated)
    with tdg.layers.sampling_mode(gated, "mean"):  # a unit is on iff p_k > 0.5
        gated_logits = logits_of(gated, x_test)
    shrunk_logits = logits_of(shrunk, x_test)
    assert np.allclose(gated_logits, shrunk_logits, atol=1e-4), "shrink must keep the predictions"
    widths_by_name = tdg.structure.active_widths(gated)  # {layer name: active units}
    widths = tuple(widths_by_name.values())

    print(f"\nplain MLP, fixed widths {MAX_UNITS}")
    plain = tuned_plain_mlp(x_train, y_train, MAX_UNITS, plain_max_epochs, seed)
    print(f"\nplain MLP, the learned widths {widths}, trained from scratch")
    plain_learned = tuned_plain_mlp(x_train, y_train, widths, plain_max_epochs, seed)

    learned = (
        f"{name} {width} of {units}"
        for (name, width), units in zip(widths_by_name.items(), MAX_UNITS, strict=True)
    )
    print(f"\nlearned widths: {', '.join(learned)}")
    header = f"test set ({len(x_test)} digits)"
    print(f"\n{header:<40} {'widths':>7} {'accuracy':>8} {'NLL':>7} {'params':>7}")
    report("plain MLP, fixed widths", MAX_UNITS, plain, logits_of(plain, x_test), y_test)
    report("gated MLP, mean gates", widths, gated, gated_logits, y_test)
    report("shrunk gated MLP (tdg.structure.shrink)", widths, shrunk, shrunk_logits, y_test)
    report(
        "plain MLP, learned widths, from scratch",
        widths,
        plain_learned,
        logits_of(plain_learned, x_test),
        y_test,
    )
    print("params: trainable numbers, for the gated MLP the means and scales of")
    print("its hidden weights and three numbers per gate")

    figure_path = _cli.output_dir(args.quick) / "structure_learning.png"
    plot(gated, seed, figure_path)
    print(f"\nSaved the unit probabilities to {figure_path}")
    path = _cli.export(shrunk, "structure_learning", args.quick, num_samples=1)
    print(f"Exported the shrunk network (plain Keras layers) to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
