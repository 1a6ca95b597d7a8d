"""Training-step time of `tdg.models.DeepExponentialFamily` against a hand-written DEF.

Run from the repository root (2 shared CPU cores: about a minute, much of it XLA
compilation; ``--quick``: about 30 s):

    python benchmarks/def.py                  # both models, XLA and graph mode
    python benchmarks/def.py --quick          # fewer steps, for a smoke test
    python benchmarks/def.py --xla-only
    python benchmarks/def.py --batch-size 32  # default 64

The model is the default sparse gamma DEF (Ranganath et al. 2015) on real word counts,
``tdg.datasets.load_word_counts("wikipedia", vocabulary_size=2000)`` (200 training
documents x 2000 words; the first ``--batch-size`` documents are the batch): gamma
latents of shape 0.1 (top layer rate 0.1), Poisson counts, gamma weights (shape 0.1,
rate 0.3) with a log-normal q whose KL counts 1/200 per document, and an amortized
encoder (``log1p(x)``, Dense(256, softplus), BatchNormalization, one Dense head per
layer giving loc and raw scale of a log-normal q). Two models: one layer ``[50]`` and
three layers ``[100, 30, 15]``. Every contender runs one `tf.function` per step
(forward, one-sample reparameterized negative ELBO per document, backward, Adam
update). Contenders:

- ``hand``: the same model and objective written by hand in Keras/TensorFlow, as a
  user would: Keras layers for the encoder, ``add_weight`` variables for
  the weights' q, ``keras.random.normal`` noise, ``log z = loc + softplus(raw) * eps``,
  gamma and log-normal log densities in ``log z``, the Poisson rate as
  ``exp(log z_1) @ exp(log W_0)``. No metrics.
- ``hand-philox``: the same with ``tf.random.stateless_normal(..., alg="philox")``. Under
  XLA on CPU, TensorFlow's default stateless algorithm (which ``keras.random.normal``
  uses) is an order of magnitude slower (``benchmarks/layers.py --only rng``), and the
  weights' q needs a normal per weight (100k or 200k per step), so ``hand`` under XLA
  mostly measures its random numbers; ``hand-philox`` is the floor.
- ``tdg``: ``tdg.models.DeepExponentialFamily(sizes, num_examples=200)``, the step that
  `fit` runs minus Keras's bookkeeping (its call also updates its ``reconstruction``
  and ``kl`` metrics).

Before timing, the two are checked to compute the same objective: the hand-written
model gets tdg's weights and replays the standard normals tdg drew (recorded by
wrapping ``tdg.random.normal`` for one eager call), and the losses and gradients on the
same batch are compared.

No targets: the ratios are printed as measurements. One run (2 shared CPU cores, load
average 1.7; ms/step, batch 64; between runs the ratios moved by up to 0.1):

    model        mode    hand  hand-philox   tdg   tdg/hand  tdg/hand-philox
    [50]         xla     27.4      4.5        4.7    0.17        1.05
    [50]         graph    7.5      7.6        8.2    1.09        1.08
    [100,30,15]  xla     49.6      6.7        6.5    0.13        0.96
    [100,30,15]  graph   10.1     10.0       12.1    1.20        1.21

Losses agree exactly and gradients to 5e-5 of their largest entry. Under XLA tdg is at
the floor. In graph mode its 10-20% is unfused elementwise work spread over many small
pieces: its step graph has 2130 ops to 1581 and 144 tensors of >= 100k entries to 110
(the log-space matmul's shifts, the Poisson rate re-exponentiated from its log, ``log q``
recomputed from the draw, the inverse-CDF normals); swapping out any one of the shifted
matmul, its normals, synchronized batch norm or the metrics changed the time by ~1%.
"""

import argparse
import contextlib
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _harness import (  # noqa: E402
    Contender,
    added_losses,
    make_loss_step,
    parse_timing_args,
    report,
    run_contenders,
)

import tfp_deepgen as tdg  # noqa: E402

tf.get_logger().setLevel("ERROR")

MODELS = {"1 layer [50]": (50,), "3 layers [100, 30, 15]": (100, 30, 15)}
KINDS = ("hand", "hand-philox", "tdg")
RATIOS = (("tdg", "hand"), ("tdg", "hand-philox"), ("hand-philox", "hand"))
# The DEF's defaults: sparse gamma latents and weights.
PRIOR_SHAPE, PRIOR_RATE, WEIGHT_SHAPE, WEIGHT_RATE = 0.1, 0.1, 0.1, 0.3
ENCODER_UNITS = 256
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def gamma_log_prob(log_value, shape, log_rate):
    """log Gamma(value; shape, rate) written in log value (finite when value underflows)."""
    return (
        shape * log_rate
        - math.lgamma(shape)
        + (shape - 1.0) * log_value
        - tf.exp(log_rate + log_value)
    )


def log_normal_sample(loc, raw_scale, eps):
    """`log z = loc + scale * eps` and `log q(z)`, the density in z (Jacobian `-log z`)."""
    scale = tf.nn.softplus(raw_scale) + 1e-4
    log_value = loc + scale * eps
    return log_value, -0.5 * tf.square(eps) - tf.math.log(scale) - HALF_LOG_TWO_PI - log_value


def log_matmul(log_a, log_b):
    """`log(exp(log_a) @ exp(log_b))`, floored at exp(-60) as the library does."""
    return tf.math.log(tf.maximum(tf.matmul(tf.exp(log_a), tf.exp(log_b)), math.exp(-60.0)))


class HandWrittenDEF(keras.Model):
    """The sparse gamma DEF written directly in Keras and TensorFlow."""

    def __init__(self, layer_sizes, num_columns, num_examples, philox=False, seed=0):
        super().__init__()
        self.layer_sizes, self.num_examples, self.philox = layer_sizes, num_examples, philox
        self.encoder = keras.Sequential(
            [
                keras.Input((num_columns,)),
                keras.layers.Dense(ENCODER_UNITS, activation="softplus"),
                keras.layers.BatchNormalization(),
            ]
        )
        self.heads = []
        for size in layer_sizes:
            head = keras.layers.Dense(
                2 * size,
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5 / ENCODER_UNITS**0.5),
                bias_initializer=keras.initializers.Constant([0.0] * size + [-2.0] * size),
            )
            head.build((None, ENCODER_UNITS))
            self.heads.append(head)
        below = [num_columns, *layer_sizes[:-1]]
        self.weight_locs, self.weight_scales = [], []
        for rows, columns in zip(layer_sizes, below, strict=True):
            self.weight_locs.append(
                self.add_weight(
                    shape=(rows, columns),
                    initializer=keras.initializers.RandomNormal(-math.log(columns), 0.5),
                )
            )
            small = keras.initializers.Constant(-4.0)  # softplus(-4) = 0.018
            self.weight_scales.append(self.add_weight(shape=(rows, columns), initializer=small))
        self.seeds = keras.random.SeedGenerator(seed)

    def negative_elbo(self, x, noise=None):
        """Negative ELBO per document; `noise`, if given, is an iterator of standard normals."""

        def normal(shape):
            if noise is not None:
                return next(noise)
            if self.philox:
                seed = tf.cast(tf.math.floormod(self.seeds.next(), tf.int32.max - 1), tf.int32)
                return tf.random.stateless_normal(shape, seed, alg="philox")
            return keras.random.normal(shape, seed=self.seeds)

        # Weights: one draw of log W from the log-normal q, single-sample KL to the gamma prior.
        log_weights, weights_kl = [], 0.0
        log_weight_rate = math.log(WEIGHT_RATE)
        for loc, raw_scale in zip(self.weight_locs, self.weight_scales, strict=True):
            log_w, log_q = log_normal_sample(loc, raw_scale, normal(loc.shape))
            log_p = gamma_log_prob(log_w, WEIGHT_SHAPE, log_weight_rate)
            weights_kl += tf.reduce_sum(log_q - log_p)
            log_weights.append(log_w)
        # Local latents: log-normal q(z_l | x) from the encoder, bottom layer first.
        features = self.encoder(tf.math.log1p(x), training=True)
        log_z, local_kl = [], 0.0
        for head in self.heads:
            loc, raw_scale = tf.split(head(features), 2, axis=-1)
            log_value, log_q = log_normal_sample(loc, raw_scale, normal(tf.shape(loc)))
            log_z.append(log_value)
            local_kl += tf.reduce_sum(log_q, -1)
        # Top layer ~ Gamma(a, prior_rate); z_l ~ Gamma(a, a / (z_{l+1} W_l)).
        top = gamma_log_prob(log_z[-1], PRIOR_SHAPE, math.log(PRIOR_RATE))
        local_kl -= tf.reduce_sum(top, -1)
        for index in range(len(log_z) - 1):
            log_mean = log_matmul(log_z[index + 1], log_weights[index + 1])
            log_rate = math.log(PRIOR_SHAPE) - log_mean
            local_kl -= tf.reduce_sum(gamma_log_prob(log_z[index], PRIOR_SHAPE, log_rate), -1)
        # x ~ Poisson(z_1 W_0).
        rate = tf.matmul(tf.exp(log_z[0]), tf.exp(log_weights[0]))
        log_rate = tf.math.log(tf.maximum(rate, math.exp(-60.0)))
        log_likelihood = tf.reduce_sum(x * log_rate - rate - tf.math.lgamma(x + 1.0), -1)
        return -tf.reduce_mean(log_likelihood - local_kl) + weights_kl / self.num_examples


def make_models(sizes, num_columns, num_examples):
    """A built tdg DEF and the hand-written ones (keras, Philox normals), same weights."""
    model = tdg.models.DeepExponentialFamily(sizes, num_examples=num_examples, seed=0)
    model.build((None, num_columns))
    hands = [HandWrittenDEF(sizes, num_columns, num_examples, philox, 0) for philox in (0, 1)]
    for hand in hands:
        for target, source in zip(paired(hand), paired(model), strict=True):
            target.assign(source)
    return model, *hands


def paired(model):
    """The variables of either model in one order: encoder, heads, weights' q."""
    if isinstance(model, HandWrittenDEF):
        dense, norm = model.encoder.layers
        heads, locs, scales = model.heads, model.weight_locs, model.weight_scales
    else:
        (dense,), (norm,) = model.encoder_layers, model.encoder_norms
        heads, locs, scales = model.posterior_layers, model.weight_locs, model.weight_scales
    variables = [dense.kernel, dense.bias, norm.gamma, norm.beta]
    variables += [norm.moving_mean, norm.moving_variance]
    for head in heads:
        variables += [head.kernel, head.bias]
    return variables + list(locs) + list(scales)


@contextlib.contextmanager
def recorded_normals():
    """Records every `tdg.random.normal` draw (the DEF's only noise) while active."""
    draws, original = [], tdg.random.normal

    def normal(*args, **kwargs):
        draws.append(original(*args, **kwargs))
        return draws[-1]

    tdg.random.normal = normal
    try:
        yield draws
    finally:
        tdg.random.normal = original


def check_same_objective(model, hand, x):
    """Loss and gradients of both models on `x` with tdg's noise replayed in `hand`."""
    with recorded_normals() as draws, tf.GradientTape(persistent=True) as tape:
        model(x, training=True)
        loss_tdg = tf.add_n(model.losses)
    # tdg draws the weights bottom to top, then the latents (with a leading sample axis).
    num_weights = len(hand.weight_locs)
    noise = [eps if i < num_weights else eps[0] for i, eps in enumerate(draws)]
    with tf.GradientTape() as hand_tape:
        loss_hand = hand.negative_elbo(x, noise=iter(noise))
    variables_tdg = [v for v in paired(model) if v.trainable]
    variables_hand = [v for v in paired(hand) if v.trainable]
    grads_tdg = tape.gradient(loss_tdg, variables_tdg)
    grads_hand = hand_tape.gradient(loss_hand, variables_hand)
    worst = max(
        float(tf.reduce_max(tf.abs(a - b)) / (tf.reduce_max(tf.abs(a)) + 1e-30))
        for a, b in zip(grads_tdg, grads_hand, strict=True)
    )
    loss_tdg, loss_hand = float(loss_tdg), float(loss_hand)
    print(
        f"  same noise and weights: loss tdg {loss_tdg:.6g}, hand {loss_hand:.6g}, "
        f"relative difference {abs(loss_tdg - loss_hand) / abs(loss_hand):.1e}; "
        f"gradients: largest difference / largest entry {worst:.1e} "
        f"({len(draws)} noise tensors)"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--batch-size", type=int, default=64)
    known, rest = parser.parse_known_args(argv)
    args = parse_timing_args(
        __doc__.split("\n", 1)[0] + " Also --batch-size N (default 64).",
        rest,
        rounds=6,
        budget=0.25,
        quick_budget=0.1,
    )
    args.batch_size = known.batch_size
    return args


def main(argv=None):
    args = parse_args(argv)
    (train, _), _ = tdg.datasets.load_word_counts("wikipedia", vocabulary_size=2000)
    num_examples, num_columns = train.shape
    if not 0 < args.batch_size <= num_examples:
        raise SystemExit(f"--batch-size must be in [1, {num_examples}]")
    x = tf.constant(train[: args.batch_size])
    for name, sizes in MODELS.items():
        print(f"\n[{name}] checking that both compute the same objective ...")
        model, hand, _ = make_models(sizes, num_columns, num_examples)
        check_same_objective(model, hand, x)
        contenders = {}
        for mode in args.modes:
            # Separate models per mode, equal weights; each step owns its Adam.
            model, hand, hand_philox = make_models(sizes, num_columns, num_examples)
            steps = {
                "hand": make_loss_step(hand.trainable_variables, hand.negative_elbo, mode == "xla"),
                "hand-philox": make_loss_step(
                    hand_philox.trainable_variables, hand_philox.negative_elbo, mode == "xla"
                ),
                "tdg": make_loss_step(
                    model.trainable_variables, added_losses(model), mode == "xla"
                ),
            }
            for kind in KINDS:
                contenders[kind, mode] = Contender(f"{kind} ({mode})", steps[kind], (x,))
        print(f"\n[{name}] warming up {len(contenders)} contenders ...", file=sys.stderr)
        run_contenders(list(contenders.values()), args)
        title = f"DEF training step, {name}, {num_columns} words, batch {args.batch_size}"
        report(title, contenders, RATIOS, args.modes)


if __name__ == "__main__":
    main()
