"""What every example shares: its `--help`, `--quick`, where it writes, a progress line."""

import argparse
import shutil
import sys
from pathlib import Path

import keras

import tfp_deepgen as tdg

REPO = Path(__file__).resolve().parents[1]
SAVEDMODELS = REPO / "savedmodels"
OUTPUT = REPO / "examples" / "output"
# A --quick run writes here, never over a full run's figures or TF Serving exports.
QUICK_OUTPUT = OUTPUT / "quick"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's line breaks; appends an option's default unless its help says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def build_parser(module_doc, script):
    """An `argparse` parser whose `--help` shows the example's docstring summary.

    The description is the docstring's first two paragraphs (what the example
    does); the rest of the docstring (data, settings, measured results) stays
    in the file, which the help's last line names.
    """
    paragraphs = module_doc.strip().split("\n\n")
    name = Path(script).name
    return argparse.ArgumentParser(
        prog=f"python examples/{name}",
        description="\n\n".join(paragraphs[:2]),
        epilog=f"Details and measured results: the docstring of examples/{name}.\n"
        "All examples: examples/README.md.",
        formatter_class=_HelpFormatter,
    )


def add_quick_argument(parser, what):
    """Adds `--quick`: `what` describes the shortened run."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test of the whole script in seconds to a minute: {what}. Figures and "
        f"exports go to {QUICK_OUTPUT.relative_to(REPO)}/, not over a full run's",
    )


def add_seed_argument(parser):
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data split and the models (default: 0)"
    )


def output_dir(quick):
    """The folder for figures: `examples/output`, or `examples/output/quick` for --quick."""
    folder = QUICK_OUTPUT if quick else OUTPUT
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_base(name, quick):
    """`savedmodels/<name>`, TF Serving's layout, or its copy under the quick folder."""
    return (QUICK_OUTPUT / "savedmodels" if quick else SAVEDMODELS) / name


def export(model, name, quick, **export_kwargs):
    """Exports `model` for TF Serving as version 1 of `name`, replacing an old export whole.

    A --quick run's model is barely trained: it goes to the quick folder, so
    the served `savedmodels/<name>/1` of a full run stays as it is.
    """
    base = export_base(name, quick)
    # TF Serving loads `<model name>/<integer version>`.
    shutil.rmtree(base / "1", ignore_errors=True)
    return tdg.export.export_saved_model(model, base, version=1, **export_kwargs)


def parse_args(parser, argv=None):
    """`parser.parse_args(argv)`, announcing where a --quick run writes."""
    args = parser.parse_args(argv)
    if args.quick:
        print(
            f"--quick: a short smoke-test run; figures and exports go to {QUICK_OUTPUT}, "
            "the results are not meaningful.\n"
        )
    return args


class EpochProgress(keras.callbacks.Callback):
    """One progress bar over the epochs on a terminal; one line every `every` epochs otherwise.

    Use it with `fit(..., verbose=0)`: Keras's own `verbose=1` prints a bar
    and a line per epoch, hundreds of lines for these small data sets.
    """

    def __init__(self, every=50):
        super().__init__()
        self.every = every
        self.interactive = sys.stdout.isatty()

    def on_train_begin(self, logs=None):
        self.epochs = self.params["epochs"]
        self.bar = None
        self.last_epoch, self.last_logs = 0, {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.last_epoch = epoch + 1
        if self.interactive:
            if self.bar is None:
                # Stateful: the bar shows each epoch's values, not their running average.
                self.bar = keras.utils.Progbar(
                    self.epochs, stateful_metrics=list(logs), unit_name="epoch"
                )
            self.bar.update(epoch + 1, list(logs.items()))
        elif (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            self._print_line(epoch + 1, logs)
        self.last_logs = logs

    def on_train_end(self, logs=None):
        if self.last_epoch == self.epochs:
            return
        # Early stopping ended the run between two reports.
        if self.bar is not None:
            print(flush=True)  # ends the bar's line
        elif self.last_epoch % self.every:
            self._print_line(self.last_epoch, self.last_logs)

    def _print_line(self, epoch, logs):
        text = ", ".join(f"{key} {value:.4f}" for key, value in logs.items())
        print(f"  epoch {epoch}/{self.epochs}: {text}", flush=True)
