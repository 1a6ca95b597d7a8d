"""Timing harness shared by the scripts in `benchmarks/`.

Conventions: one `tf.function` per training step
(forward, softmax cross-entropy plus the layers' KL losses, backward, Adam
update), contenders timed in interleaved rounds, medians reported.
"""

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf


def make_step(model, jit_compile):
    """One training step: forward, loss + KL, backward, Adam update."""
    optimizer = keras.optimizers.Adam(1e-3)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
            if model.losses:
                loss += tf.add_n(model.losses)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def make_loss_step(variables, loss_fn, jit_compile):
    """One training step minimizing `loss_fn(x)`: forward, backward, Adam update."""
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_fn(x)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def added_losses(model):
    """`x -> ` the sum of the losses `model` adds when called on x (generative models)."""

    def loss(x):
        model(x, training=True)
        return tf.add_n(model.losses)

    return loss


def make_forward(model, jit_compile):
    # reduce_sum gives a scalar to synchronise on and costs little next to the matmuls.
    return tf.function(lambda x: tf.reduce_sum(model(x, training=False)), jit_compile=jit_compile)


def read_all(result):
    """Waits for a result by reading every tensor in it (a tensor or a nest of them)."""
    for t in tf.nest.flatten(result):
        t.numpy()


class Contender:
    """One timed function; keeps per-call wall-clock and process CPU times.

    A contender whose warm-up raises keeps the error and is reported with it
    instead of aborting the run.
    """

    def __init__(self, label, fn, args):
        self.label, self.fn, self.args = label, fn, args
        self.wall, self.cpu = [], []
        self.error = None

    def call(self):
        wall, cpu = time.perf_counter(), time.process_time()
        read_all(self.fn(*self.args))  # reading the result waits for the step
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)

    def warm_up(self, calls):
        try:
            for _ in range(calls):
                read_all(self.fn(*self.args))
        except Exception as e:  # reported in the table instead of aborting the run
            self.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"

    def time(self, calls, budget_s):
        """Up to `calls` calls, fewer (at least 2) once `budget_s` seconds are spent."""
        if self.error:
            return
        start = time.perf_counter()
        for i in range(calls):
            if i >= 2 and time.perf_counter() - start > budget_s:
                break
            self.call()

    @property
    def ms(self):
        return 1e3 * statistics.median(self.wall) if self.wall else float("nan")

    def describe(self, width=24):
        if self.error:
            return f"  {self.label:<{width}} ! {self.error}"
        q1, q3 = 1e3 * np.percentile(self.wall, [25, 75])
        cpu = 1e3 * statistics.median(self.cpu)
        return (
            f"  {self.label:<{width}}{self.ms:9.3f} ms  IQR [{q1:8.3f}, {q3:8.3f}]"
            f"  cpu {cpu:8.3f} ms  n={len(self.wall)}"
        )


def run_contenders(contenders, args, steps=None, budget=None, width=24):
    """Warms every contender up, then times them round-robin.

    Reads `args.warmup`, `args.rounds`, and `args.steps` / `args.budget` unless
    `steps` / `budget` (calls and seconds per contender and round) are given.
    """
    for c in contenders:
        t0 = time.perf_counter()
        c.warm_up(args.warmup)
        status = c.error or f"traced, compiled and warm in {time.perf_counter() - t0:.1f}s"
        print(f"  {c.label:<{width}} {status}", file=sys.stderr, flush=True)
    for _ in range(args.rounds):
        for c in contenders:
            c.time(steps or args.steps, budget or args.budget)


def report(title, contenders, ratios, modes):
    print(f"\n== {title}: median ms/step (IQR, process CPU time) ==")
    for c in contenders.values():
        print(c.describe())
    print("-- ratios of medians --")
    print(f"  {'ratio':<28}" + "".join(f"{m:>8}" for m in modes))
    for a, b in ratios:
        cells = []
        for mode in modes:
            ca, cb = contenders.get((a, mode)), contenders.get((b, mode))
            cells.append(f"{ca.ms / cb.ms:8.2f}" if ca and cb else f"{'-':>8}")
        print(f"  {a + '/' + b:<28}" + "".join(cells))


def parse_timing_args(description, argv=None, rounds=6, budget=0.25, quick_budget=0.1):
    """Parses `--quick` / `--xla-only`, sets the timing schedule and prints the set-up.

    Adds to the namespace `warmup`, `steps`, `rounds`, `budget` (seconds per
    contender and round) and `modes` (`("xla",)` or `("xla", "graph")`).
    """
    import tfp_deepgen as tdg

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    parser.add_argument("--xla-only", action="store_true", help="skip graph-mode contenders")
    args = parser.parse_args(argv)
    args.warmup, args.steps, args.rounds = (2, 5, 3) if args.quick else (5, 20, rounds)
    args.budget = quick_budget if args.quick else budget
    args.modes = ("xla",) if args.xla_only else ("xla", "graph")
    print(
        f"tf {tf.__version__}, keras {keras.__version__}, tfp_deepgen {tdg.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; warm-up "
        f"{args.warmup} steps, then {args.rounds} round-robin rounds of <= {args.steps} "
        f"steps (<= {args.budget:.2f} s) per contender"
    )
    return args
