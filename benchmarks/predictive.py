"""Monte-Carlo predictive against one deterministic forward pass, batch of 1.

Run from the repository root (2 idle CPU cores: about 2-3 minutes, most of it XLA
compilation; ``--quick``: about 1.5):

    python benchmarks/predictive.py              # every estimator and the regression head
    python benchmarks/predictive.py --quick      # fewer rounds, for a smoke test
    python benchmarks/predictive.py --only flipout regression

Model: a Bayesian MLP 784-400-400 (ReLU) with a Categorical(10) head (or, for the
``regression`` section, an IndependentNormal head: loc and scale of one output), every
dense layer the estimator under test. One example per call (batch 1): the latency of
serving one request. Contenders (``xla`` = ``tf.function(jit_compile=True)``, ``graph``
= without XLA):

- ``det``: one deterministic forward pass with posterior means,
  ``tdg.layers.sampling_mode(model, "mean")`` and ``training=False`` inside the
  ``tf.function`` (the KL term is added but unused, so the graph prunes it).
- ``keras``: for scale, a plain Keras MLP of the same shape (no posterior at all), and
  ``keras32``: the same on a batch of 32, the matmul work of the predictive's mean path.
- ``mc``: ``MonteCarloPredictive(model, 32).__call__``: the S=32 Monte-Carlo predictive
  with every summary (classifier: probabilities, entropies, mutual information, labels;
  regression: mean, variances, quantiles by bisection, samples).
- ``mc-noq`` (regression): the same without the quantiles (``outputs=`` all but
  ``quantiles``), so ``mc - mc-noq`` is the cost of the quantile bisection.
- ``params``: ``MonteCarloPredictive.parameter_samples``: the stacked forward pass alone
  (``mc - params`` is the cost of the summaries).
- ``mc-cache``: the same with ``cache_scales=True``: the posterior scales are kept in
  variables and recomputed inside the call only where their weights changed.
- ``served``: the ``serving_default`` signature (classifier: probabilities; regression:
  mean) of ``tdg.export.export_saved_model(model, ..., num_samples=32)``, loaded back with
  ``tf.saved_model.load`` (graph mode, as TF Serving runs it). The export snapshots the
  posterior scales (``softplus`` of every scale variable, the largest cost of ``mc`` at
  batch 1), which live code must recompute because the weights may change.
- ``loop``: a Python loop of 32 single stochastic forward passes, each a call of one
  compiled function: what the vectorised predictive replaces.

Contenders are timed in interleaved rounds (round-robin over all of them), so drift of
the machine hits all alike; every call is synchronised by reading its outputs. The table
reports the median over calls in milliseconds and, in the same compilation mode,
``mc/det``, ``cache/det`` (the verdict: target <= 4) and ``served/det``.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import Contender, run_contenders  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")

NUM_SAMPLES = 32
TARGET_RATIO = 4.0
SECTIONS = ("reparameterization", "flipout", "local_reparameterization", "regression")
SHORT = {"reparameterization": "reparam", "flipout": "flipout", "local_reparameterization": "lrt"}
DENSE = {
    "reparameterization": tdg.layers.DenseReparameterization,
    "flipout": tdg.layers.DenseFlipout,
    "local_reparameterization": tdg.layers.DenseLocalReparameterization,
}
REGRESSION_ESTIMATOR = "flipout"


def build_model(estimator, head, seed=0):
    dense = DENSE[estimator]
    return keras.Sequential(
        [
            keras.Input((784,)),
            dense(400, activation="relu", kl_weight=1 / 60_000, seed=seed),
            dense(400, activation="relu", kl_weight=1 / 60_000, seed=seed + 1),
            dense(head.input_size, kl_weight=1 / 60_000, seed=seed + 2),
            head,
        ]
    )


def build_keras_model(outputs):
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(400, activation="relu"),
            keras.layers.Dense(400, activation="relu"),
            keras.layers.Dense(outputs),
        ]
    )


# Contenders ----------------------------------------------------------------------------


def make_contenders(section, x):
    """{(kind, jit): Contender} for one section."""
    regression = section == "regression"
    estimator = REGRESSION_ESTIMATOR if regression else section
    head = tdg.heads.IndependentNormal() if regression else tdg.heads.Categorical(10)
    model = build_model(estimator, head)
    keras_model = build_keras_model(head.input_size)
    mc = tdg.predictive.MonteCarloPredictive(model, NUM_SAMPLES, seed=0)
    cached = tdg.predictive.MonteCarloPredictive(model, NUM_SAMPLES, seed=0, cache_scales=True)
    no_quantiles = tuple(n for n in mc.output_names if n != "quantiles")
    contenders = {}

    def det(x):
        with tdg.layers.sampling_mode(model, "mean"):
            return model(x, training=False)

    def one_stochastic(x):
        return model(x, training=False)

    for jit in (True, False):
        mode = "xla" if jit else "graph"

        def add(kind, fn, jit=jit, mode=mode):
            compiled = tf.function(fn, jit_compile=jit, autograph=False)
            contenders[kind, jit] = Contender(f"{kind} ({mode})", compiled, (x,))

        add("det", det)
        add("keras", lambda x: keras_model(x, training=False))
        add("keras32", lambda x: keras_model(tf.tile(x, [NUM_SAMPLES, 1]), training=False))
        add("mc", mc.__call__)
        add("mc-cache", cached.__call__)
        if regression:
            add("mc-noq", lambda x: mc(x, outputs=no_quantiles))
        add("params", mc.parameter_samples)
        single = tf.function(one_stochastic, jit_compile=jit, autograph=False)

        def loop(x, single=single):
            return [single(x) for _ in range(NUM_SAMPLES)]

        contenders["loop", jit] = Contender(f"loop of {NUM_SAMPLES} ({mode})", loop, (x,))

    export_dir = tdg.export.export_saved_model(model, tempfile.mkdtemp(), NUM_SAMPLES, seed=0)
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    input_name = next(iter(served.structured_input_signature[1]))
    contenders["served", False] = Contender(
        "served (graph)", lambda x: served(**{input_name: x}), (x,)
    )
    return contenders


def _ratio(a, b):
    return f"{a / b:.2f}" if np.isfinite(a) and np.isfinite(b) and b > 0 else "n/a"


def report(section, contenders):
    regression = section == "regression"
    what = (
        f"IndependentNormal head, {SHORT[REGRESSION_ESTIMATOR]}"
        if regression
        else f"Categorical(10) head, {SHORT[section]}"
    )
    print(f"\n== MLP 784-400-400, {what}, batch 1, S={NUM_SAMPLES}: median ms/call ==")
    cols = ["mode", "keras", "keras32", "det", "params", "mc", "mc-cache", "served"]
    if regression:
        cols += ["mc-noq", "quantiles"]
    cols += ["loop", "mc/det", "cache/det", "served/det", "loop/mc", "verdict"]
    print("".join(f"{c:>11}" for c in cols))
    for jit in (True, False):

        def ms(kind, jit=jit):
            c = contenders.get((kind, jit))
            return c.ms if c is not None else float("nan")

        row = ["xla" if jit else "graph", ms("keras"), ms("keras32"), ms("det")]
        row += [ms("params"), ms("mc"), ms("mc-cache"), ms("served")]
        if regression:
            row += [ms("mc-noq"), ms("mc") - ms("mc-noq")]
        ratio = ms("mc-cache") / ms("det")
        verdict = "n/a" if not np.isfinite(ratio) else ("ok" if ratio <= TARGET_RATIO else "MISS")
        row += [ms("loop"), _ratio(ms("mc"), ms("det")), _ratio(ms("mc-cache"), ms("det"))]
        row += [_ratio(ms("served"), ms("det"))]
        row += [_ratio(ms("loop"), ms("mc")), verdict]
        print(
            "".join(f"{v:>11.3f}" if isinstance(v, float) else f"{v:>11}" for v in row).replace(
                "nan", "  -"
            )
        )
    print(f"-- target: mc-cache/det <= {TARGET_RATIO:g} (verdict) --")
    for c in contenders.values():
        print(c.describe(34))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds")
    args = parser.parse_args(argv)
    args.warmup = 3
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.calls = 10 if args.quick else 20
    args.budget = 0.15 if args.quick else 0.25  # seconds per round and contender
    sections = args.only or SECTIONS
    print(
        f"tf {tf.__version__}, keras {keras.__version__}, tfp_deepgen {tdg.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; warm-up "
        f"{args.warmup} calls, then {args.rounds} round-robin rounds of <= {args.calls} calls "
        f"(<= {args.budget:.2f} s) per contender"
    )
    x = tf.constant(np.random.default_rng(0).standard_normal((1, 784)).astype("float32"))
    for section in sections:
        print(f"\n[{section}] tracing and warming up ...", file=sys.stderr, flush=True)
        contenders = make_contenders(section, x)
        run_contenders(list(contenders.values()), args, steps=args.calls, width=34)
        report(section, contenders)


if __name__ == "__main__":
    main()
