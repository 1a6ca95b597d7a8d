"""Training-step and inference time of the dropout-as-VI layers against plain Keras.

Run from the repository root (2 shared CPU cores: about 50 s, a third of it XLA
compilation; ``--quick``: about 30 s):

    python benchmarks/dropout.py            # training and inference sections
    python benchmarks/dropout.py --quick    # fewer steps, for a smoke test
    python benchmarks/dropout.py --xla-only # skip the graph-mode (no XLA) contenders

Conventions follow ``benchmarks/layers.py``: every training contender runs one
``tf.function`` holding a ``GradientTape`` forward/backward pass (softmax cross-entropy
plus ``sum(model.losses)``, the KL terms) and one Adam update (``optimizer.apply``), on
the same synthetic batch (fixed numpy seed). ``xla`` = ``tf.function(jit_compile=True)``,
``graph`` = without XLA. Contenders are timed in interleaved rounds (round-robin), each
call synchronised by reading its scalar result; tables report the median wall time, the
per-contender list also the interquartile range and the median process CPU time.

Training: LeNet-300-100 (784-300-100-10, ReLU), batch 100, ``kl_weight = 1/60000``.

- ``keras``: plain ``keras.layers.Dense``.
- ``keras-dropout`` / ``mc-dropout``: ``keras.layers.Dropout(0.2)`` /
  ``tdg.layers.MCDropout(0.2)`` after each hidden layer (``training=True``).
- ``keras-gaussian`` / ``gaussian``: the same with ``keras.layers.GaussianDropout(0.2)`` /
  ``tdg.layers.GaussianDropout(0.2)``.
- ``vd`` / ``svd`` / ``lrt``: every Dense replaced by ``DenseVariationalDropout`` /
  ``DenseSparseVariationalDropout`` / ``DenseLocalReparameterization`` (the generic
  local-reparameterization layer: sparse VD does the same two matmuls).

Inference: batch 1000 forward pass, ``training=False``:

- ``svd-mean``: the ``svd`` network with ~95% of its weights set to ``log alpha > 3``
  (pruned by the threshold), under ``tdg.layers.sampling_mode(model, "mean")``.
- ``pruned``: ``tdg.pruning.prune`` of that network: plain ``Dense`` with zeroed weights.
- ``keras``: the plain network.

No targets: the ratios are printed as measurements. Zeros in a dense matmul cost as much
as any other value, so ``pruned`` runs at ``keras`` speed; ``svd-mean`` also recomputes
the ``log alpha`` mask on every call.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import Contender, make_forward, make_step, parse_timing_args, report, run_contenders  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")

BATCH, INFER_BATCH = 100, 1000
KL = {"kl_weight": 1.0 / 60_000}
RATE = 0.2
SPARSITY = 0.95  # fraction of svd weights pushed above the threshold for inference
TRAIN = ("keras", "keras-dropout", "mc-dropout", "keras-gaussian", "gaussian", "vd", "svd")
TRAIN += ("lrt",)
DENSE = {
    "vd": tdg.layers.DenseVariationalDropout,
    "svd": tdg.layers.DenseSparseVariationalDropout,
    "lrt": tdg.layers.DenseLocalReparameterization,
}
DROPOUT = {
    "keras-dropout": keras.layers.Dropout,
    "mc-dropout": tdg.layers.MCDropout,
    "keras-gaussian": keras.layers.GaussianDropout,
    "gaussian": tdg.layers.GaussianDropout,
}
TRAIN_RATIOS = (
    ("mc-dropout", "keras-dropout"),
    ("gaussian", "keras-gaussian"),
    ("svd", "keras"),
    ("svd", "lrt"),
    ("vd", "keras"),
)
INFER_RATIOS = (("svd-mean", "keras"), ("pruned", "keras"), ("svd-mean", "pruned"))


def build_model(kind, seed=1):
    """LeNet-300-100 for a contender `kind`."""
    if kind in DENSE:
        dense = lambda units, **kw: DENSE[kind](units, seed=seed, **KL, **kw)  # noqa: E731
    else:
        dense = keras.layers.Dense
    layers = [keras.Input((784,))]
    for units in (300, 100):
        layers.append(dense(units, activation="relu"))
        if kind in DROPOUT:
            layers.append(DROPOUT[kind](RATE, seed=seed))
    layers.append(dense(10))
    return keras.Sequential(layers)


def sparsify(model, rng):
    """Pushes ~SPARSITY of every sparse layer's weights to log alpha ~ 5 (> threshold 3)."""
    for layer in tdg.pruning.sparse_layers(model):
        q = layer.kernel_posterior_params
        loc = q.loc.numpy()
        drop = rng.random(loc.shape) < SPARSITY
        log_var = np.where(drop, np.log(np.square(loc) + 1e-8) + 5.0, q.log_variance.numpy())
        q.log_variance.assign(log_var.astype("float32"))


def main(argv=None):
    args = parse_timing_args(
        __doc__.split("\n", 1)[0], argv, rounds=8, budget=0.5, quick_budget=0.2
    )
    modes = args.modes
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((BATCH, 784)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, BATCH).astype("int32"))

    train = {}
    for kind in TRAIN:
        for mode in modes:
            step = make_step(build_model(kind), mode == "xla")
            train[kind, mode] = Contender(f"{kind} ({mode})", step, (x, y))
    print(f"\n[train] tracing and warming up {len(train)} contenders ...", file=sys.stderr)
    run_contenders(list(train.values()), args)
    report("Training LeNet-300-100, batch 100", train, TRAIN_RATIOS, modes)

    x_inf = tf.constant(rng.standard_normal((INFER_BATCH, 784)).astype("float32"))
    svd, plain = build_model("svd"), build_model("keras")
    sparsify(svd, rng)
    pruned = tdg.pruning.prune(svd)
    infer = {}
    with tdg.layers.sampling_mode(svd, "mean"):  # the mode is fixed when traced
        for mode in modes:
            for name, model in (("svd-mean", svd), ("pruned", pruned), ("keras", plain)):
                fwd = make_forward(model, mode == "xla")
                infer[name, mode] = Contender(f"{name} ({mode})", fwd, (x_inf,))
        diff = float(tf.reduce_max(tf.abs(svd(x_inf, training=False) - pruned(x_inf))))
        print(f"\n[infer] tracing and warming up {len(infer)} contenders ...", file=sys.stderr)
        run_contenders(list(infer.values()), args)
    report("Inference forward pass, batch 1000", infer, INFER_RATIOS, modes)
    print(
        f"  svd sparsity {[round(la.sparsity(), 3) for la in tdg.pruning.sparse_layers(svd)]}, "
        f"compression ratio {tdg.pruning.compression_ratio(svd):.1f}, "
        f"max |svd-mean - pruned| = {diff:.1e}; the pruned kernels are dense matrices "
        "holding zeros"
    )


if __name__ == "__main__":
    main()
