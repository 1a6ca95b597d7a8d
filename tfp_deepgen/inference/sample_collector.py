"""`CollectSamples`: a callback keeping thinned weight samples of an SG-MCMC run.

During `model.fit` with `tdg.inference.SGLD` or `pSGLD` (or any optimizer),
the callback copies the model's trainable weights after optimizer step `t`
when `t > burn_in`, `t` is a multiple of `thinning` and step `t` was a
sampling step (with a `tdg.inference.CyclicalStepSize`, not in a cycle's
exploration stage). For cSGLD the default `thinning` is the cycle length:
one sample at the end of each cycle's sampling stage. `callback.posterior()`
returns the samples as a `tdg.inference.SampleSet`.

Surviving an interruption: `keras.callbacks.BackupAndRestore` saves and
reloads the model's state tree (its layers, optimizer and metrics). A
callback is not part of that tree, and putting the samples into it would
mean `max_samples` copies of the weights as optimizer variables, written
into every checkpoint and every `.keras` file. So the samples are backed up
on their own: with `backup_dir`, each sample is written there when taken
(one `.npz` file per sample, named by its step), and when training starts
again the callback reloads the samples of steps up to the optimizer's
restored `iterations` (dropping those taken after the checkpoint it resumes
from, which the resumed run takes again). The files are deleted when `fit`
ends normally, as `BackupAndRestore` deletes its own.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(1, scale=1.0)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> model.compile(tdg.inference.SGLD(1e-2, data_size=8, seed=0), head.loss)
>>> collect = tdg.inference.CollectSamples(burn_in=2, thinning=2)
>>> x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
>>> _ = model.fit(x, y, batch_size=4, epochs=4, callbacks=[collect], verbose=0)
>>> collect.steps  # optimizer steps 1..8; kept after 2, every 2
[4, 6, 8]
>>> collect.posterior().num_stored
3
"""

import os
import re

import keras
import numpy as np

from tfp_deepgen import _validation
from tfp_deepgen.inference.sample_set import SampleSet
from tfp_deepgen.inference.step_size import CyclicalStepSize

__all__ = ["CollectSamples"]

_SAMPLE_FILE = re.compile(r"^sample_(\d+)\.npz$")


def _sampler(optimizer):
    """The optimizer that counts the applied steps (unwrapping a `LossScaleOptimizer`)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _applied_steps(sampler):
    """Updates `sampler` (an unwrapped optimizer, see `_sampler`) has applied."""
    # Read through NumPy: under a tf.distribute strategy `iterations` is a
    # mirrored variable, which `int()` refuses.
    return int(keras.ops.convert_to_numpy(sampler.iterations))


class CollectSamples(keras.callbacks.Callback):
    """Keeps thinned weight samples after burn-in; `posterior()` returns them.

    Args:
        burn_in: Optimizer steps discarded first (an integer >= 0).
        thinning: Keep one sample every `thinning` optimizer steps (a
            positive integer), or None: the cycle length of a
            `CyclicalStepSize` learning rate (one sample at the end of each
            cycle), else 1. With `steps_per_execution=k` the callback sees
            every k-th step only, so `thinning` must be a multiple of k.
        max_samples: Keep at most this many, the most recent (a positive
            integer), or None for all.
        backup_dir: A directory where each sample is also written, so that a
            run resumed by `keras.callbacks.BackupAndRestore` keeps the
            samples taken before the interruption (see the module
            docstring), or None. Use a directory of its own.

    Example:

    >>> import tfp_deepgen as tdg
    >>> tdg.inference.CollectSamples(burn_in=100, thinning=10, max_samples=50).max_samples
    50
    """

    def __init__(self, burn_in=0, thinning=None, max_samples=None, backup_dir=None):
        super().__init__()
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"`burn_in` must be an integer >= 0. Received: burn_in={burn_in!r}")
        self.burn_in = burn_in
        self.thinning = None if thinning is None else _validation.positive_int("thinning", thinning)
        self.max_samples = (
            None if max_samples is None else _validation.positive_int("max_samples", max_samples)
        )
        if backup_dir is not None and not isinstance(backup_dir, str | os.PathLike):
            raise ValueError(
                f"`backup_dir` must be a path or None. Received: backup_dir={backup_dir!r}"
            )
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self._kept = []  # (step, [one array per trainable variable])
        self._every = None
        self._restore_pending = False

    @property
    def steps(self):
        """The optimizer steps after which the kept samples were taken."""
        return [step for step, _ in self._kept]

    @property
    def num_samples(self):
        return len(self._kept)

    @property
    def samples(self):
        """One array per trainable variable of the model, `(num_samples, *shape)`."""
        if not self._kept:
            raise ValueError("No samples collected yet: train with `fit(callbacks=[...])` first.")
        return [np.stack(values) for values in zip(*(v for _, v in self._kept), strict=True)]

    def posterior(self, seed=None, name=None):
        """The kept samples as a `tdg.inference.SampleSet` over the model's trainable weights."""
        return SampleSet.from_samples(self.model, self.samples, seed=seed, name=name)

    def on_train_begin(self, logs=None):
        optimizer = _sampler(self.model.optimizer)
        schedule = getattr(optimizer, "schedule", None)
        every = self.thinning
        if every is None:
            every = schedule.steps_per_cycle if isinstance(schedule, CyclicalStepSize) else 1
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if every % per_execution:
            raise ValueError(
                f"`thinning` must be a multiple of the model's steps_per_execution "
                f"({per_execution}): the callback sees every {per_execution}-th step only. "
                f"Received: thinning={every}"
            )
        self._every = every
        # BackupAndRestore restores the optimizer in its own on_train_begin,
        # which may run after this one: reload the samples at the first batch.
        self._restore_pending = self.backup_dir is not None

    def on_train_batch_begin(self, batch, logs=None):
        if self._restore_pending:
            self._restore_pending = False
            self._restore(_applied_steps(_sampler(self.model.optimizer)))

    def on_train_batch_end(self, batch, logs=None):
        optimizer = _sampler(self.model.optimizer)
        step = _applied_steps(optimizer)
        if step <= self.burn_in or step % self._every or (self._kept and self._kept[-1][0] >= step):
            return
        if hasattr(optimizer, "is_sampling_step") and not optimizer.is_sampling_step(step - 1):
            return
        values = [np.array(v.numpy()) for v in self.model.trainable_variables]
        self._kept.append((step, values))
        if self.backup_dir is not None:
            self._write(step, values)
        if self.max_samples is not None and len(self._kept) > self.max_samples:
            dropped, _ = self._kept.pop(0)
            self._remove(dropped)

    def on_train_end(self, logs=None):
        if self.backup_dir is None:
            return
        for step in self._backed_up_steps():
            self._remove(step)
        if os.path.isdir(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)

    def _path(self, step):
        return os.path.join(self.backup_dir, f"sample_{step:012d}.npz")

    def _write(self, step, values):
        os.makedirs(self.backup_dir, exist_ok=True)
        partial = self._path(step) + ".partial"
        with open(partial, "wb") as f:
            np.savez(f, *values)
        os.replace(partial, self._path(step))  # atomic: a kill leaves no half file

    def _remove(self, step):
        if self.backup_dir is not None and os.path.exists(self._path(step)):
            os.remove(self._path(step))

    def _backed_up_steps(self):
        if not os.path.isdir(self.backup_dir):
            return []
        names = (_SAMPLE_FILE.match(name) for name in os.listdir(self.backup_dir))
        return sorted(int(m.group(1)) for m in names if m)

    def _restore(self, step):
        """Keeps the samples of steps <= `step` (the resumed run redoes the later ones)."""
        on_disk = self._backed_up_steps()
        if on_disk:
            kept = []
            for saved in on_disk:
                if saved > step:
                    self._remove(saved)
                    continue
                with np.load(self._path(saved)) as arrays:
                    kept.append((saved, [arrays[f"arr_{i}"] for i in range(len(arrays.files))]))
            self._kept = kept
        else:
            self._kept = [(s, v) for s, v in self._kept if s <= step]
        if self.max_samples is not None:
            for dropped, _ in self._kept[: -self.max_samples]:
                self._remove(dropped)
            self._kept = self._kept[-self.max_samples :]
        for saved, values in self._kept:  # samples from an earlier fit call join the backup
            if not os.path.exists(self._path(saved)):
                self._write(saved, values)
