"""The conformance battery every tfp_deepgen layer passes.

A layer joins with one line: a `LayerCase` in the list given to `battery()`
in `tests/test_conformance.py`. The battery checks, for each case:

- build, output shape and `compute_output_shape` (eager and symbolic);
- `get_config` / `from_config` round trip;
- `.keras` save -> `load_model(safe_mode=True)` continuing the same noise;
- `fit` under `jit_compile=True`;
- `model.export()` loading and running in a separate Python process that
  imports only TensorFlow (tfp_deepgen and TFP imports are blocked there;
  see `serving_process.py`);
- seed determinism: same seed, same numbers; successive calls differ;
- gradients reaching every trainable variable;
- `mixed_float16` (trained under XLA) and `mixed_bfloat16` (graph) policies;
- `MirroredStrategy` over two logical CPUs: with `sampling="mean"` the loss
  and the update (KL scaling included) equal one device's on the same global
  batch; when sampling, the replicas draw different noise.
"""

import dataclasses
import functools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from serving_process import run_in_serving_process

BATCH = 4
POLICIES = ("mixed_float16", "mixed_bfloat16")
# float16 (loss scaling) trains under XLA, bfloat16 as a graph: each compiler
# meets reduced precision once, and XLA's compile time is paid once per case.
_JIT = {"mixed_float16": True, "mixed_bfloat16": False}


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration for the battery.

    Args:
        layer_cls: The layer class.
        kwargs: Constructor arguments (a `seed` is added by the battery).
        input_shape: Input shape without the batch dimension.
        id: Test id; defaults to the class name.
        has_kl: Whether the layer is variational (adds a KL, takes
            `kl_weight`, has weights). Without, the battery's model gets a
            `Dense` after the layer so there is something to train, and
            gradients are checked on the inputs.
        served_tolerance: Largest distance allowed between a served (sampled)
            output and the posterior-mean output.
    """

    layer_cls: type
    kwargs: dict
    input_shape: tuple
    id: str = ""
    has_kl: bool = True
    # About 10 stddevs of a served output at the default posterior stddev 0.01
    # (0.01 * sqrt(fan-in 18) * |x| for the conv cases).
    served_tolerance: float = 0.5

    def __str__(self):
        return self.id or self.layer_cls.__name__

    def make(self, **overrides):
        if not self.has_kl:
            overrides.pop("kl_weight", None)
        kwargs = {"seed": 1234, **self.kwargs, **overrides}
        return self.layer_cls(**kwargs)

    def inputs(self, batch=BATCH, seed=0):
        return np.random.RandomState(seed).randn(batch, *self.input_shape).astype("float32")

    def model(self, **overrides):
        layers = [keras.Input(self.input_shape), self.make(**overrides)]
        if not self.has_kl:
            dtype = overrides.get("dtype")
            layers.append(keras.layers.Dense(2, kernel_initializer="ones", dtype=dtype))
        return keras.Sequential(layers)

    def sgd_model(self, batch, kl_weight, **compile_kwargs):
        """A seeded model, `SGD(0.01)` on MSE, and `fit` data: `batch` inputs, zero targets."""
        keras.utils.set_random_seed(0)
        model = self.model(kl_weight=kl_weight)
        model.compile(keras.optimizers.SGD(0.01), loss="mse", **compile_kwargs)
        x = self.inputs(batch=batch)
        return model, (x, np.zeros(model.compute_output_shape(x.shape), "float32"))


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


class KilledAfterEpoch(keras.callbacks.Callback):
    """Raises `RuntimeError("killed")` at the end of epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("killed")


def _serve_in_fresh_process(export_dir, x, tmp_path):
    """Runs the export's `serve` twice on `x` in a process without tfp_deepgen/TFP."""
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    run_in_serving_process("serve_twice", export_dir, tmp_path / "x.npy", out)
    return np.load(out)


def serve_signatures(export_dir, requests, tmp_path):
    """Runs named signatures of an export in a process without tfp_deepgen/TFP.

    Args:
        requests: `{signature: {input name: array}}` (the arrays keep their dtypes).

    Returns:
        `{"signature/output": array}`.
    """
    inputs = {
        f"{signature}/{name}": np.asarray(value)
        for signature, arguments in requests.items()
        for name, value in arguments.items()
    }
    np.savez(tmp_path / "inputs.npz", **inputs)
    out = tmp_path / "served.npz"
    run_in_serving_process("run_signatures", export_dir, tmp_path / "inputs.npz", out)
    return dict(np.load(out))


def battery(cases):
    """Returns a pytest test class running every check on every case."""
    params = pytest.mark.parametrize("case", cases, ids=str)

    @params
    class TestConformance:
        def test_build_and_output_shape(self, case):
            layer = case.make()
            x = case.inputs()
            y = layer(x)
            assert tuple(y.shape) == tuple(layer.compute_output_shape(x.shape))
            symbolic = case.make()(keras.Input(case.input_shape))
            expected = case.make().compute_output_shape((None,) + case.input_shape)
            assert tuple(symbolic.shape) == tuple(expected)

        def test_config_round_trip(self, case):
            layer = case.make(sampling="mean")
            config = layer.get_config()
            json.dumps(config)  # configs must be plain JSON
            clone = case.layer_cls.from_config(config)
            assert clone.get_config() == config
            x = case.inputs()
            layer(x)
            clone(x)
            clone.set_weights(layer.get_weights())
            np.testing.assert_allclose(clone(x), layer(x), rtol=1e-6, atol=1e-6)

        def test_keras_file_round_trip(self, case, tmp_path):
            model = case.model()
            x = case.inputs()
            model(x)  # advance the noise stream: the file must carry its state
            path = str(tmp_path / "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert type(loaded.layers[0]) is case.layer_cls
            np.testing.assert_array_equal(loaded(x), model(x))
            np.testing.assert_array_equal(loaded(x), model(x))

        def test_fit_with_xla(self, case):
            model = case.model(kl_weight=1e-3)
            x = case.inputs(batch=16)
            y = np.random.RandomState(1).randn(*model(x).shape).astype("float32")
            before = [w.numpy().copy() for w in model.trainable_weights]
            model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
            assert np.all(np.isfinite(history.history["loss"]))
            for old, new in zip(before, model.trainable_weights, strict=True):
                assert max_abs_diff(old, new) > 0, f"{new.path} did not train"

        def test_export_runs_without_tfp_deepgen(self, case, tmp_path):
            model = case.model()
            x = case.inputs()
            with _sampling(model, "mean"):
                expected = model(x).numpy()
            export_dir = str(tmp_path / "serving" / "1")
            model.export(export_dir, format="tf_saved_model", verbose=False)
            served = _serve_in_fresh_process(export_dir, x, tmp_path)
            assert served["first"].shape == expected.shape
            assert np.all(np.isfinite(served["first"]))
            # The served model keeps sampling: two requests, two draws ...
            assert max_abs_diff(served["first"], served["second"]) > 0
            # ... around the posterior-mean prediction.
            assert max_abs_diff(served["first"], expected) < case.served_tolerance

        def test_seed_determinism(self, case):
            x = case.inputs()
            a, b, c = case.make(seed=7), case.make(seed=7), case.make(seed=8)
            for layer in (a, b, c):
                layer.build(x.shape)
            b.set_weights(a.get_weights())
            c.set_weights(a.get_weights())
            a1, b1, c1 = a(x), b(x), c(x)
            np.testing.assert_array_equal(a1, b1)
            assert max_abs_diff(a1, c1) > 0, "different seeds gave the same noise"
            a2 = a(x)
            np.testing.assert_array_equal(a2, b(x))
            assert max_abs_diff(a1, a2) > 0, "successive calls reused the noise"

        def test_gradients_reach_every_trainable_variable(self, case):
            layer = case.make(kl_weight=1e-3)
            x = tf.constant(case.inputs())
            layer(x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True)))
                if case.has_kl:
                    loss += tf.add_n(layer.losses)
            if not case.has_kl:
                assert not layer.trainable_variables
                grad = tape.gradient(loss, x).numpy()
                assert np.all(np.isfinite(grad)) and np.any(grad != 0), "no gradient to inputs"
                return
            grads = tape.gradient(loss, layer.trainable_variables)
            assert layer.trainable_variables
            for variable, grad in zip(layer.trainable_variables, grads, strict=True):
                assert grad is not None, f"no gradient reaches {variable.path}"
                grad = tf.convert_to_tensor(grad).numpy()
                assert np.all(np.isfinite(grad)), variable.path
                assert np.any(grad != 0), f"zero gradient for {variable.path}"

        @pytest.mark.parametrize("policy", POLICIES)
        def test_mixed_precision(self, case, policy):
            model = case.model(dtype=policy, kl_weight=1e-3)
            layer = model.layers[0]
            x = case.inputs(batch=8)
            y = model(x)
            assert y.dtype == layer.compute_dtype == policy.split("_")[1]
            assert all(w.dtype == "float32" for w in layer.weights)
            if case.has_kl:
                assert layer.last_kl.dtype == tf.float32
                assert np.isfinite(float(layer.last_kl))
            model.compile(keras.optimizers.Adam(1e-3), "mse", jit_compile=_JIT[policy])
            target = np.zeros(y.shape, "float32")
            history = model.fit(x, target, batch_size=4, epochs=1, verbose=0)
            assert np.all(np.isfinite(history.history["loss"]))

        def test_mirrored_strategy_matches_single_device(self, case):
            x = case.inputs(batch=8)
            single = case.model(sampling="mean", kl_weight=0.05)
            # Shape from compute_output_shape: a call would advance the seed.
            y_shape = single.compute_output_shape(x.shape)
            y = np.random.RandomState(2).randn(*y_shape).astype("float32")
            strategy = two_cpu_strategy()
            with strategy.scope():
                mirrored = case.model(sampling="mean", kl_weight=0.05)
            mirrored.set_weights(single.get_weights())
            # XLA cannot compile for two logical devices of one CPU (TF's
            # "variable on a different device" limitation); the XLA path is
            # covered by test_fit_with_xla.
            for model in (single, mirrored):
                model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
            loss_single = single.evaluate(x, y, batch_size=8, verbose=0)
            loss_mirrored = mirrored.evaluate(x, y, batch_size=8, verbose=0)
            np.testing.assert_allclose(loss_mirrored, loss_single, rtol=1e-5)
            single.fit(x, y, batch_size=8, epochs=1, verbose=0)
            mirrored.fit(x, y, batch_size=8, epochs=1, verbose=0)
            for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

        def test_mirrored_replicas_draw_different_noise(self, case):
            strategy = two_cpu_strategy()
            with strategy.scope():
                layer = case.make()
                layer.build((None,) + case.input_shape)
            x = tf.constant(case.inputs())

            @tf.function
            def forward(inputs):
                return layer(inputs)

            first, second = strategy.experimental_local_results(strategy.run(forward, (x,)))
            assert max_abs_diff(first, second) > 0, "replicas drew identical noise"

    return TestConformance


@functools.cache
def two_cpu_strategy():
    # One strategy per process: TF's collective ops key their instances per
    # strategy, and a second MirroredStrategy can collide with the first.
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "tests/conftest.py must create two logical CPUs"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def _sampling(model, mode):
    from tfp_deepgen.layers import sampling_mode

    return sampling_mode(model, mode)


@dataclasses.dataclass(frozen=True)
class HeadCase:
    """One head configuration for the head battery.

    Args:
        head_cls: The head class.
        kwargs: Constructor arguments.
        labels: `labels(rng, batch)` returns labels in the head's support.
        id: Test id; defaults to the class name.
    """

    head_cls: type
    kwargs: dict
    labels: object
    id: str = ""
    num_features: int = 3

    def __str__(self):
        return self.id or self.head_cls.__name__

    def make(self, **overrides):
        return self.head_cls(**{**self.kwargs, **overrides})

    def model(self, dtype=None):
        head = self.make()
        return keras.Sequential(
            [
                keras.Input((self.num_features,)),
                keras.layers.Dense(head.input_size, dtype=dtype, kernel_initializer="zeros"),
                head,
            ]
        )

    def data(self, batch=BATCH, seed=0):
        rng = np.random.RandomState(seed)
        x = rng.randn(batch, self.num_features).astype("float32")
        return x, self.labels(rng, batch)


def head_battery(cases):
    """Returns a pytest test class running the head checks on every case."""

    @pytest.mark.parametrize("case", cases, ids=str)
    class TestHeadConformance:
        def test_output_shape_and_dtype(self, case):
            model = case.model()
            head = model.layers[-1]
            x, _ = case.data()
            y = model(x)
            assert y.dtype == "float32"
            assert tuple(y.shape) == (BATCH, head.output_size)
            assert tuple(head.compute_output_shape((None, head.input_size))) == (
                None,
                head.output_size,
            )
            assert head.distribution(y).batch_shape == (BATCH,)

        def test_config_round_trip(self, case):
            head = case.make()
            config = head.get_config()
            json.dumps(config)
            clone = case.head_cls.from_config(config)
            assert clone.get_config() == config
            loss_config = head.loss.get_config()
            json.dumps(loss_config)
            assert type(head.loss).from_config(loss_config).get_config() == loss_config

        def test_keras_file_round_trip_with_compiled_loss(self, case, tmp_path):
            model = case.model()
            model.compile("sgd", loss=model.layers[-1].loss)
            x, y = case.data()
            model.layers[0].set_weights(
                [np.full_like(w, 0.1) for w in model.layers[0].get_weights()]
            )
            path = str(tmp_path / "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert type(loaded.layers[-1]) is case.head_cls
            np.testing.assert_array_equal(loaded(x), model(x))
            np.testing.assert_allclose(
                loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6
            )

        def test_fit_with_xla_trains_every_variable(self, case):
            model = case.model()
            x, y = case.data(batch=16)
            model.compile(keras.optimizers.Adam(1e-2), model.layers[-1].loss, jit_compile=True)
            before = [w.numpy().copy() for w in model.trainable_weights]
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
            assert np.all(np.isfinite(history.history["loss"]))
            for old, new in zip(before, model.trainable_weights, strict=True):
                assert max_abs_diff(old, new) > 0, f"{new.path} did not train"

        def test_export_runs_without_tfp_deepgen(self, case, tmp_path):
            model = case.model()
            model.layers[0].set_weights(
                [np.full_like(w, 0.1) for w in model.layers[0].get_weights()]
            )
            x, _ = case.data()
            export_dir = str(tmp_path / "serving" / "1")
            model.export(export_dir, format="tf_saved_model", verbose=False)
            served = _serve_in_fresh_process(export_dir, x, tmp_path)
            np.testing.assert_allclose(served["first"], model(x), rtol=1e-6)

        @pytest.mark.parametrize("policy", POLICIES)
        def test_mixed_precision(self, case, policy):
            model = case.model(dtype=policy)
            x, y = case.data(batch=8)
            assert model(x).dtype == "float32"
            model.compile(
                keras.optimizers.Adam(1e-3), model.layers[-1].loss, jit_compile=_JIT[policy]
            )
            history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
            assert np.all(np.isfinite(history.history["loss"]))

        def test_mirrored_strategy_matches_single_device(self, case):
            x, y = case.data(batch=8)
            single = case.model()
            with two_cpu_strategy().scope():
                mirrored = case.model()
            weights = [
                np.random.RandomState(3).uniform(-0.3, 0.3, w.shape).astype("float32")
                for w in single.get_weights()
            ]
            single.set_weights(weights)
            mirrored.set_weights(weights)
            for model in (single, mirrored):
                model.compile(keras.optimizers.SGD(0.1), model.layers[-1].loss)
            np.testing.assert_allclose(
                mirrored.evaluate(x, y, batch_size=8, verbose=0),
                single.evaluate(x, y, batch_size=8, verbose=0),
                rtol=1e-5,
            )
            single.fit(x, y, batch_size=8, epochs=1, verbose=0)
            mirrored.fit(x, y, batch_size=8, epochs=1, verbose=0)
            for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    return TestHeadConformance
