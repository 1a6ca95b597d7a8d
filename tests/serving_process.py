"""Runs SavedModels in a separate Python process that cannot import tfp_deepgen or TFP.

That process imports only TensorFlow (a meta-path hook refuses `tfp_deepgen`
and `tensorflow_probability`), so an export that still needed our code or
TFP's would fail to load or run there. Starting one per check costs a
TensorFlow import, several seconds, each time; instead each test worker starts
one such process on first use and sends it one request per check. Each
request loads the export afresh and drops it afterwards. `tests/test_export.py`
still starts a new process of its own for TF Serving's request format.
"""

import atexit
import json
import select
import subprocess
import sys
import tempfile
import textwrap

_SERVER_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys, traceback

    BLOCKED = ("tfp_deepgen", "tensorflow_probability")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked in the serving check: " + name)

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensorflow as tf


    def serve_twice(path, x_path, out_path):
        loaded = tf.saved_model.load(path)
        x = tf.constant(np.load(x_path))
        np.savez(out_path, first=loaded.serve(x).numpy(), second=loaded.serve(x).numpy())


    def run_signatures(path, inputs_path, out_path):
        loaded = tf.saved_model.load(path)
        inputs = {}
        for key, value in np.load(inputs_path).items():
            signature, argument = key.split("/")
            inputs.setdefault(signature, {})[argument] = tf.constant(value)
        out = {}
        for signature, arguments in inputs.items():
            for name, value in loaded.signatures[signature](**arguments).items():
                out[signature + "/" + name] = value.numpy()
        np.savez(out_path, **out)


    def assert_blocked():
        for name in BLOCKED:
            try:
                __import__(name)
            except ImportError:
                continue
            raise AssertionError(name + " could be imported")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded


    TASKS = {
        "serve_twice": serve_twice,
        "run_signatures": run_signatures,
        "assert_blocked": assert_blocked,
    }
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            TASKS[request["task"]](*request["args"])
            reply = {"ok": True}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        print(json.dumps(reply), flush=True)
    """
)

_process = None


class _ServingProcess:
    def __init__(self):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", _SERVER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self._reply(timeout=180)  # the ready line

    def alive(self):
        return self.process.poll() is None

    def _stderr_tail(self):
        self.log.seek(0)
        return self.log.read()[-3000:]

    def _reply(self, timeout):
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise AssertionError(
                f"The serving process gave no answer within {timeout} s:\n{self._stderr_tail()}"
            )
        return json.loads(line)

    def run(self, task, *args, timeout=180):
        self.process.stdin.write(json.dumps({"task": task, "args": [str(a) for a in args]}))
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        reply = self._reply(timeout)
        assert reply["ok"], reply["error"]

    def close(self):
        if self.alive():
            self.process.kill()
        self.process.wait()


def run_in_serving_process(task, *args):
    """Runs `task` ("serve_twice", "run_signatures", "assert_blocked") there.

    The arguments are file paths (strings).

    Raises AssertionError with the server's traceback when the task fails.
    """
    global _process
    if _process is None or not _process.alive():
        _process = _ServingProcess()
        atexit.register(_process.close)
    _process.run(task, *args)
