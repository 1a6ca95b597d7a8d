"""The `--threads` option of the examples that report repeatable numbers."""

import tensorflow as tf

# TensorFlow's thread pools sum in varying order, so two runs with several
# threads differ; one thread makes them repeatable at some cost in speed.
DEFAULT_THREADS = 1


def add_threads_argument(parser):
    """Adds `--threads` (default 1) to an `argparse` parser."""
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="TensorFlow CPU threads (default 1, for repeatable runs; 0: TensorFlow's choice)",
    )


def use_threads(count):
    """Sets TensorFlow's intra- and inter-op thread pools to `count` (0: its choice).

    Call it before TensorFlow runs anything.
    """
    tf.config.threading.set_intra_op_parallelism_threads(count)
    tf.config.threading.set_inter_op_parallelism_threads(count)
