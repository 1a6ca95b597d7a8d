"""The battery every weight posterior of `tdg.inference` passes.

A posterior joins with one line: a `PosteriorCase` in `tests/test_posterior_conformance.py`.
For each case the battery checks:

- the Monte-Carlo predictive (`tdg.predictive.predict`) runs, in a graph and
  under `jit_compile=True`, with the shapes of the model's head, and the
  mean-weights call equals the wrapped model's output;
- draws are seeded: the same seed state gives the same predictive, and
  successive calls of a random posterior differ;
- `.keras` save -> `load_model(safe_mode=True)` gives back the same
  posterior (the same predictive from the same seed state);
- `tdg.export.export_saved_model` runs in a separate process importing only
  TensorFlow and serves the same numbers as the posterior in-process.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import max_abs_diff, serve_signatures

import tfp_deepgen as tdg

NUM_SAMPLES = 6


@dataclasses.dataclass(frozen=True)
class PosteriorCase:
    """One posterior for the battery.

    Attributes:
        make: `make(x, y) -> WeightPosterior`, from training data it may use.
        data: `data() -> (x, y)`: training inputs and targets (also the inputs
            the checks predict on).
        id: The case's name in test ids.
        random: Whether draws are random (False for a cycled sample set).
    """

    make: object
    data: object
    id: str
    random: bool = True

    def __str__(self):
        return self.id


def regression_data(num_inputs=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, num_inputs)).astype("float32")
    y = (x @ rng.normal(size=(num_inputs, 1)) + 0.1 * rng.normal(size=(size, 1))).astype("float32")
    return x, y


def classification_data(num_inputs=3, num_classes=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, num_inputs)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(num_inputs, num_classes)), -1).astype("int32")
    return x, y


def mlp(head, num_inputs=3, hidden=8, seed=0):
    """A small trained-shaped MLP ending in `head` (fitted for a few epochs by callers)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(head.input_size),
            head,
        ]
    )


def _predict(posterior, x, jit_compile=False):
    return tdg.predictive.predict(
        posterior, x, num_samples=NUM_SAMPLES, seed=0, jit_compile=jit_compile
    )


def battery(cases):
    """Returns a pytest test class running every check on every case."""
    params = pytest.mark.parametrize("case", cases, ids=str)

    @params
    class TestPosteriorConformance:
        @pytest.fixture
        def built(self, case):
            x, y = case.data()
            return case.make(x, y), x

        def test_predictive_graph_and_xla(self, case, built):
            posterior, x = built
            assert isinstance(posterior, tdg.inference.WeightPosterior)
            state = posterior.draws.seed_generator.state.numpy()
            graph = _predict(posterior, x)
            posterior.draws.seed_generator.state.assign(state)
            xla = _predict(posterior, x, jit_compile=True)
            assert graph.keys() == xla.keys()
            for key in graph:
                assert graph[key].shape[0] == len(x)
                assert np.all(np.isfinite(graph[key])) and np.all(np.isfinite(xla[key]))
            # XLA draws other numbers from a seed; a cycled set has none to draw.
            if not case.random:
                key = "probabilities" if "probabilities" in graph else "mean"
                assert max_abs_diff(graph[key], xla[key]) < 1e-4
            with tdg.layers.sampling_mode(posterior, "mean"):
                means = posterior(x)
            assert max_abs_diff(means, posterior.model(x)) < 1e-6

        def test_seeded_draws(self, case, built):
            posterior, x = built
            state = posterior.draws.seed_generator.state.numpy()
            first = _predict(posterior, x)
            second = _predict(posterior, x)
            posterior.draws.seed_generator.state.assign(state)
            again = _predict(posterior, x)
            key = "probabilities" if "probabilities" in first else "mean"
            assert max_abs_diff(first[key], again[key]) == 0.0
            if case.random:
                assert max_abs_diff(first[key], second[key]) > 0.0

        def test_keras_file_round_trip(self, case, built, tmp_path):
            posterior, x = built
            path = tmp_path / "posterior.keras"
            posterior.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert type(loaded) is type(posterior)
            assert len(loaded.weights) == len(posterior.weights)
            for a, b in zip(loaded.weights, posterior.weights, strict=True):
                assert max_abs_diff(a, b) == 0.0
            # Both continue the seed stream the file recorded.
            state = posterior.draws.seed_generator.state.numpy()
            loaded.draws.seed_generator.state.assign(state)
            classifier = tdg.heads.final_head(posterior).kind == "classifier"
            key = "probabilities" if classifier else "mean"
            assert max_abs_diff(_predict(posterior, x)[key], _predict(loaded, x)[key]) < 1e-5

        def test_export_served_without_tfp_deepgen(self, case, built, tmp_path):
            posterior, x = built
            state = posterior.draws.seed_generator.state.numpy()
            export_dir = tdg.export.export_saved_model(
                posterior, tmp_path / "export", num_samples=NUM_SAMPLES
            )
            posterior.draws.seed_generator.state.assign(state)
            predictive = tdg.predictive.MonteCarloPredictive(posterior, num_samples=NUM_SAMPLES)
            name = tdg.export.signature_outputs(posterior)["serving_default"][0]
            expected = predictive(tf.constant(x), outputs=[name])[name].numpy()
            input_name = posterior.model.inputs[0].name.split(":")[0]
            served = serve_signatures(export_dir, {"serving_default": {input_name: x}}, tmp_path)
            assert max_abs_diff(served[f"serving_default/{name}"], expected) < 1e-4

    return TestPosteriorConformance
