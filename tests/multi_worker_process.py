"""One worker of a loopback `MultiWorkerMirroredStrategy` cluster, for the tests.

`tests/test_multi_worker.py` starts one process per worker:

    python tests/multi_worker_process.py SCENARIO OUT_DIR

with `TF_CONFIG` naming the cluster (127.0.0.1 ports) and this worker's index.
Every scenario writes `OUT_DIR/<name>-<index>.npz` for the test to compare.

Scenarios:
- `fit`: each model of `MODELS` (a Bayesian MLP and every model of the model
  battery, `tests/test_model_conformance.py`) trains with plain `fit()` in
  `sampling_mode("mean")`, recording its initial weights, the `evaluate` logs,
  the per-step losses and the weights after every step; each worker records
  a layer's sampling noise, which must differ between workers; then every
  case of the layer conformance battery (`tests/test_conformance.py`) trains
  two steps with plain `fit()`, noise on, recording the weights before and after.
- `unpatched`: the same `fit()` on Keras's own trainer code
  (`tdg.distribute.restore_keras_trainer()`); writes whether it failed.
- `resume`: a Bayesian MLP trains for 3 epochs under
  `keras.callbacks.BackupAndRestore` (a backup at each epoch's end), its
  sampling noise on, with `tdg.inference.SWAG` collecting every epoch and
  `tdg.inference.CollectSamples` keeping the weights after every step. With
  `KILL_AT=epoch,step` in the environment, worker 1 kills itself
  (`os._exit(17)`) at that step, mid-epoch; the test then restarts the
  cluster on the same backup directory.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from model_conformance import ModelCase  # noqa: E402
from test_model_conformance import CASES as MODEL_CASES  # noqa: E402

import tfp_deepgen as tdg  # noqa: E402

NUM_EXAMPLES, DATA_DIM = 16, 6
GLOBAL_BATCH = 8
EPOCHS = 2


def bayesian_mlp():
    kl_weight = 1.0 / NUM_EXAMPLES
    return keras.Sequential(
        [
            keras.Input((DATA_DIM,)),
            tdg.layers.DenseFlipout(8, activation="tanh", kl_weight=kl_weight),
            tdg.layers.DenseReparameterization(2, kl_weight=kl_weight),
            tdg.heads.IndependentNormal(1),
        ]
    )


def regression_data(num_examples=NUM_EXAMPLES, seed=0):
    """`num_examples` inputs and targets of a random linear teacher."""
    rng = np.random.RandomState(seed)
    x = rng.randn(num_examples, DATA_DIM).astype("float32")
    return x, (x @ rng.randn(DATA_DIM, 1)).astype("float32")


def compile_with_nll(model, jit_compile):
    """SGD on the head's negative log-likelihood (the layers add their KL terms)."""
    model.compile(keras.optimizers.SGD(0.1), loss=model.layers[-1].loss, jit_compile=jit_compile)


BAYESIAN_MLP = ModelCase(
    bayesian_mlp, regression_data, draw=None, id="BayesianMLP", compile_sgd=compile_with_nll
)
# The Bayesian MLP, then every model of the model battery (VAE, its conditional
# and semi-supervised relatives, the deep exponential family, the GAN).
MODELS = {str(case): case for case in [BAYESIAN_MLP, *MODEL_CASES]}


class RecordSteps(keras.callbacks.Callback):
    """The loss and every weight after each training step."""

    def __init__(self):
        super().__init__()
        self.losses, self.weights = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        self.weights.append([w.copy() for w in self.model.get_weights()])


def new_model(name):
    """The model, built and compiled with SGD: call it in the strategy's scope.

    Compiling in the scope matters: the loss tracker `compile` creates must be
    a distributed variable for the logs to cover every worker's examples.
    """
    case = MODELS[name]
    model = case.build(case.new())
    case.compile_sgd(model, jit_compile=False)
    return model


def train(model, name):
    """`evaluate` then `fit` in `sampling_mode("mean")`; returns the records."""
    data = MODELS[name].data()
    steps = RecordSteps()
    initial = [w.copy() for w in model.get_weights()]
    with tdg.layers.sampling_mode(model, "mean"):
        logs = model.evaluate(*data, batch_size=GLOBAL_BATCH, verbose=0, return_dict=True)
        model.fit(
            *data,
            batch_size=GLOBAL_BATCH,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[steps],
        )
    record = {f"initial/{i}": w for i, w in enumerate(initial)}
    record.update({"evaluate/" + key: np.float64(value) for key, value in logs.items()})
    record["losses"] = np.array(steps.losses)
    for step, weights in enumerate(steps.weights):
        record.update({f"step{step}/{i}": w for i, w in enumerate(weights)})
    return record


def noise(strategy):
    """One flipout layer's output in sampling mode, on this worker's replica."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        layer = tdg.layers.DenseFlipout(4)
        layer.build((None, 3))

    @tf.function
    def forward():
        return strategy.run(lambda: layer(tf.ones((2, 3)), training=True))

    return strategy.experimental_local_results(forward())[0].numpy()


def run_fit(strategy, out):
    for name in MODELS:
        with strategy.scope():
            model = new_model(name)
        np.savez(out % name, **train(model, name))
    np.savez(out % "noise", noise=noise(strategy))
    train_layers(strategy, out)


def train_layers(strategy, out):
    # Imported here: the layer battery creates variables when imported, and
    # TensorFlow must not run before the strategy is created.
    from test_conformance import ALL_CASES

    record = {}
    for case in ALL_CASES:
        with strategy.scope():
            model, (x, y) = case.sgd_model(GLOBAL_BATCH, 1.0 / GLOBAL_BATCH)
        record.update({f"initial/{case}/{i}": w for i, w in enumerate(model.get_weights())})
        model.fit(x, y, batch_size=GLOBAL_BATCH // 2, epochs=1, shuffle=False, verbose=0)
        record.update({f"trained/{case}/{i}": w for i, w in enumerate(model.get_weights())})
    np.savez(out % "layers", **record)


def run_unpatched(strategy, out):
    tdg.distribute.restore_keras_trainer()
    with strategy.scope():
        model = new_model("BayesianMLP")
    try:
        train(model, "BayesianMLP")
        error = ""
    except Exception as e:  # noqa: BLE001 - the test reads what Keras raised
        error = f"{type(e).__name__}: {e}"[:2000]
    np.savez(out % "unpatched", error=np.array(error))


class KillAt(keras.callbacks.Callback):
    """Ends this process abruptly at `(epoch, step)`, as a preempted host would."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os._exit(17)


def run_resume(strategy, out, backup_dir):
    with strategy.scope():
        model = new_model("BayesianMLP")
    # Keras 3's BackupAndRestore has every worker write the same files: one directory each.
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    swag = tdg.inference.SWAG(rank=2, start_epoch=0)
    collect = tdg.inference.CollectSamples(
        burn_in=1, backup_dir=os.path.join(backup_dir, f"samples{task}")
    )
    backup = keras.callbacks.BackupAndRestore(os.path.join(backup_dir, f"worker{task}"))
    callbacks = [backup, swag, collect]
    kill_at = os.environ.get("KILL_AT")
    if kill_at and task == 1:
        callbacks.append(KillAt(*(int(v) for v in kill_at.split(","))))
    x = regression_data()
    history = model.fit(
        *x, batch_size=GLOBAL_BATCH, epochs=3, shuffle=False, verbose=0, callbacks=callbacks
    )
    record = {f"weight/{i}": v.numpy() for i, v in enumerate(model.variables)}
    record.update(
        {
            "swag/num_collected": np.array(swag.num_collected),
            "swag/mean": swag.mean,
            "swag/second_moment": swag.second_moment,
            "swag/deviations": swag.deviations,
            "samples/steps": np.array(collect.steps),
        }
    )
    record.update({f"samples/{i}": values for i, values in enumerate(collect.samples)})
    record["epochs_run"] = np.array(len(history.history["loss"]))
    np.savez(out % "resume", **record)


def main(scenario, out_dir):
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    out = os.path.join(out_dir, "%s-" + str(task) + ".npz")
    if scenario == "fit":
        run_fit(strategy, out)
    elif scenario == "unpatched":
        run_unpatched(strategy, out)
    elif scenario == "resume":
        run_resume(strategy, out, os.path.join(out_dir, "backup"))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
