"""Training-step and inference time of the structure-learning layers against plain Keras.

Run from the repository root (2 shared CPU cores: about 60 s, much of it XLA
compilation; ``--quick``: about 50 s):

    python benchmarks/structure.py            # training and inference sections
    python benchmarks/structure.py --quick    # fewer steps, for a smoke test
    python benchmarks/structure.py --xla-only # skip the graph-mode (no XLA) contenders

Conventions (training step, ``xla``/``graph`` modes, round-robin timing, median ms with
IQR and process CPU time) follow ``benchmarks/dropout.py``, whose helpers are copied here.

Training: ReLU MLPs 64-100-50-10 at batch 64 (the digits example, ``kl_weight = 1/1797``)
and 784-300-100-10 (LeNet-300-100) at batch 100 (``kl_weight = 1/60000``). The hidden
layers differ; the output layer is a plain ``keras.layers.Dense`` everywhere.

- ``keras``: plain ``keras.layers.Dense``.
- ``ibp``: ``tdg.layers.IBPDense`` (point-estimated weights, Concrete-relaxed gates).
- ``ibp-vi``: ``kernel_prior=tdg.priors.Normal(0.0, 1.0)`` (local reparameterization).
- ``lrt``: ``tdg.layers.DenseLocalReparameterization``: ``ibp-vi`` without the gate.
- ``gate``: ``keras.layers.Dense`` followed by ``tdg.layers.IBPGate(kl_weight=...)``.
- ``horseshoe``: ``tdg.layers.DenseHorseshoe``.

Inference: batch 1000 forward pass, ``training=False``, both shapes:

- ``ibp-mean``: the ``ibp`` network with 80% of its gates closed (``gate_logits`` -4,
  the rest +4), under ``tdg.layers.sampling_mode(model, "mean")``.
- ``shrunk``: ``tdg.structure.shrink`` of that network: plain ``Dense`` layers ~5x narrower.
- ``keras``: the plain network at full width.

No targets: the ratios are printed as measurements. Unlike pruned zeros, removed units
shrink the matmuls, so ``shrunk`` should beat ``keras``.
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

# name: (sizes, training batch, kl_weight)
SHAPES = {
    "digits 64-100-50-10": ((64, 100, 50, 10), 64, 1.0 / 1797),
    "LeNet-300-100": ((784, 300, 100, 10), 100, 1.0 / 60_000),
}
INFER_BATCH = 1000
CLOSED = 0.8  # fraction of gates closed for inference
TRAIN = ("keras", "ibp", "ibp-vi", "lrt", "gate", "horseshoe")
TRAIN_RATIOS = (("ibp", "keras"), ("ibp-vi", "lrt"), ("ibp-vi", "keras"), ("gate", "keras"))
TRAIN_RATIOS += (("horseshoe", "keras"), ("horseshoe", "lrt"))
INFER_RATIOS = (("ibp-mean", "keras"), ("shrunk", "keras"), ("ibp-mean", "shrunk"))


def hidden(kind, units, kl, seed):
    """The layers standing for one hidden ReLU layer of contender `kind`."""
    kw = {"activation": "relu", "kl_weight": kl, "seed": seed}
    vi = {"kernel_prior": tdg.priors.Normal(0.0, 1.0)}
    return {
        "keras": lambda: [keras.layers.Dense(units, activation="relu")],
        "ibp": lambda: [tdg.layers.IBPDense(units, **kw)],
        "ibp-vi": lambda: [tdg.layers.IBPDense(units, **vi, **kw)],
        "lrt": lambda: [tdg.layers.DenseLocalReparameterization(units, **kw)],
        "gate": lambda: [
            keras.layers.Dense(units, activation="relu"),
            tdg.layers.IBPGate(kl_weight=kl, seed=seed),
        ],
        "horseshoe": lambda: [tdg.layers.DenseHorseshoe(units, **kw)],
    }[kind]()


def build_model(kind, sizes, kl, seed=1):
    """The MLP `sizes` (input, hidden..., output) for a contender `kind`."""
    layers = [keras.Input((sizes[0],))]
    for units in sizes[1:-1]:
        layers += hidden(kind, units, kl, seed)
    layers.append(keras.layers.Dense(sizes[-1]))
    return keras.Sequential(layers)


def close_gates(model, rng):
    """Closes CLOSED of every IBPDense layer's units (gate logit -6, else +6)."""
    for layer in model.layers:
        if isinstance(layer, tdg.layers.IBPDense):
            closed = rng.permutation(layer.units) < round(CLOSED * layer.units)
            layer.gate_logits.assign(np.where(closed, -6.0, 6.0).astype("float32"))


def main(argv=None):
    args = parse_timing_args(
        __doc__.split("\n", 1)[0], argv, rounds=6, budget=0.25, quick_budget=0.1
    )
    modes = args.modes
    rng = np.random.default_rng(0)
    for name, (sizes, batch, kl) in SHAPES.items():
        x = tf.constant(rng.standard_normal((batch, sizes[0])).astype("float32"))
        y = tf.constant(rng.integers(0, sizes[-1], batch).astype("int32"))
        train = {}
        for kind in TRAIN:
            for mode in modes:
                step = make_step(build_model(kind, sizes, kl), mode == "xla")
                train[kind, mode] = Contender(f"{kind} ({mode})", step, (x, y))
        print(f"\n[train {name}] warming up {len(train)} contenders ...", file=sys.stderr)
        run_contenders(list(train.values()), args)
        report(f"Training {name}, batch {batch}", train, TRAIN_RATIOS, modes)

    for name, (sizes, _, kl) in SHAPES.items():
        x_inf = tf.constant(rng.standard_normal((INFER_BATCH, sizes[0])).astype("float32"))
        ibp, plain = build_model("ibp", sizes, kl), build_model("keras", sizes, kl)
        close_gates(ibp, rng)
        shrunk = tdg.structure.shrink(ibp)
        infer = {}
        with tdg.layers.sampling_mode(ibp, "mean"):  # the mode is fixed when traced
            for mode in modes:
                for label, model in (("ibp-mean", ibp), ("shrunk", shrunk), ("keras", plain)):
                    fwd = make_forward(model, mode == "xla")
                    infer[label, mode] = Contender(f"{label} ({mode})", fwd, (x_inf,))
            diff = float(tf.reduce_max(tf.abs(ibp(x_inf, training=False) - shrunk(x_inf))))
            print(f"\n[infer {name}] warming up {len(infer)} contenders ...", file=sys.stderr)
            run_contenders(list(infer.values()), args)
        report(f"Inference {name}, batch {INFER_BATCH}", infer, INFER_RATIOS, modes)
        widths = [layer.units for layer in shrunk.layers[:-1]]
        print(
            f"  hidden widths {list(sizes[1:-1])} -> {widths}, max |ibp-mean - shrunk| = {diff:.1e}"
        )


if __name__ == "__main__":
    main()
