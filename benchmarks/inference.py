"""Fit and predict cost of every posterior beyond VI (`tdg.inference`), against plain Keras.

Run from the repository root (2 busy CPU cores: about 6.5 minutes; ``--quick``: about 2):

    python benchmarks/inference.py                    # regression and classifier
    python benchmarks/inference.py --quick            # regression only, one timed fit each
    python benchmarks/inference.py --only regression

Models: plain Keras MLPs ending in a head, on seeded synthetic data of N = 1000
examples. ``regression``: 13 inputs -> Dense(50, ReLU) -> Dense(2) ->
``IndependentNormal()`` (802 weights); ``classifier``: 64 -> 100 -> 100 (ReLU) ->
Dense(10) -> ``Categorical(10)`` (17,610 weights, too many for HMC, which is left out).
Every ``fit`` runs ``EPOCHS`` epochs of batch ``BATCH_SIZE`` with ``jit_compile=True``.

Section 1, fit cost: wall time of producing each posterior, from a freshly built
model (so Keras tracing and XLA compilation are included, as a user pays them), over
the same from-scratch plain ``model.fit``:

- ``swag``: ``fit`` with SGD(0.01) and the ``SWAG(rank=20)`` callback, then
  ``swag.posterior()``; over plain ``fit`` with SGD(0.01).
- ``sgld``: ``fit`` with the ``SGLD`` optimizer and ``CollectSamples`` (burn-in half the
  steps, thinned to 32 samples), then ``collector.posterior()``; over plain SGD.
- ``laplace ...``: ``Laplace(trained_model, subset, hessian).fit(x, y)`` (GGN, batch
  32) at already trained weights; over ONE epoch of plain ``fit`` (Adam), from a fresh
  model and, second row, on a model whose train step is already traced (the epoch's
  compute alone).
- ``ensemble``: ``DeepEnsemble(build, members=5)`` compiled with Adam and fitted;
  over plain ``fit`` with Adam.
- ``hmc``, ``nuts``: ``HMC`` / ``NUTS(trained_model, ...).sample(x, y)`` with the small
  settings in ``HMC_SETTINGS`` (4 chains started at the trained weights, 60 burn-in
  steps, then 8 samples kept per chain, every 4th step: 32 samples, 92 steps in all;
  NUTS with ``max_tree_depth=6``), XLA; over plain ``fit`` with Adam.

Every fit contender is timed once per round, in interleaved rounds, median reported.

Section 2, predict cost: ``MonteCarloPredictive(posterior, 32).__call__`` (the S = 32
Monte-Carlo predictive with every summary; regression: mean, variances, quantiles,
samples), inside ``tf.function`` with XLA (``xla``) and without (``graph``), at batch 1
and batch 1000, over one deterministic forward pass of the plain trained model
(``model(x, training=False)``) compiled the same way at the same batch. ``params``
(graph mode): ``MonteCarloPredictive.parameter_samples`` alone, the S stacked forward
passes without the summaries (``mc - params`` is what the summaries cost). The
posteriors are those the last fit repetition produced. Contenders are timed in
interleaved rounds; every call is synchronised by reading its outputs.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import Contender, run_contenders  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")

NUM_EXAMPLES = 1000
EPOCHS = 20
BATCH_SIZE = 32
NUM_SAMPLES = 32
ENSEMBLE_MEMBERS = 5
SECTIONS = ("regression", "classifier")
BATCHES = (1, NUM_EXAMPLES)
LAPLACE_KINDS = (("last_layer", "kron"), ("all", "diag"), ("all", "kron"))
HMC_SETTINGS = {
    "num_chains": 4,
    "num_burnin_steps": 60,
    "num_results": NUM_SAMPLES // 4,
    "thinning": 4,
    "seed": 0,
}
NUTS_SETTINGS = dict(HMC_SETTINGS, max_tree_depth=6)
MAX_HMC_WEIGHTS = 10_000
WARM = "plain adam 1 epoch, traced"


# Data and models -------------------------------------------------------------------------


def make_data(section, seed=0):
    """`(x, y)` float32 inputs and targets of `NUM_EXAMPLES` synthetic examples."""
    rng = np.random.default_rng(seed)
    if section == "regression":
        x = rng.standard_normal((NUM_EXAMPLES, 13)).astype("float32")
        hidden = np.tanh(x @ rng.standard_normal((13, 8)) / np.sqrt(13))
        y = hidden @ rng.standard_normal((8, 1)) + 0.1 * rng.standard_normal((NUM_EXAMPLES, 1))
        return x, y.astype("float32")
    x = rng.standard_normal((NUM_EXAMPLES, 64)).astype("float32")
    logits = np.maximum(x @ rng.standard_normal((64, 32)), 0) @ rng.standard_normal((32, 10))
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)
    return x, y.astype("int32")


def model_builder(section):
    """A function building a fresh, unseeded plain Keras MLP ending in the section's head."""

    def build():
        if section == "regression":
            head = tdg.heads.IndependentNormal()
            layers = [keras.Input((13,)), keras.layers.Dense(50, activation="relu")]
        else:
            head = tdg.heads.Categorical(10)
            layers = [keras.Input((64,)), keras.layers.Dense(100, activation="relu")]
            layers.append(keras.layers.Dense(100, activation="relu"))
        return keras.Sequential([*layers, keras.layers.Dense(head.input_size), head])

    return build


def compiled(model, optimizer):
    model.compile(optimizer=optimizer, loss=model.layers[-1].loss, jit_compile=True)
    return model


def last_loss(history):
    return tf.constant(history.history["loss"][-1])


# Fit contenders ---------------------------------------------------------------------------


def fit_contenders(section, x, y, trained):
    """`(contenders, baselines, posteriors)` of the fit section.

    `baselines[label]` names the plain-fit contenders `label` is divided by;
    `posteriors[label]` holds the posterior the last call of `label` produced.
    """
    build = model_builder(section)
    steps_per_epoch = -(-NUM_EXAMPLES // BATCH_SIZE)
    posteriors = {}
    contenders, baselines = [], {}

    def add(label, fn, *baseline):
        contenders.append(Contender(label, fn, ()))
        baselines[label] = baseline

    def plain(optimizer, epochs):
        def fit():
            model = compiled(build(), optimizer())
            return last_loss(model.fit(x, y, BATCH_SIZE, epochs, verbose=0))

        return fit

    warm = compiled(build(), keras.optimizers.Adam(1e-3))
    warm.fit(x, y, BATCH_SIZE, 1, verbose=0)  # traces and compiles the train step once

    def warm_epoch():
        return last_loss(warm.fit(x, y, BATCH_SIZE, 1, verbose=0))

    def swag():
        callback = tdg.inference.SWAG(rank=20)
        model = compiled(build(), keras.optimizers.SGD(0.01))
        history = model.fit(x, y, BATCH_SIZE, EPOCHS, verbose=0, callbacks=[callback])
        posteriors["swag"] = callback.posterior(seed=0)
        return last_loss(history)

    def sgld():
        burn_in = EPOCHS * steps_per_epoch // 2
        thinning = max(1, (EPOCHS * steps_per_epoch - burn_in) // NUM_SAMPLES)
        collector = tdg.inference.CollectSamples(burn_in=burn_in, thinning=thinning)
        optimizer = tdg.inference.SGLD(0.01, data_size=NUM_EXAMPLES, seed=0)
        model = compiled(build(), optimizer)
        history = model.fit(x, y, BATCH_SIZE, EPOCHS, verbose=0, callbacks=[collector])
        posteriors["sgld"] = collector.posterior(seed=0)
        return last_loss(history)

    def laplace(subset, hessian, label):
        def fit():
            posterior = tdg.inference.Laplace(trained, subset=subset, hessian=hessian, seed=0)
            posteriors[label] = posterior.fit(x, y)
            return posterior.map_values.value

        return fit

    def ensemble():
        posterior = tdg.inference.DeepEnsemble(build, members=ENSEMBLE_MEMBERS, seed=0)
        posterior.compile(
            keras.optimizers.Adam(1e-3), loss=trained.layers[-1].loss, jit_compile=True
        )
        history = posterior.fit(x, y, BATCH_SIZE, EPOCHS, verbose=0)
        posteriors["ensemble"] = posterior
        return last_loss(history)

    def mcmc(sampler, settings, label):
        def sample():
            posteriors[label] = sampler(trained, **settings).sample(x, y)
            return tf.constant(0.0)

        return sample

    add("plain adam", plain(lambda: keras.optimizers.Adam(1e-3), EPOCHS))
    add("plain sgd", plain(lambda: keras.optimizers.SGD(0.01), EPOCHS))
    add("plain adam 1 epoch", plain(lambda: keras.optimizers.Adam(1e-3), 1))
    add(WARM, warm_epoch)
    add("swag", swag, "plain sgd")
    add("sgld", sgld, "plain sgd")
    for subset, hessian in LAPLACE_KINDS:
        label = f"laplace {subset} {hessian}"
        add(label, laplace(subset, hessian, label), "plain adam 1 epoch", WARM)
    add(f"ensemble x{ENSEMBLE_MEMBERS}", ensemble, "plain adam")
    if trained.count_params() <= MAX_HMC_WEIGHTS:
        add("hmc", mcmc(tdg.inference.HMC, HMC_SETTINGS, "hmc"), "plain adam")
        add("nuts", mcmc(tdg.inference.NUTS, NUTS_SETTINGS, "nuts"), "plain adam")
    return contenders, baselines, posteriors


def time_fits(contenders, rounds):
    """Calls every contender once per round, round-robin; a failing one keeps its error."""
    for r in range(rounds):
        for c in contenders:
            if c.error:
                continue
            try:
                c.call()
            except Exception as e:  # reported in the table instead of aborting the run
                c.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"
            status = c.error or f"{c.wall[-1]:.1f} s"
            print(f"  round {r + 1}: {c.label:<24} {status}", file=sys.stderr, flush=True)


def report_fit(section, contenders, baselines):
    by_label = {c.label: c for c in contenders}
    print(
        f"\n== {section}: fit cost, {EPOCHS} epochs of batch {BATCH_SIZE} on "
        f"{NUM_EXAMPLES} examples, from a fresh model: median s (wall; process CPU) ==\n"
    )
    print("| posterior | s (cpu s) | baseline | baseline s (cpu s) | ratio wall | ratio cpu |")
    print("|---|---|---|---|---|---|")
    for c in contenders:
        for name in baselines[c.label]:
            base = by_label[name]
            cells = [_seconds(c), base.label, _seconds(base), _ratio(c.ms, base.ms)]
            cells.append(_ratio(_cpu_ms(c), _cpu_ms(base)))
            print(f"| {c.label} | " + " | ".join(cells) + " |")
    print()
    for c in contenders:
        print(c.describe(24))


# Predict contenders -----------------------------------------------------------------------


def predict_contenders(trained, posteriors, x):
    """{(label, batch, mode): Contender}; label "plain" is the deterministic forward pass."""
    contenders = {}
    for batch in BATCHES:
        inputs = tf.constant(x[:batch])
        for jit in (True, False):
            mode = "xla" if jit else "graph"

            def add(label, fn, batch=batch, mode=mode, jit=jit, inputs=inputs):
                compiled_fn = tf.function(fn, jit_compile=jit, autograph=False)
                contenders[label, batch, mode] = Contender(
                    f"{label} b={batch} ({mode})", compiled_fn, (inputs,)
                )

            add("plain", lambda x: trained(x, training=False))
            for label, posterior in posteriors.items():
                predictive = tdg.predictive.MonteCarloPredictive(posterior, NUM_SAMPLES, seed=0)
                add(label, predictive.__call__)
                if not jit:
                    add(f"{label} params", predictive.parameter_samples)
    return contenders


def report_predict(section, contenders, labels):
    modes = ("xla", "graph")
    print(
        f"\n== {section}: S={NUM_SAMPLES} Monte-Carlo predictive over one plain forward pass, "
        "median ms/call ==\n"
    )
    header = [f"b={b} {m}" for b in BATCHES for m in modes]
    params = [f"b={b} params" for b in BATCHES]
    cells = [f"{h} ms" for h in header] + [f"{h} /plain" for h in header] + params
    print("| posterior | " + " | ".join(cells) + " |")
    print("|---" * (1 + len(cells)) + "|")
    for label in ("plain", *labels):
        ms = [_ms(contenders, label, b, m) for b in BATCHES for m in modes]
        plain = [_ms(contenders, "plain", b, m) for b in BATCHES for m in modes]
        row = [f"{v:.3f}" for v in ms] + [_ratio(a, p) for a, p in zip(ms, plain, strict=True)]
        row += [f"{_ms(contenders, label + ' params', b, 'graph'):.3f}" for b in BATCHES]
        print(f"| {label} | " + " | ".join(row).replace("nan", "-") + " |")
    for c in contenders.values():
        print(c.describe(40))


def _seconds(c):
    if c.error:
        return f"! {c.error}"
    return f"{c.ms / 1e3:.2f} ({_cpu_ms(c) / 1e3:.2f})"


def _cpu_ms(c):
    return 1e3 * statistics.median(c.cpu) if c.cpu else float("nan")


def _ms(contenders, label, batch, mode):
    c = contenders.get((label, batch, mode))
    return c.ms if c is not None else float("nan")


def _ratio(a, b):
    return f"{a / b:.2f}" if np.isfinite(a) and np.isfinite(b) and b > 0 else "n/a"


# Main -------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one timed fit each (smoke test)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="sections to run")
    args = parser.parse_args(argv)
    fit_rounds = 1 if args.quick else 3
    predict_args = argparse.Namespace(
        warmup=2, rounds=3 if args.quick else 4, calls=10 if args.quick else 20
    )
    predict_args.budget = 0.1 if args.quick else 0.15  # seconds per round and contender
    print(
        f"tf {tf.__version__}, keras {keras.__version__}, tfp_deepgen {tdg.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; fit: "
        f"{fit_rounds} interleaved rounds of one call; predict: warm-up "
        f"{predict_args.warmup} calls, then {predict_args.rounds} rounds of <= "
        f"{predict_args.calls} calls (<= {predict_args.budget:.2f} s) per contender"
    )
    keras.utils.set_random_seed(0)
    for section in args.only or (SECTIONS[:1] if args.quick else SECTIONS):
        start = time.perf_counter()
        x, y = make_data(section)
        trained = compiled(model_builder(section)(), keras.optimizers.Adam(1e-3))
        trained.fit(x, y, BATCH_SIZE, EPOCHS, verbose=0)
        print(f"\n[{section}] fitting ...", file=sys.stderr, flush=True)
        contenders, baselines, posteriors = fit_contenders(section, x, y, trained)
        time_fits(contenders, fit_rounds)
        report_fit(section, contenders, baselines)
        print(f"\n[{section}] predicting ...", file=sys.stderr, flush=True)
        predict = predict_contenders(trained, posteriors, x)
        run_contenders(list(predict.values()), predict_args, steps=predict_args.calls, width=40)
        report_predict(section, predict, list(posteriors))
        print(f"[{section}] {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
