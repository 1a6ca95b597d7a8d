"""The conformance battery every tfp_deepgen `keras.Model` passes.

A model joins with one line: a `ModelCase` in the list given to
`model_battery()` in `tests/test_model_conformance.py`. The battery checks,
for each case:

- build and `fit` under `jit_compile=True`: finite logs, every trainable
  variable moving;
- `get_config` / `from_config` round trip (plain JSON, same config back);
- `.keras` save -> `load_model(safe_mode=True)`: the same variables (seed
  state included), the same `evaluate` losses, and training continues;
- `tdg.export.export_saved_model`: every signature runs in a separate Python
  process that imports only TensorFlow (see `serving_process.py`), with the
  outputs `tdg.export.signature_outputs` names, finite; deterministic
  signatures equal the in-process answers;
- `MirroredStrategy` over two logical CPUs: with the latent draws at their
  means, the losses and two epochs of updates equal one device's on the same
  global batch; when sampling, the replicas draw different latents;
- `keras.callbacks.BackupAndRestore`: training killed after an epoch and
  resumed in a new model ends on exactly the variables (seed state included)
  and optimizer state of an uninterrupted run.

One model per case, trained under XLA, is shared by the XLA, `.keras` and
export checks, so each case compiles its XLA step once.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conformance import KilledAfterEpoch, max_abs_diff, serve_signatures, two_cpu_strategy

import tfp_deepgen as tdg

BATCH = 8
NUM_EXAMPLES = 16
CHECKS = (
    "config",
    "mirrored_strategy",
    "mirrored_replicas",
    "backup_and_restore",
    "fit_with_xla",
    "keras_file",
    "export",
)


def _adam(model, jit_compile):
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)


def compile_with_sgd(learning_rate):
    """A `compile(model, jit_compile)` function with plain SGD at `learning_rate`."""

    def compile_model(model, jit_compile):
        model.compile(keras.optimizers.SGD(learning_rate), jit_compile=jit_compile)

    return compile_model


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """One model configuration for the model battery.

    Args:
        make: `make()` returns a new, uncompiled model; the battery seeds
            Keras first, so two calls give the same initial weights.
        data: `data()` returns the positional arguments of `fit` and
            `evaluate` (`(x,)` or `(x, labels)`), `NUM_EXAMPLES` examples.
        draw: `draw(model)` returns one random draw of the model's latent
            sampler (for the replicas check).
        id: Test id (the model's class name, by convention); defaults to the
            name of `make`.
        compile: `compile(model, jit_compile)` with an Adam optimizer.
        compile_sgd: `compile(model, jit_compile)` with plain SGD, for the
            exact mirrored-strategy comparison.
        mirrored_rtol: Relative tolerance of the mirrored weights.
        xfail: `{check name (one of CHECKS): reason}` for checks a model does
            not pass; each is a strict xfail, which fails once the model passes.
    """

    make: object
    data: object
    draw: object
    id: str = ""
    compile: object = _adam
    compile_sgd: object = compile_with_sgd(0.1)
    mirrored_rtol: float = 1e-5
    xfail: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.xfail) - set(CHECKS)
        assert not unknown, f"xfail names unknown checks {unknown}; checks: {CHECKS}"

    def __str__(self):
        # Called at collection for the test ids: no model is built here.
        return self.id or self.make.__name__

    def new(self):
        keras.utils.set_random_seed(0)
        return self.make()

    def build(self, model):
        """Builds `model` by calling it on the data, as Keras does."""
        if not model.built:
            data = self.data()
            model(data[0] if len(data) == 1 else data)
        return model

    def expect(self, check, request):
        """Marks the running check a strict xfail if this case lists it."""
        if check in self.xfail:
            request.applymarker(pytest.mark.xfail(reason=self.xfail[check], strict=True))


def _state(model):
    """Every variable of the model (seed generators and metrics included), in order.

    Paths differ between two instances (Keras numbers its layers' names), so
    the values are compared position by position.
    """
    return [(v.path, v.numpy()) for v in model.variables]


def _optimizer_state(model):
    optimizers = [
        getattr(model, name, None)
        for name in ("optimizer", "generator_optimizer", "discriminator_optimizer")
    ]
    return [
        (v.path, v.numpy())
        for optimizer in optimizers
        if optimizer is not None
        for v in optimizer.variables
    ]


def _assert_same_state(expected, actual):
    assert len(actual) == len(expected), ([p for p, _ in expected], [p for p, _ in actual])
    for (path, a), (_, b) in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(b, a, err_msg=path)


def _requests(model, data):
    """Inputs for every export signature, made from the signatures' specs."""
    x = np.asarray(data[0])[:4]
    num_classes = getattr(model, "num_classes", None) or 2
    requests = {}
    for name, (_, specs, _) in model.serving_endpoints(8).items():
        arguments = {}
        for spec in specs:
            if spec.shape.rank == 0:
                value = np.int32(3)
            elif spec.name == "labels" and spec.dtype.is_integer:
                value = (np.arange(4) % num_classes).astype(spec.dtype.as_numpy_dtype)
            elif tuple(spec.shape[1:]) == x.shape[1:]:
                value = x.astype(spec.dtype.as_numpy_dtype)
            else:
                shape = (4, *spec.shape[1:])
                value = np.random.RandomState(0).randn(*shape).astype(spec.dtype.as_numpy_dtype)
            arguments[spec.name] = value
        requests[name] = arguments
    return requests


def model_battery(cases):
    """Returns a pytest test class running every check on every case."""

    @pytest.fixture(scope="module", params=cases, ids=str)
    def trained(request):
        """`(case, model, before, history)`: one model per case, shared by the checks.

        Fitted twice for an epoch under XLA; `before` holds its trainable
        weights between the two fits and `history` the second fit's.
        """
        case = request.param
        model = case.new()
        case.compile(model, jit_compile=True)
        model.fit(*case.data(), batch_size=BATCH, epochs=1, verbose=0)
        before = [w.numpy().copy() for w in model.trainable_weights]
        history = model.fit(*case.data(), batch_size=BATCH, epochs=1, verbose=0)
        return case, model, before, history.history

    @pytest.mark.parametrize("case", cases, ids=str)
    class TestModelConformance:
        def test_config_round_trip(self, case, request):
            case.expect("config", request)
            model = case.new()
            config = model.get_config()
            given = json.dumps(config)  # configs must be plain JSON
            clone = type(model).from_config(config)
            assert type(clone) is type(model)
            assert json.dumps(config) == given, "from_config changed the config it was given"
            assert clone.get_config() == model.get_config()

        def test_mirrored_strategy_matches_single_device(self, case, request):
            case.expect("mirrored_strategy", request)
            data = case.data()
            single = case.new()
            with two_cpu_strategy().scope():
                mirrored = case.new()
            logs = {}
            case.build(single)
            with two_cpu_strategy().scope():
                case.build(mirrored)
            mirrored.set_weights(single.get_weights())
            for model in (single, mirrored):
                # XLA cannot compile for two logical devices of one CPU.
                case.compile_sgd(model, jit_compile=False)
            for name, model in (("single", single), ("mirrored", mirrored)):
                # Latents at their means: both runs see the same numbers, so
                # any difference is the loss scaling across the replicas.
                with tdg.layers.sampling_mode(model, "mean"):
                    logs[name] = model.evaluate(
                        *data, batch_size=NUM_EXAMPLES, verbose=0, return_dict=True
                    )
                    model.fit(*data, batch_size=NUM_EXAMPLES, epochs=2, verbose=0)
            assert logs["single"].keys() == logs["mirrored"].keys()
            for key, value in logs["single"].items():
                np.testing.assert_allclose(logs["mirrored"][key], value, rtol=1e-5, err_msg=key)
            for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
                np.testing.assert_allclose(b, a, rtol=case.mirrored_rtol, atol=1e-6)

        def test_mirrored_replicas_draw_different_latents(self, case, request):
            case.expect("mirrored_replicas", request)
            strategy = two_cpu_strategy()
            with strategy.scope():
                model = case.new()

            @tf.function
            def draw():
                return strategy.run(lambda: case.draw(model))

            first, second = strategy.experimental_local_results(draw())
            assert max_abs_diff(first, second) > 0, "replicas drew identical latents"

        def test_backup_and_restore_resumes_exactly(self, case, request, tmp_path):
            case.expect("backup_and_restore", request)
            data = case.data()
            settings = {"batch_size": BATCH, "epochs": 2, "shuffle": False, "verbose": 0}

            def fresh():
                model = case.new()
                case.compile(model, jit_compile=False)
                return model

            uninterrupted = fresh()
            uninterrupted.fit(*data, **settings)
            interrupted = fresh()
            backup = keras.callbacks.BackupAndRestore(str(tmp_path))
            with pytest.raises(RuntimeError, match="killed"):
                interrupted.fit(*data, callbacks=[backup, KilledAfterEpoch(0)], **settings)
            resumed = fresh()  # a new process would start from scratch like this
            backup = keras.callbacks.BackupAndRestore(str(tmp_path))
            history = resumed.fit(*data, callbacks=[backup], **settings)
            assert len(history.history["loss"]) == 1  # the second epoch only
            # The weights, the optimizer's state and the seed streams all came back.
            _assert_same_state(_state(uninterrupted), _state(resumed))
            _assert_same_state(_optimizer_state(uninterrupted), _optimizer_state(resumed))

    class TestTrainedModelConformance:
        def test_build_and_fit_with_xla(self, trained, request):
            case, model, before, history = trained
            case.expect("fit_with_xla", request)
            assert model.built and model.trainable_weights
            for values in history.values():
                assert np.all(np.isfinite(values)), history
            for old, new in zip(before, model.trainable_weights, strict=True):
                assert max_abs_diff(old, new) > 0, f"{new.path} did not train"

        def test_keras_file_round_trip(self, trained, request, tmp_path):
            case, model, _, _ = trained
            case.expect("keras_file", request)
            data = case.data()
            path = tmp_path / "model.keras"
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert type(loaded) is type(model)
            # The seed state is saved too: the loaded model continues the same draws.
            _assert_same_state(_state(model), _state(loaded))
            # XLA is checked above; spare two compilations. `model` is shared by
            # the case's other checks, so it gets its XLA setting back after.
            shared_setting = model.jit_compile, model.test_function
            model.jit_compile = loaded.jit_compile = False
            try:
                expected = model.evaluate(*data, batch_size=BATCH, verbose=0, return_dict=True)
            finally:
                model.jit_compile, model.test_function = shared_setting
            logs = loaded.evaluate(*data, batch_size=BATCH, verbose=0, return_dict=True)
            assert logs.keys() == expected.keys()
            for key, value in expected.items():
                np.testing.assert_allclose(logs[key], value, rtol=1e-6, err_msg=key)
            history = loaded.fit(*data, batch_size=BATCH, epochs=1, verbose=0)  # training resumes
            assert np.all(np.isfinite(history.history["loss"]))

        def test_export_runs_without_tfp_deepgen(self, trained, request, tmp_path):
            case, model, _, _ = trained
            case.expect("export", request)
            export_dir = tdg.export.export_saved_model(model, tmp_path / "export", num_samples=8)
            requests = _requests(model, case.data())
            served = serve_signatures(export_dir, requests, tmp_path)
            outputs = tdg.export.signature_outputs(model)
            assert set(requests) == set(outputs)
            endpoints = model.serving_endpoints(8)
            for name, names in outputs.items():
                arguments = [tf.constant(v) for v in requests[name].values()]
                first = endpoints[name][0](*arguments)
                second = endpoints[name][0](*arguments)
                for output in names:
                    value = served[f"{name}/{output}"]
                    assert np.all(np.isfinite(value)), f"{name}/{output}"
                    assert value.shape == tuple(first[output].shape), f"{name}/{output}"
                    if max_abs_diff(first[output], second[output]) == 0:  # deterministic
                        np.testing.assert_allclose(
                            value, first[output], rtol=1e-5, atol=1e-6, err_msg=f"{name}/{output}"
                        )

    return TestModelConformance, TestTrainedModelConformance, trained
