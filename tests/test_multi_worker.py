"""`fit()` under `MultiWorkerMirroredStrategy`: two worker processes on loopback.

Each test starts a two-worker cluster on 127.0.0.1 (free ports, a time limit,
every process stopped afterwards) running `tests/multi_worker_process.py`,
then compares what the workers recorded with each other and with one process
training the same model on the same global batch.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from multi_worker_process import EPOCHS, GLOBAL_BATCH, MODELS, NUM_EXAMPLES, new_model, train

import tfp_deepgen as tdg

WORKER = pathlib.Path(__file__).with_name("multi_worker_process.py")
NUM_WORKERS = 2
TIME_LIMIT_S = 240
STEPS = EPOCHS * NUM_EXAMPLES // GLOBAL_BATCH


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """`NUM_WORKERS` worker processes of one scenario; stops them all on exit."""

    def __init__(self, scenario, out_dir, env=None):
        ports = _free_ports(NUM_WORKERS)
        self.out_dir = pathlib.Path(out_dir)
        self.logs = [self.out_dir / f"worker{i}.log" for i in range(NUM_WORKERS)]
        self.processes = []
        for index in range(NUM_WORKERS):
            tf_config = {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": index},
            }
            worker_env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), **(env or {}))
            with open(self.logs[index], "ab") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), scenario, str(out_dir)],
                        env=worker_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def wait(self, index, timeout=TIME_LIMIT_S):
        try:
            return self.processes[index].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"worker {index} ran over {timeout} s:\n{self.log(index)}")

    def log(self, index):
        return self.logs[index].read_text(errors="replace")[-4000:]

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_cluster(scenario, out_dir, env=None):
    """Runs the scenario to the end; fails with the logs if a worker failed."""
    with Cluster(scenario, out_dir, env) as cluster:
        for index in range(NUM_WORKERS):
            code = cluster.wait(index)
            assert code == 0, f"worker {index} exited with {code}:\n{cluster.log(index)}"


def records(out_dir, name):
    return [dict(np.load(out_dir / f"{name}-{i}.npz")) for i in range(NUM_WORKERS)]


@contextlib.contextmanager
def _exclusive(lock_path):
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """The "fit" scenario's records, produced once per test session.

    Under pytest-xdist every test worker would otherwise start its own cluster
    (minutes of CPU on two cores): the first worker to get here runs it in the
    session's shared temporary directory, the others wait on a file lock and
    read the same records, or the same failure.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        out_dir = tmp_path_factory.mktemp("multi_worker_fit")
        run_cluster("fit", out_dir)
        return out_dir
    shared = tmp_path_factory.getbasetemp().parent  # this session's, common to its workers
    out_dir, failure = shared / "multi_worker_fit", shared / "multi_worker_fit.failed"
    with _exclusive(shared / "multi_worker_fit.lock"):
        if failure.exists():
            pytest.fail(failure.read_text())
        if not (out_dir / "done").exists():
            out_dir.mkdir(exist_ok=True)
            try:
                run_cluster("fit", out_dir)
            except BaseException as error:
                failure.write_text(f"the shared multi-worker cluster failed:\n{error}")
                raise
            (out_dir / "done").touch()
    return out_dir


@pytest.mark.parametrize("name", list(MODELS))
def test_workers_hold_identical_weights_after_every_step(fitted, name):
    first, second = records(fitted, name)
    assert first.keys() == second.keys()
    assert len(first["losses"]) == STEPS
    for key in first:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_matches_one_process_on_the_global_batch(fitted, name):
    """Same losses, KL terms and updates as one process: the KL counts once."""
    worker, _ = records(fitted, name)
    model = new_model(name)
    initial = [worker[f"initial/{i}"] for i in range(len(model.get_weights()))]
    model.set_weights(initial)  # the workers' own start (worker 0's, broadcast)
    expected = train(model, name)
    assert expected.keys() == worker.keys()
    rtol = max(2e-5, MODELS[name].mirrored_rtol)
    for key, value in expected.items():
        np.testing.assert_allclose(worker[key], value, rtol=rtol, atol=1e-6, err_msg=key)


def test_every_layer_trains_on_two_workers(fitted):
    """Each layer of the conformance battery: plain `fit()`, identical weights after."""
    first, second = records(fitted, "layers")
    assert first.keys() == second.keys() and len(first) > 20
    for key in first:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)
    cases = {key.split("/")[1] for key in first}
    for case in cases:
        moved = [
            not np.array_equal(first[key], first[key.replace("initial/", "trained/", 1)])
            for key in first
            if key.startswith(f"initial/{case}/")
        ]
        assert any(moved), f"{case}: fit() changed no weight"


def test_workers_draw_different_noise(fitted):
    first, second = records(fitted, "noise")
    assert np.abs(first["noise"] - second["noise"]).max() > 1e-3


def test_the_patch_is_on_exactly_where_keras_fails(tmp_path):
    """Keras's own trainer must fail on two workers where the patch is applied.

    Fails once Keras fixes multi-worker `fit()`: then set the first fixed
    version in `tdg.distribute.AFFECTED_KERAS_VERSIONS`, and this test checks
    that the newer Keras runs unpatched.
    """
    with Cluster("unpatched", tmp_path) as cluster:
        for index in range(NUM_WORKERS):
            cluster.wait(index)
    errors = [str(record["error"]) for record in records(tmp_path, "unpatched")]
    if tdg.distribute.keras_trainer_patched():
        assert all(errors), (
            "Keras's own trainer now runs fit() on two workers: the upstream bug "
            "(keras-team/keras#20585) is fixed in this Keras. Set the first fixed version "
            "in tdg.distribute.AFFECTED_KERAS_VERSIONS and plan the patch's removal."
        )
        assert any("PerReplica" in error for error in errors), errors
    else:
        assert not any(errors), errors


def test_the_patch_is_version_gated(monkeypatch):
    """No patch on a Keras outside `AFFECTED_KERAS_VERSIONS`; toggles otherwise."""
    try:
        monkeypatch.setattr(tdg.distribute, "AFFECTED_KERAS_VERSIONS", ((3, 0), (3, 0)))
        tdg.distribute.restore_keras_trainer()
        assert tdg.distribute.patch_keras_trainer() is False
        assert not tdg.distribute.keras_trainer_patched()
        monkeypatch.setattr(tdg.distribute, "AFFECTED_KERAS_VERSIONS", ((3, 0), None))
        assert tdg.distribute.patch_keras_trainer() is True
        assert tdg.distribute.patch_keras_trainer() is True  # idempotent
        assert tdg.distribute.keras_trainer_patched()
    finally:
        monkeypatch.undo()
        tdg.distribute.restore_keras_trainer()
        tdg.distribute.patch_keras_trainer()


def test_a_killed_worker_resumes_to_the_uninterrupted_weights(tmp_path):
    """BackupAndRestore: kill worker 1 mid-epoch, restart both, same end state.

    The backup holds the weights, the optimizer, every layer's seed state and
    the SWAG callback's moments, so the resumed run replays the interrupted
    epoch with the same noise and SWAG ends with the same three collections;
    `CollectSamples` (its own backup directory per worker) drops the sample
    taken after the last checkpoint, takes it again, and ends with the same
    samples as the uninterrupted run.
    """
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    uninterrupted.mkdir(), interrupted.mkdir()
    run_cluster("resume", uninterrupted)
    with Cluster("resume", interrupted, env={"KILL_AT": "1,1"}) as cluster:
        assert cluster.wait(1) == 17, cluster.log(1)
        # The survivor finds its peer gone (a collective fails) and stops too.
        assert cluster.wait(0) != 0, cluster.log(0)
    assert (interrupted / "backup" / "worker0" / "training_metadata.json").exists()
    run_cluster("resume", interrupted)  # the same backup directory, no kill
    expected, _ = records(uninterrupted, "resume")
    for resumed in records(interrupted, "resume"):
        assert int(resumed["epochs_run"]) == 2  # epochs 1 and 2 only: a resume
        assert int(resumed["swag/num_collected"]) == 3
        assert resumed["samples/steps"].tolist() == list(range(2, 7))  # burn-in 1, 6 steps
        assert resumed.keys() == expected.keys()
        for key in expected:
            if key != "epochs_run":
                np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)
