"""Topic models of word counts: sparse gamma Deep Exponential Families next to LDA.

`tdg.models.DeepExponentialFamily` is the sparse gamma DEF of Ranganath,
Tang, Charlin and Blei, "Deep Exponential Families" (AISTATS 2015): word
counts x ~ Poisson(z_1 W_0), each latent layer z_l ~ Gamma(alpha, alpha /
(z_{l+1} W_l)) with mean z_{l+1} W_l, the top layer z_L ~ Gamma(alpha,
prior_rate), and gamma weights W ~ Gamma(0.1, 0.3) with a log-normal q.
Inference is amortized: one encoder network gives every document's q over
all layers. The script fits one-, two- and three-layer DEFs ([50], [50, 20],
[50, 20, 10] units, bottom first) and scikit-learn's
`LatentDirichletAllocation` (batch variational Bayes, 100 passes, its
default priors 1/K) with 20, 50 and 100 topics, all on the same split.

Data: `tdg.datasets.load_word_counts` (`--corpus wikipedia`, default: 250
stemmed Wikipedia articles; `lee`: 293 Australian news stories), the
`--vocabulary-size` (2,000) most frequent words, 80% of the documents for
training and 20% held out. Evaluation is held-out perplexity by document
completion (Wallach et al., 2009): each test document's tokens are split at
random in halves (`tdg.datasets.split_document_words`), the model infers
the document's topics from the observed half and scores the other,
`exp(-sum log p(held-out words) / number of held-out words)`, lower is
better. For the DEF that is `model.perplexity` (q given the observed half,
100 draws of z, the weights' posterior mean), once with the encoder's q and
once with `inference_steps=300`: 300 Adam steps on each document's ELBO
from the encoder's guess, since an encoder trained on whole documents sees
only halves here. For LDA, `theta = lda.transform(observed)` (its own
per-document variational inference) and p(word) = theta times the
normalized topics. The unigram baseline (training word frequencies,
add-one smoothed) ignores the observed half.

Training settings, from a short sweep on wikipedia (one-layer [50] DEFs,
200 epochs, one seed each; runs differing only in their random stream
differ by about +-30): Adam at 1e-2 with the gradients' global norm clipped
at 10 (unclipped, 4 of 15 early sweep runs ended in NaN; since the model
caps q's scales those four settings train to finite losses, but unclipped
fits still show loss spikes, up to 1e7 without an encoder hidden layer),
an encoder of one hidden layer of 100 units (256: 1357; none: 1576, at
3e-3), prior_shape 0.3 (the paper's 0.1 scored the same, 1241 vs 1238, with
wider q's), 200 epochs of batches of 25, variational weights (point
estimates scored about the same), 50 bottom units (20: 1228, 100: 1298).

Measured on two CPU cores, wikipedia, seed 0 (`python examples/def_topics.py`,
157 s in all), held-out perplexity, encoder q / per-document q:

    unigram (add-one)   1681
    DEF [50]            1257 / 1130   (27 s of training)
    DEF [50, 20]        1216 / 1086   (27 s)
    DEF [50, 20, 10]    1227 / 1095   (29 s)
    LDA, 20 / 50 / 100 topics: 1126 / 1029 / 968   (5 / 9 / 44 s)

Per-document inference gains 120-130 for every DEF. The two- and
three-layer DEFs beat the one-layer DEF and LDA with 20 topics, as deeper
DEFs beat LDA in Ranganath et al. (NYT, Science), but LDA with 50 or 100
topics is better here: with 200 training documents only 15-22 of the 50
bottom units carry words (a unit counts as active with at least 1% of the
median training document's expected words), and one second-layer unit
takes 70-86% of the words.

The script exports the three-layer DEF for TF Serving to
`savedmodels/def_topics/1` (signatures `transform` = `serving_default`,
and `perplexity` with 100 draws) and writes its vocabulary, one word a line
in column order, to `savedmodels/def_topics/vocabulary.txt`.

`--quick` (10 epochs, 5 LDA passes, 20 draws) exports to
`examples/output/quick/savedmodels/def_topics/` instead, leaving a full run's
export in place.

Run from the repository root, after `pip install -e ".[examples]"` there:

    python examples/def_topics.py [--corpus {wikipedia,lee}] [--vocabulary-size 2000]
        [--epochs 200] [--batch-size 25] [--eval-samples 100] [--seed 0] [--threads 1]
        [--quick]
"""

import time

import _cli
import keras
import numpy as np
from _threads import add_threads_argument, use_threads
from sklearn.decomposition import LatentDirichletAllocation

import tfp_deepgen as tdg

DEF_LAYERS = ([50], [50, 20], [50, 20, 10])  # bottom (next to the words) first
LDA_TOPICS = (20, 50, 100)
LDA_PASSES = 100
EPOCHS = 200
BATCH_SIZE = 25
LEARNING_RATE = 1e-2
CLIP_NORM = 10.0  # global norm of the gradients; without it the fits can diverge
ENCODER_UNITS = (100,)
PRIOR_SHAPE = 0.3  # the paper's sparse 0.1 scored the same with wider, less stable q's
EVAL_SAMPLES = 100  # draws of z per document for the perplexity
INFERENCE_STEPS = 300  # per-document refinement of q from the encoder's guess
ACTIVE_SHARE = 0.01  # a unit is active with >= 1% of the median document's expected words
TOP_UNITS = 5  # topics shown per layer
TOP_WORDS = 8
# TensorFlow's CPU thread pools sum in an order that varies from run to run; the DEF's
# heavy-tailed gradients amplify those rounding differences (the three-layer DEF's
# perplexity varied by about 45 between two identical runs). One thread makes runs
# repeatable (`--threads`, default 1), at about 10% more training time here.
QUICK = dict(epochs=10, lda_passes=5, eval_samples=20, inference_steps=20)


def perplexity(word_probabilities, heldout):
    """exp(-sum of log p over held-out tokens / number of held-out tokens)."""
    log_prob = np.sum(heldout * np.log(word_probabilities))
    return float(np.exp(-log_prob / np.sum(heldout)))


class PerplexityReport(keras.callbacks.Callback):
    """Prints the training logs and the held-out perplexity every `every` epochs."""

    def __init__(self, observed, heldout, every, eval_samples):
        super().__init__()
        self.observed, self.heldout = observed, heldout
        self.every, self.eval_samples = every, eval_samples
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            score = float(self.model.perplexity(self.observed, self.heldout, self.eval_samples))
            print(
                f"    epoch {epoch + 1}: loss {logs['loss']:.1f}, reconstruction "
                f"{logs['reconstruction']:.1f}, kl {logs['kl']:.1f}; held-out perplexity "
                f"{score:.1f} ({time.perf_counter() - self.start:.0f} s)",
                flush=True,
            )


def fit_def(layer_sizes, x_train, observed, heldout, epochs, batch_size, eval_samples, seed):
    """A sparse gamma DEF fitted to `x_train`; returns it and the seconds of `fit`."""
    model = tdg.models.DeepExponentialFamily(
        layer_sizes,
        prior_shape=PRIOR_SHAPE,
        num_examples=len(x_train),
        encoder_units=ENCODER_UNITS,
        seed=seed,
        name="def_" + "_".join(map(str, layer_sizes)),
    )
    model.compile(keras.optimizers.Adam(LEARNING_RATE, global_clipnorm=CLIP_NORM))
    report = PerplexityReport(observed, heldout, max(1, epochs // 4), eval_samples)
    start = time.perf_counter()
    model.fit(x_train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[report])
    return model, time.perf_counter() - start


def unit_usage(model, x):
    """Per layer: each unit's share of the median training document's expected words.

    Unit k of layer l contributes E[z_lk | x] times the row sum of its
    effect on the words, E[W_{l-1}] ... E[W_0]. The median over documents
    keeps a few documents with extreme posterior means (heavy-tailed
    log-normal q's) from deciding the shares.
    """
    weights = [np.asarray(w, "float64") for w in model.weight_means()]
    shares, effect = [], None
    for means, w in zip(model.transform(x), weights, strict=True):
        effect = w if effect is None else w @ effect
        usage = np.median(np.asarray(means, "float64") * effect.sum(axis=1), axis=0)
        shares.append(usage / usage.sum())
    return shares


def print_topics(title, shares, top_words):
    """The TOP_UNITS most used units of a layer with their top words."""
    active = int(np.sum(shares >= ACTIVE_SHARE))
    print(f"  {title}: {active} of {len(shares)} units active")
    for unit in np.argsort(-shares)[:TOP_UNITS]:
        print(f"    {unit:>3} ({100 * shares[unit]:4.1f}%)  {' '.join(top_words[unit])}")


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--corpus",
        choices=("wikipedia", "lee"),
        default="wikipedia",
        help="wikipedia: 250 stemmed Wikipedia articles; lee: 293 news stories",
    )
    parser.add_argument(
        "--vocabulary-size", type=int, default=2000, help="most frequent words kept"
    )
    parser.add_argument("--epochs", type=int, help=f"DEF epochs (default {EPOCHS})")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="documents per batch (default 25)"
    )
    parser.add_argument(
        "--eval-samples", type=int, help=f"draws of z for the perplexity (default {EVAL_SAMPLES})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    add_threads_argument(parser)
    _cli.add_quick_argument(
        parser,
        f"{QUICK['epochs']} epochs, {QUICK['lda_passes']} LDA passes, {QUICK['eval_samples']} "
        f"draws (unless given), {QUICK['inference_steps']} per-document inference steps",
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    epochs = args.epochs or (QUICK["epochs"] if args.quick else EPOCHS)
    eval_samples = args.eval_samples or (QUICK["eval_samples"] if args.quick else EVAL_SAMPLES)
    lda_passes = QUICK["lda_passes"] if args.quick else LDA_PASSES
    use_threads(args.threads)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    (x_train, x_test), vocabulary = tdg.datasets.load_word_counts(
        args.corpus, vocabulary_size=args.vocabulary_size, seed=args.seed
    )
    observed, heldout = tdg.datasets.split_document_words(x_test, 0.5, seed=args.seed)
    print(
        f"{args.corpus}: {len(x_train)} training and {len(x_test)} test documents, "
        f"{len(vocabulary)} words, {int(x_train.sum())} training tokens, "
        f"{int(heldout.sum())} held-out test tokens"
    )
    inference_steps = QUICK["inference_steps"] if args.quick else INFERENCE_STEPS
    rows = []  # (model, perplexity: encoder's q, refined q, active units, seconds)
    unigram = (x_train.sum(axis=0) + 1.0) / (x_train.sum() + x_train.shape[1])
    rows.append(("unigram (add-one)", perplexity(unigram[None], heldout), None, "", 0.0))

    print(
        f"\nsparse gamma DEFs: Adam {LEARNING_RATE:g} (global clip norm {CLIP_NORM:g}), "
        f"{epochs} epochs of {args.batch_size}, encoder {list(ENCODER_UNITS)}, "
        f"prior_shape {PRIOR_SHAPE:g}"
    )
    models = {}
    for index, layer_sizes in enumerate(DEF_LAYERS):
        print(f"  DEF {layer_sizes}", flush=True)
        model, seconds = fit_def(
            layer_sizes,
            x_train,
            observed,
            heldout,
            epochs,
            args.batch_size,
            eval_samples,
            args.seed + index,
        )
        shares = unit_usage(model, x_train)
        score = float(model.perplexity(observed, heldout, num_samples=eval_samples))
        refined = float(
            model.perplexity(
                observed, heldout, num_samples=eval_samples, inference_steps=inference_steps
            )
        )
        active = " / ".join(f"{int(np.sum(s >= ACTIVE_SHARE))}" for s in shares)
        rows.append((f"DEF {layer_sizes}", score, refined, active, seconds))
        models[len(layer_sizes)] = (model, shares)

    print(f"\nscikit-learn LDA: batch variational Bayes, {lda_passes} passes")
    ldas = {}
    for num_topics in LDA_TOPICS:
        lda_start = time.perf_counter()
        lda = LatentDirichletAllocation(
            num_topics, learning_method="batch", max_iter=lda_passes, random_state=args.seed
        ).fit(x_train)
        seconds = time.perf_counter() - lda_start
        topics = lda.components_ / lda.components_.sum(axis=1, keepdims=True)
        score = perplexity(lda.transform(observed) @ topics, heldout)
        print(f"  LDA, {num_topics} topics: {seconds:.0f} s", flush=True)
        rows.append((f"LDA, {num_topics} topics", None, score, "", seconds))
        ldas[num_topics] = lda

    header = f"held-out perplexity ({int(heldout.sum())} tokens)"
    print(
        f"\n{header:<38} {'encoder q':>10} {'per-doc q':>10}  {'active units':>12} {'train s':>8}"
    )
    for name, score, refined, active, seconds in rows:
        cells = [f"{v:>10.1f}" if v is not None else " " * 10 for v in (score, refined)]
        print(f"{name:<38} {cells[0]} {cells[1]}  {active:>12} {seconds:>8.0f}")
    print(
        "document completion: topics from a random half of each test document's tokens, "
        "scored on the other half. encoder q: the DEF's encoder alone; per-doc q: "
        f"{inference_steps} steps of per-document inference from there (LDA: its own "
        "per-document variational inference). Active units per layer (bottom first): at "
        f"least {100 * ACTIVE_SHARE:g}% of the median training document's expected words."
    )

    print(f"\ntop words of the {TOP_UNITS} most used units per layer (share of the words)")
    for depth, (model, shares) in models.items():
        print(f"DEF {list(model.layer_sizes)}")
        components = model.components(TOP_WORDS, vocabulary)
        for layer in range(depth):
            kind = "word profiles" if layer == 0 else "through the layers below"
            print_topics(f"layer {layer + 1} ({kind})", shares[layer], components[layer])
    num_topics = 50 if 50 in ldas else LDA_TOPICS[0]
    lda = ldas[num_topics]
    usage = lda.transform(x_train).sum(axis=0)
    top = np.argsort(-lda.components_, axis=1)[:, :TOP_WORDS]
    print(f"LDA, {num_topics} topics")
    print_topics("topics", usage / usage.sum(), [[vocabulary[i] for i in row] for row in top])

    deepest, _ = models[max(models)]
    path = _cli.export(deepest, "def_topics", args.quick, num_samples=eval_samples)
    vocabulary_path = _cli.export_base("def_topics", args.quick) / "vocabulary.txt"
    vocabulary_path.write_text("\n".join(vocabulary) + "\n")
    print(f"\nExported DEF {list(deepest.layer_sizes)} to {path}")
    print(f"Its input columns, one word a line: {vocabulary_path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
