"""The examples' command lines: `--help` works and documents every option, `--quick` exists.

Runs no training: each script is loaded without its `__main__` block, and its
`build_parser()` answers `--help`, the way `python examples/X.py --help` does
(one process for all of them, so TensorFlow is imported once).
"""

import pathlib
import runpy

import keras
import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(
    path
    for path in [*EXAMPLES.glob("*.py"), *EXAMPLES.glob("tfp_layers/*.py")]
    if not path.name.startswith("_")
)


def _relative(script):
    return script.relative_to(EXAMPLES).as_posix()


def test_every_example_is_listed_in_the_readme():
    readme = (EXAMPLES / "README.md").read_text()
    assert len(SCRIPTS) >= 9
    for script in SCRIPTS:
        assert f"examples/{_relative(script)}" in readme, script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: _relative(path)[:-3])
def test_help_documents_every_option(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the scripts import _cli, _figures, ...
    namespace = runpy.run_path(str(script))  # as a module: its __main__ block does not run
    parser = namespace["build_parser"]()
    undocumented = [
        action.option_strings
        for action in parser._actions  # argparse has no public list of its options
        if action.dest != "help" and not action.help
    ]
    assert not undocumented
    # The description starts with the module docstring's summary line.
    assert parser.description.split("\n")[0] == namespace["__doc__"].split("\n")[0]
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"python examples/{_relative(script)}" in text
    assert "--quick" in text


def test_quick_runs_export_apart_from_the_served_models(monkeypatch, tmp_path):
    """A --quick run's barely trained model never replaces `savedmodels/<name>`."""
    cli = runpy.run_path(str(EXAMPLES / "_cli.py"))
    savedmodels = EXAMPLES.parent / "savedmodels"
    assert cli["export_base"]("quickstart", quick=False) == savedmodels / "quickstart"
    quick = cli["export_base"]("quickstart", quick=True)
    assert quick.is_relative_to(cli["QUICK_OUTPUT"]) and not quick.is_relative_to(savedmodels)
    # `export` writes where `export_base` says: checked with both folders moved
    # under tmp_path (so nothing in the repository is replaced) and no real export.
    helpers = cli["export"].__globals__
    monkeypatch.setitem(helpers, "SAVEDMODELS", tmp_path / "savedmodels")
    monkeypatch.setitem(helpers, "QUICK_OUTPUT", tmp_path / "quick")
    exported = []
    monkeypatch.setattr(
        helpers["tdg"].export, "export_saved_model", lambda model, base, **_: exported.append(base)
    )
    cli["export"](None, "quickstart", quick=True)
    cli["export"](None, "quickstart", quick=False)
    assert exported == [
        tmp_path / "quick" / "savedmodels" / "quickstart",
        tmp_path / "savedmodels" / "quickstart",
    ]


@pytest.mark.parametrize("interactive", [False, True], ids=["lines", "bar"])
def test_epoch_progress(interactive, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    progress = runpy.run_path(str(EXAMPLES / "_cli.py"))["EpochProgress"](every=2)
    progress.interactive = interactive  # the bar on a terminal, else a line every 2 epochs
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((4, 1), "float32")
    model.fit(x, x, epochs=5, verbose=0, callbacks=[progress])
    text = capsys.readouterr().out
    if interactive:
        assert "5/5" in text and "loss" in text
    else:
        assert [line.split(":")[0].strip() for line in text.splitlines()] == [
            "epoch 2/5",
            "epoch 4/5",
            "epoch 5/5",
        ]
