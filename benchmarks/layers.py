"""Training-step time of the variational layers against Keras, tfp.layers and a floor.

Run from the repository root (2 idle CPU cores: about 3 minutes, half of it XLA
compilation; up to 5 when the cores are shared; ``--quick``: about 2):

    python benchmarks/layers.py                 # all sections
    python benchmarks/layers.py --quick         # fewer steps, for a smoke test
    python benchmarks/layers.py --only mlp rng  # some sections
    python benchmarks/layers.py --ideal         # also the "ideal" contenders

Every contender trains the same architecture on the same synthetic batch with the
same step: one ``tf.function`` holding a ``GradientTape`` forward/backward pass
(softmax cross-entropy plus ``sum(model.losses)``, i.e. the KL terms) and one Adam
update. Keras 3 models update with ``optimizer.apply``, tf_keras models with
``optimizer.apply_gradients``; nothing else differs. Contenders are timed in
interleaved rounds (round-robin), so drift of the machine hits all of them alike;
each step is synchronised by reading its loss, and the table reports the median.

Sections:

- ``mlp``: 784-400-400-10 MLP (ReLU), batch 128.
- ``cnn``: 28x28x1 -> Conv 32 3x3 -> max-pool 2 -> Conv 64 3x3 -> max-pool 2 -> flatten
  -> Dense 10 (ReLU), batch 128; both convolutions and the dense layer use the estimator
  under test (tfp.layers has no local-reparameterization convolution).
- ``rng``: micro-benchmark of the random-number ops the layers rely on.
- ``scale`` (only with ``--only scale``): the posterior scale's positive transform with
  the KL and the gradients, alone, on the MLP's 478k weights: softplus with the log of
  the scale taken in the KL, the library's log scale (``exp``, the KL reads the
  variable), and none (the ideal's scale, the log taken in the KL).

Contenders (``xla`` = ``tf.function(jit_compile=True)``, ``graph`` = without XLA):

- ``keras``: the plain ``keras.layers.Dense`` / ``Conv2D`` model.
- ``floor``: the plain Keras model whose layers also draw the same random numbers as
  the estimator (same shapes, same ops: ``tfp_deepgen.random.normal`` of kernel shape;
  per-example Rademacher signs for flipout; per-output normal noise for local
  reparameterization), each added to a tensor it already touches. It does no
  variational work (no positive transform, no KL, no second linear map), so a layer
  cannot beat it.
- ``ideal`` (``--ideal``): the floor plus the estimator's minimal variational work: a
  trainable noise scale (no positive transform, no KL, no seed splitting) and, for flipout and local
  reparameterization, the second linear map with its gradients. ``ours/ideal`` is the
  overhead of the library's bookkeeping; ``ideal/floor`` that of the estimator itself.
- ``ideal+kl`` (``--ideal``): the ideal plus the library's analytic KL of
  ``N(kernel, s^2)`` against ``N(0, 1)`` (no positive transform: ``s`` is used as it
  is, and the KL takes its log).
- ``ours``: ``tfp_deepgen.layers`` (Keras 3).
- ``tfp.layers``: ``tfp.layers.*`` on tf_keras (Keras 2), default posteriors, the same
  analytic Normal(0, 1) KL scaled by 1/N.

Columns of the summary tables (all from the same run):

- ``ms/step``: median training-step time in milliseconds.
- ``ours/keras``: our step over the plain Keras step (the price of being Bayesian).
- ``tfp/ours``: tfp.layers step over ours, same compilation mode: the speed-up
  (target >= 1.4).
- ``ours/floor``: our step over the floor (target <= 1.25).
- ``ours/ideal``: our step over the ideal.
- ``+kl/floor``: the ideal plus the analytic KL (``ideal+kl``, ``--ideal``) over the
  floor: what is left of the allowance once the KL, which every layer must add, is paid.

Timings are wall-clock; the per-contender list also gives the interquartile range and the
process CPU time per step, which is less disturbed by other processes sharing the cores.
"""

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=UserWarning)  # tfp.layers' Keras 2 deprecations

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import Contender, run_contenders  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402
from tfp_deepgen import random  # noqa: E402

tf.get_logger().setLevel("ERROR")  # one tf.function per contender: retracing warnings

ESTIMATORS = ("reparameterization", "flipout", "local_reparameterization")
SHORT = {"reparameterization": "reparam", "flipout": "flipout", "local_reparameterization": "lrt"}
TARGET_SPEEDUP = 1.4
TARGET_FLOOR = 1.25
BATCH = 128
NUM_EXAMPLES = 60_000  # KL weight 1/N, as for MNIST
FLOOR_NOISE = 1e-6  # noise enters the floor's tensors scaled down; values are irrelevant
STANDARD_NORMAL = tdg.priors.Normal(0.0, 1.0)


# Floors --------------------------------------------------------------------------------


def _int32_seed(seed_generator):
    seed = seed_generator.next()
    return tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)


class _FloorMixin:
    """Draws the estimator's random numbers around a plain Keras linear layer.

    With `ideal=True` it also does the estimator's minimal variational work: a trainable
    noise scale `s` (no softplus, no KL, no seed splitting) and, for flipout and local
    reparameterization, the second linear map with its gradients. `ideal="kl"` adds
    the library's analytic KL of `N(kernel, s^2)` against `N(0, 1)`, scaled by 1/N.
    """

    def _floor_init(self, estimator, ideal, seed):
        self.estimator = estimator
        self.with_kl = ideal == "kl"
        self.ideal = bool(ideal)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        super().build(input_shape)
        if self.ideal:
            self.noise_scale = self.add_weight(
                name="noise_scale",
                shape=self.kernel.shape,
                initializer=keras.initializers.Constant(1e-3),
            )

    def _sign_shape(self, inputs, channels):
        """Flipout signs: one per example and channel, shared over spatial positions."""
        ones = tf.ones([inputs.shape.rank - 2], tf.int32)
        return tf.concat([tf.shape(inputs)[:1], ones, [channels]], 0)

    def call(self, inputs):
        seed = _int32_seed(self.seed_generator)
        kernel = self.kernel
        estimator, ideal = self.estimator, self.ideal
        scale = self.noise_scale if ideal else FLOOR_NOISE
        shift = 0.0
        if estimator in ("reparameterization", "flipout"):
            noise = scale * random.normal(kernel.shape, seed)
            if not (ideal and estimator == "flipout"):
                kernel = kernel + noise
            if not ideal:
                # A second use keeps XLA from fusing the sampler into the matmul,
                # which recomputes it per use (measured: floor > ours without it).
                shift = FLOOR_NOISE * tf.reduce_sum(noise)
        if estimator == "flipout":
            dtype = inputs.dtype
            sign_in = random.rademacher(self._sign_shape(inputs, inputs.shape[-1]), seed + 1, dtype)
            sign_out = random.rademacher(
                self._sign_shape(inputs, kernel.shape[-1]), seed + 2, dtype
            )
            if not ideal:
                inputs = inputs + FLOOR_NOISE * sign_in
        outputs = self._linear(inputs, kernel)
        if estimator == "flipout":
            if ideal:
                outputs += self._linear(inputs * sign_in, noise) * sign_out
            else:
                outputs += FLOOR_NOISE * sign_out
        if estimator == "local_reparameterization":
            noise = random.normal(tf.shape(outputs), seed + 3)
            if ideal:
                variance = self._linear(tf.square(inputs), tf.square(scale))
                noise = tf.sqrt(variance + 1e-12) * noise
            outputs += FLOOR_NOISE * noise
        if self.with_kl:
            kl = STANDARD_NORMAL.kl_divergence(self.kernel, self.noise_scale)
            self.add_loss(kl / NUM_EXAMPLES)
        return self.activation(outputs + self.bias + shift)


class FloorDense(_FloorMixin, keras.layers.Dense):
    def __init__(self, units, estimator, ideal=False, seed=None, **kwargs):
        super().__init__(units, **kwargs)
        self._floor_init(estimator, ideal, seed)

    def _linear(self, inputs, kernel):
        return tf.matmul(inputs, kernel)


class FloorConv2D(_FloorMixin, keras.layers.Conv2D):
    def __init__(self, filters, kernel_size, estimator, ideal=False, seed=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._floor_init(estimator, ideal, seed)

    def _linear(self, inputs, kernel):
        return keras.ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)


# Models --------------------------------------------------------------------------------

OURS_DENSE = {
    "reparameterization": tdg.layers.DenseReparameterization,
    "flipout": tdg.layers.DenseFlipout,
    "local_reparameterization": tdg.layers.DenseLocalReparameterization,
}
OURS_CONV = {
    "reparameterization": tdg.layers.Conv2DReparameterization,
    "flipout": tdg.layers.Conv2DFlipout,
    "local_reparameterization": tdg.layers.Conv2DLocalReparameterization,
}


def _keras_layers(kind, estimator):
    """(dense_factory, conv_factory) for a Keras 3 contender."""
    if kind == "keras":
        return keras.layers.Dense, keras.layers.Conv2D
    if kind in ("floor", "ideal", "ideal_kl"):
        ideal = {"floor": False, "ideal": True, "ideal_kl": "kl"}[kind]
        return (
            lambda units, **kw: FloorDense(units, estimator, ideal, **kw),
            lambda filters, size, **kw: FloorConv2D(filters, size, estimator, ideal, **kw),
        )
    if kind == "ours":
        kl = {"kl_weight": 1.0 / NUM_EXAMPLES}
        return (
            lambda units, **kw: OURS_DENSE[estimator](units, **kl, **kw),
            lambda filters, size, **kw: OURS_CONV[estimator](filters, size, **kl, **kw),
        )
    raise ValueError(kind)


def _tfp_layers(estimator):
    """(dense_factory, conv_factory or None) for tfp.layers; conv None if TFP has none."""
    import tensorflow_probability as tfp

    tfpl = tfp.layers

    def kl(q, p, _):
        return tfp.distributions.kl_divergence(q, p) / NUM_EXAMPLES

    dense = {
        "reparameterization": tfpl.DenseReparameterization,
        "flipout": tfpl.DenseFlipout,
        "local_reparameterization": tfpl.DenseLocalReparameterization,
    }[estimator]
    conv = {
        "reparameterization": tfpl.Convolution2DReparameterization,
        "flipout": tfpl.Convolution2DFlipout,
    }.get(estimator)
    return (
        lambda units, **kw: dense(units, kernel_divergence_fn=kl, **kw),
        None if conv is None else lambda f, s, **kw: conv(f, s, kernel_divergence_fn=kl, **kw),
    )


def build_model(arch, kind, estimator, seed):
    """A fresh model and optimizer; `kind` in keras, floor, ours, tfp."""
    if kind == "tfp":
        import tf_keras

        lib = tf_keras
        dense, conv = _tfp_layers(estimator)
        if arch == "cnn" and conv is None:
            return None
        extra = {}
    else:
        lib = keras
        dense, conv = _keras_layers(kind, estimator)
        extra = {} if kind == "keras" else {"seed": seed}
    if arch == "mlp":
        model = lib.Sequential(
            [
                lib.Input((784,)),
                dense(400, activation="relu", **extra),
                dense(400, activation="relu", **extra),
                dense(10, **extra),
            ]
        )
    else:
        model = lib.Sequential(
            [
                lib.Input((28, 28, 1)),
                conv(32, 3, activation="relu", **extra),
                lib.layers.MaxPooling2D(2),
                conv(64, 3, activation="relu", **extra),
                lib.layers.MaxPooling2D(2),
                lib.layers.Flatten(),
                dense(10, **extra),
            ]
        )
    optimizer = lib.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def make_step(model, optimizer, jit_compile, keras3):
    """One training step: forward, loss + KL, backward, Adam update."""
    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
            if model.losses:
                loss += tf.add_n(model.losses)
        grads = tape.gradient(loss, variables)
        if keras3:
            optimizer.apply(grads, variables)
        else:
            optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return step


# Report --------------------------------------------------------------------------------


def _ratio(a, b):
    return f"{a / b:.2f}" if np.isfinite(a) and np.isfinite(b) and b > 0 else "n/a"


def _verdict(value, target, higher_is_better):
    if not np.isfinite(value):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "ok" if ok else "MISS"


def bench_models(arch, args):
    rng = np.random.default_rng(0)
    shape = (BATCH, 784) if arch == "mlp" else (BATCH, 28, 28, 1)
    x = tf.constant(rng.standard_normal(shape).astype("float32"))
    y = tf.constant(rng.integers(0, 10, BATCH).astype("int32"))
    contenders = {}

    def add(kind, estimator, jit):
        built = build_model(arch, kind, estimator, seed=1)
        if built is None:  # tfp.layers has no local-reparameterization convolution
            return
        model, optimizer = built
        step = make_step(model, optimizer, jit, keras3=kind != "tfp")
        name = {"tfp": "tfp.layers", "ideal_kl": "ideal+kl"}.get(kind, kind)
        label = f"{name} {SHORT.get(estimator, '')} ({'xla' if jit else 'graph'})"
        contenders[kind, estimator, jit] = Contender(" ".join(label.split()), step, (x, y))

    add("keras", None, True)
    add("keras", None, False)
    for est in ESTIMATORS:
        add("floor", est, True)
        if args.ideal:
            add("ideal", est, True)
            add("ideal_kl", est, True)
        for jit in (True, False):
            add("ours", est, jit)
            add("tfp", est, jit)

    print(f"\n[{arch}] tracing and warming up {len(contenders)} contenders ...", file=sys.stderr)
    steps = args.steps if arch == "mlp" else max(2, args.steps // 2)
    run_contenders(list(contenders.values()), args, steps=steps, width=44)

    def ms(kind, est, jit):
        c = contenders.get((kind, est, jit))
        return c.ms if c is not None else float("nan")

    title = {
        "mlp": "MLP 784-400-400-10, batch 128",
        "cnn": "CNN 28x28x1 conv32-pool-conv64-pool-dense10, batch 128",
    }[arch]
    print(f"\n== {title}: median ms/step ==")
    header = ("estimator", "mode", "keras", "floor", "ideal", "+kl", "ours", "tfp")
    header += ("ours/keras", "tfp/ours", "ours/floor", "ours/ideal", "+kl/floor")
    layout = "{:<10}{:<6}" + "{:>8}" * 6 + "{:>11}{:>9}{:>11}{:>11}{:>10}"
    print(layout.format(*header))
    for est in ESTIMATORS:
        for jit in (True, False):
            k, f, i = ms("keras", None, jit), ms("floor", est, jit), ms("ideal", est, jit)
            i_kl = ms("ideal_kl", est, jit)
            o, t = ms("ours", est, jit), ms("tfp", est, jit)
            row = (SHORT[est], "xla" if jit else "graph", k, f, i, i_kl, o, t)
            row += (_ratio(o, k), _ratio(t, o), _ratio(o, f), _ratio(o, i), _ratio(i_kl, f))
            print(layout.replace("{:>8}", "{:>8.2f}").format(*row).replace(" nan", "   -"))
    print(f"-- targets (xla): tfp/ours >= {TARGET_SPEEDUP}, ours/floor <= {TARGET_FLOOR} --")
    for est in ESTIMATORS:
        o, t, f = ms("ours", est, True), ms("tfp", est, True), ms("floor", est, True)
        t_best = min(t, ms("tfp", est, False))
        print(
            f"{SHORT[est]:<10}tfp/ours {_ratio(t, o):>5} {_verdict(t / o, TARGET_SPEEDUP, True):<5}"
            f"(vs tfp's faster mode {_ratio(t_best, o):>5})   "
            f"ours/floor {_ratio(o, f):>5} {_verdict(o / f, TARGET_FLOOR, False)}"
        )
    print("-- every contender: median wall, interquartile range, median process CPU time --")
    for c in contenders.values():
        print(c.describe(44))


# RNG micro-benchmark -------------------------------------------------------------------


def _rademacher_variants():
    """Ways of drawing exact +-1 float32 signs from a stateless seed."""

    def full_int(shape, seed):
        return tf.random.stateless_uniform(
            shape, seed=seed, minval=None, maxval=None, dtype=tf.int32, alg="philox"
        )

    def full_int_sign_bit(shape, seed):
        return tf.where(full_int(shape, seed) < 0, -1.0, 1.0)

    def full_int_bitcast(shape, seed):
        # Move the random sign bit into the float 1.0: bits & 0x80000000 | 0x3f800000.
        sign = tf.bitwise.bitwise_and(full_int(shape, seed), tf.constant(-(2**31), tf.int32))
        return tf.bitcast(
            tf.bitwise.bitwise_or(sign, tf.constant(0x3F800000, tf.int32)), tf.float32
        )

    def uniform_float_lt_half(shape, seed):
        u = tf.random.stateless_uniform(shape, seed=seed, alg="philox")
        return tf.where(u < 0.5, -1.0, 1.0)

    def tfp_random_rademacher(shape, seed):
        import tensorflow_probability as tfp

        return tfp.random.rademacher(shape, dtype=tf.float32, seed=seed)

    return {
        "library's random.rademacher (packed)": lambda shape, seed: random.rademacher(
            shape, seed, tf.float32
        ),
        "stateless_uniform int [0,2), philox": lambda shape, seed: tf.cast(
            2
            * tf.random.stateless_uniform(
                shape, seed=seed, minval=0, maxval=2, dtype=tf.int32, alg="philox"
            )
            - 1,
            tf.float32,
        ),
        "full_int philox, where(sign bit)": full_int_sign_bit,
        "full_int philox, bitcast sign into 1.0": full_int_bitcast,
        "uniform float philox, where(u < 0.5)": uniform_float_lt_half,
        "tfp.random.rademacher": tfp_random_rademacher,
    }


def _normal_variants():
    """Standard normals of a given shape; exact up to float32 resolution."""

    variants = {
        f"stateless_normal alg={alg}": lambda shape, seed, alg=alg: tf.random.stateless_normal(
            shape, seed=seed, alg=alg
        )
        for alg in ("auto_select", "philox", "threefry")
    }
    variants["library's random.normal (ndtri)"] = random.normal
    return variants


def bench_rng(args):
    seed = tf.constant([3, 7], tf.int32)
    kernel, signs = (784, 400), (BATCH, 784)
    cases = [("normal", kernel, name, f) for name, f in _normal_variants().items()]
    cases += [("rademacher", signs, name, f) for name, f in _rademacher_variants().items()]
    contenders = []
    for what, shape, name, make in cases:
        for jit in (True, False):
            # reduce_sum keeps XLA from dropping the draw and costs little next to it.
            fn = tf.function(lambda s, m=make, sh=shape: tf.reduce_sum(m(sh, s)), jit_compile=jit)
            label = f"{what} {shape} {name} ({'xla' if jit else 'graph'})"
            contenders.append(Contender(label, fn, (seed,)))
    for jit in (True, False):
        fn = tf.function(
            lambda s: tf.reduce_sum(tf.random.experimental.stateless_split(s, num=4)),
            jit_compile=jit,
        )
        contenders.append(
            Contender(f"stateless_split(num=4) ({'xla' if jit else 'graph'})", fn, (seed,))
        )

    print(f"\n[rng] tracing and warming up {len(contenders)} contenders ...", file=sys.stderr)
    run_contenders(contenders, args, steps=2 * args.steps, budget=args.budget / 2, width=44)
    print("\n== RNG micro-benchmark: median ms/call, IQR, process CPU time ==")
    for c in contenders:
        print(c.describe(44))


# Positive-scale micro-benchmark -----------------------------------------------------


def bench_scale(args):
    """The posterior scale's transform, KL and gradients, alone, on the MLP's 478k weights."""
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.002, 0.05, 478_410)
    loc = tf.constant(rng.normal(0.0, 0.05, 478_410).astype("float32"))
    eps = tf.constant(rng.standard_normal(478_410).astype("float32"))
    layer = keras.layers.Layer()
    q = tdg.posteriors.MeanFieldNormal(layer, "kernel", scales.shape)
    q.log_scale.assign(np.log(scales).astype("float32"))
    # (name, variable, its scale, the log scale the KL reads: None takes the log)
    contenders_spec = [
        (
            "softplus, log in the KL",
            tf.Variable(np.log(np.expm1(scales)).astype("float32")),
            lambda r: tf.math.softplus(r) + tdg.posteriors.MIN_SCALE,
            lambda r: None,
        ),
        ("library's log scale (exp)", q.log_scale, lambda r: q.scale(), lambda r: r),
        (
            "none (the ideal's scale), log in the KL",
            tf.Variable(scales.astype("float32")),
            tf.identity,
            lambda r: None,
        ),
    ]
    contenders = []
    for name, source, transform, log_of in contenders_spec:

        def step(source=source, transform=transform, log_of=log_of):
            with tf.GradientTape() as tape:
                scale = transform(source)
                sample = loc + scale * eps
                kl = STANDARD_NORMAL.kl_divergence(loc, scale, log_scale=log_of(source))
                loss = tf.reduce_sum(sample) + kl
            return tape.gradient(loss, source)

        fn = tf.function(lambda step=step: tf.reduce_sum(step()), jit_compile=True)
        contenders.append(Contender(f"{name} (xla)", fn, ()))
    print(f"\n[scale] tracing and warming up {len(contenders)} contenders ...", file=sys.stderr)
    run_contenders(contenders, args, steps=4 * args.steps, budget=args.budget / 2, width=44)
    print("\n== Positive scale + KL + gradients, 478k weights: median ms/call, IQR, CPU time ==")
    for c in contenders:
        print(c.describe(44))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    parser.add_argument("--only", nargs="+", choices=("mlp", "cnn", "rng", "scale"), default=None)
    parser.add_argument(
        "--ideal", action="store_true", help="also time the 'ideal' contenders (adds ~1 min)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per round and contender"
    )
    args = parser.parse_args(argv)
    args.warmup, args.steps = (2, 4) if args.quick else (5, 10)
    args.rounds = args.rounds or (3 if args.quick else 6)
    args.budget = args.budget or (0.3 if args.quick else 0.8)
    sections = args.only or ("mlp", "cnn", "rng")  # "scale" only when asked for
    print(
        f"tf {tf.__version__}, keras {keras.__version__}, tfp_deepgen {tdg.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; warm-up {args.warmup} "
        f"steps, then {args.rounds} round-robin rounds of <= {args.steps} steps "
        f"(<= {args.budget:.1f} s) per contender"
    )
    for section in sections:
        if section == "rng":
            bench_rng(args)
        elif section == "scale":
            bench_scale(args)
        else:
            bench_models(section, args)


if __name__ == "__main__":
    main()
