"""Text corpora shipped with gensim, as document-by-word counts for topic models.

`load_word_counts` builds the count matrices; `split_document_words` splits
each document's words for document-completion perplexity.

Example:

>>> import tfp_deepgen as tdg
>>> (train, test), vocabulary = tdg.datasets.load_word_counts("lee", vocabulary_size=50)
>>> train.shape[1], len(vocabulary)
(50, 50)
"""

import functools
import importlib
import importlib.resources

import numpy as np

from tfp_deepgen import _validation
from tfp_deepgen.datasets._common import fixed_seed, require, split_args, split_indices

__all__ = ["load_word_counts", "split_document_words"]


# Text corpora inside the gensim wheel, under gensim/test/test_data.
_CORPORA = {
    "wikipedia": "head500.noblanks.cor",
    "lee": "lee_background.cor",
}


def _gensim_modules(loader):
    require("gensim", loader)
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
    test_fraction, seed = split_args(test_fraction, seed)
    counts, vocabulary = _corpus_counts(corpus, vocabulary_size)
    train, test = split_indices(len(counts), test_fraction, seed)
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
    rng = np.random.default_rng(fixed_seed(seed))
    counts_int = array.astype(np.int64)
    observed = np.zeros_like(counts_int)
    num_observed = np.rint(observed_fraction * counts_int.sum(axis=1)).astype(np.int64)
    for row, (doc, size) in enumerate(zip(counts_int, num_observed, strict=True)):
        if size > 0:
            observed[row] = rng.multivariate_hypergeometric(doc, size)
    return observed.astype(np.float32), (counts_int - observed).astype(np.float32)
