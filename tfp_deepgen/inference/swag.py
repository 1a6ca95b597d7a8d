"""`SWAG`: the callback collecting SWA-Gaussian moments during `model.fit`.

SWAG (Maddox et al. 2019, "A Simple Baseline for Bayesian Uncertainty in Deep
Learning") keeps, over the weights `w_1..w_n` that SGD visits, the running
mean `E[w]`, the running uncentred second moment `E[w^2]` and the last K
deviations `w_i - mean_i` (the mean after `w_i` joined it, as the authors'
code). `swag.posterior()` turns them into a `SWAGPosterior`.

It works on any ordinary model: train with a constant or cyclical learning
rate that keeps SGD moving in the collection phase (the paper's setting; a
learning rate decayed to zero collects one point K times). Collection runs
between epochs, in Python, on the variables, so `jit_compile=True` training
is unaffected.

Resume: the state lives in a `SWAGState` layer attached to the model as the
attribute `name` *without* Keras's tracking (so it is not in `model.layers`,
`model.weights` or `final_head`), where
`model.save_weights`, hence `keras.callbacks.BackupAndRestore`, saves and
restores it with the model and optimizer. It is attached when `fit` hands the
callback its model and detached when training ends. The callbacks may come in
any order: a resumed run collects, at its first epoch, an epoch the
checkpoint was saved without.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=1.0)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> model.compile(keras.optimizers.SGD(0.05), head.loss)
>>> swag = tdg.inference.SWAG(rank=3, start_epoch=1)
>>> x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
>>> _ = model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[swag])
>>> swag.num_collected, swag.deviations.shape
(3, (3, 3))
>>> posterior = swag.posterior(seed=0)
>>> tdg.predictive.predict(posterior, x, num_samples=4)["mean"].shape
(32, 1)
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.inference.sample_set import SampleSet
from tfp_deepgen.inference.subsets import posterior_variables
from tfp_deepgen.inference.swag_posterior import (
    SWAGPosterior,
    batch_norm_layers,
    refresh_batch_norm,
)
from tfp_deepgen.inference.weight_posterior import flat_values

__all__ = ["SWAG", "SWAGState"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class SWAGState(keras.layers.Layer):
    """The variables SWAG collects into (what `BackupAndRestore` saves).

    Args:
        num_parameters: n, the length of the flattened variables.
        rank: K, the deviations kept.
        **kwargs: `name` and the other arguments of `keras.layers.Layer`.
    """

    def __init__(self, num_parameters, rank, **kwargs):
        super().__init__(**kwargs)
        self.num_parameters = _validation.positive_int("num_parameters", num_parameters)
        self.rank = _validation.positive_int("rank", rank)

        def state(shape, name, dtype="float32", initializer="zeros"):
            return self.add_weight(
                shape=shape, initializer=initializer, dtype=dtype, trainable=False, name=name
            )

        self.mean = state((num_parameters,), "mean")
        self.second_moment = state((num_parameters,), "second_moment")
        self.deviations = state((rank, num_parameters), "deviations")
        self.num_collected = state((), "num_collected", "int32")
        self.last_epoch = state((), "last_epoch", "int32", keras.initializers.Constant(-1))
        self.built = True

    def collect(self, values, epoch=-1):
        """Adds one flat weight vector `values` to the moments and deviations."""
        values = tf.cast(tf.reshape(values, [self.num_parameters]), "float32")
        n = int(self.num_collected.numpy())
        keep, add = n / (n + 1.0), 1.0 / (n + 1.0)
        self.mean.assign(self.mean * keep + values * add)
        self.second_moment.assign(self.second_moment * keep + tf.square(values) * add)
        deviation = (values - self.mean)[None]
        rows = self.deviations.value
        if n < self.rank:
            rows = tf.tensor_scatter_nd_update(rows, [[n]], deviation)
        else:
            rows = tf.concat([rows[1:], deviation], 0)
        self.deviations.assign(rows)
        self.num_collected.assign(n + 1)
        self.last_epoch.assign(epoch)

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update({"num_parameters": self.num_parameters, "rank": self.rank})
        return config


class SWAG(keras.callbacks.Callback):
    """Collects SWAG's moments of a model's weights during `fit`.

    At the end of epoch `e >= start_epoch` with `(e - start_epoch) %
    collect_every == 0` (epochs counted as `fit` counts them, from
    `initial_epoch`), the current weights join the running first and second
    moments and the last `rank` deviations. The state accumulates over `fit`
    calls with the same model; `reset()` clears it. Epoch-end iterates, as
    in the paper: after a reshuffled pass over the data, the noise of the
    minibatch gradients largely cancels, so they scatter less than
    mid-epoch ones would. Models with `BatchNormalization` need
    `posterior(refresh_data=...)`.

    Args:
        rank: K, the number of deviations kept for the low-rank part, >= 1
            (20 in the paper). The covariance needs >= 2 collected.
        start_epoch: First epoch collected (0-based), or None (default) for
            half the `epochs` of the `fit` call: SWAG averages the iterates
            of a trained model, and the first half of a run brings it there
            (the paper collects from epoch 161 of 300). Use an explicit value
            when resuming with `initial_epoch` or calling `fit` repeatedly.
        collect_every: Collect every this many epochs, >= 1.
        subset: `"all"` trainable variables or the `"last_layer"` (see
            `tdg.inference.posterior_variables`).
        name: The model attribute holding the state (and its checkpoint
            name); two SWAG callbacks on one model need two names.
    """

    def __init__(self, rank=20, start_epoch=None, collect_every=1, subset="all", name="swag"):
        super().__init__()
        self.rank = _validation.positive_int("rank", rank)
        if start_epoch is not None:
            if isinstance(start_epoch, bool) or not isinstance(start_epoch, (int, np.integer)):
                raise ValueError(
                    f"`start_epoch` must be None or an integer >= 0; received {start_epoch!r}."
                )
            if start_epoch < 0:
                raise ValueError(
                    f"`start_epoch` must be None or an integer >= 0; received {start_epoch!r}."
                )
            start_epoch = int(start_epoch)
        self.start_epoch = start_epoch
        self.collect_every = _validation.positive_int("collect_every", collect_every)
        self.subset = _validation.one_of("subset", subset, ("all", "last_layer"))
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(
                f"`name` must be a Python identifier not starting with '_'; received {name!r}."
            )
        self.name = name
        self.state = None
        self.variables = None
        self._start = start_epoch
        self._first_epoch = True
        self._attached = None

    # --- state --------------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        if model.built and model.trainable_variables:
            self._ensure_state(model)

    def _ensure_state(self, model):
        variables = posterior_variables(model, self.subset)
        if self.state is None or [id(v) for v in variables] != [id(v) for v in self.variables]:
            size = sum(int(np.prod(v.shape)) for v in variables)
            self.variables = variables
            self.state = SWAGState(size, self.rank, name=self.name)
        if self._attached is not model:
            current = getattr(model, self.name, None)
            if current is not None and not isinstance(current, SWAGState):
                raise ValueError(
                    f"`name` {self.name!r} is already an attribute of the model; pick another."
                )
            # Not through Keras's tracking: it would make the state a layer of the model.
            object.__setattr__(model, self.name, self.state)
            self._attached = model

    def _detach(self):
        model = self._attached
        if model is not None and getattr(model, self.name, None) is self.state:
            object.__delattr__(model, self.name)
        self._attached = None

    def reset(self):
        """Forgets everything collected."""
        if self.state is not None:
            for v in self.state.weights:
                v.assign(tf.zeros_like(v))
            self.state.last_epoch.assign(-1)

    def collect(self, values=None, epoch=-1):
        """Adds the model's current weights (or `values`) to the moments.

        Args:
            values: None for the current values of the collected variables,
                or one array per variable (in `variables` order).
            epoch: The epoch recorded as last collected.
        """
        if self.state is None:
            if self.model is None:
                raise ValueError("SWAG has no model yet: call `set_model(model)` or `fit` first.")
            self._ensure_state(self.model)
        if values is None:
            flat = flat_values(self.variables)
        else:
            flat = tf.concat([tf.reshape(tf.cast(v, "float32"), [-1]) for v in values], 0)
        self.state.collect(flat, epoch)

    @property
    def num_collected(self):
        """How many weight vectors were collected."""
        return 0 if self.state is None else int(self.state.num_collected.numpy())

    @property
    def mean(self):
        """The running mean, a flat numpy vector over `variables`."""
        return self._read("mean")

    @property
    def second_moment(self):
        """The running mean of squared weights, a flat numpy vector."""
        return self._read("second_moment")

    @property
    def deviations(self):
        """The kept deviations, oldest first, as `(min(n, rank), num_parameters)`."""
        rows = self._read("deviations")
        return rows[: min(self.num_collected, self.rank)]

    def _read(self, name):
        if self.state is None:
            raise ValueError("SWAG has collected nothing yet: run `fit` with it first.")
        return getattr(self.state, name).numpy()

    # --- the fit hooks ------------------------------------------------------------

    def _due(self, epoch):
        return epoch >= self._start and (epoch - self._start) % self.collect_every == 0

    def on_train_begin(self, logs=None):
        if self.model.built and self.model.trainable_variables:
            self._ensure_state(self.model)  # else at the first collection
        if self.start_epoch is None:
            self._start = int(self.params.get("epochs", 0) or 0) // 2
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        # A run resumed by BackupAndRestore whose checkpoint was saved before this
        # callback collected the previous epoch: its weights are the model's now.
        previous = epoch - 1
        if (
            self._first_epoch
            and self.state is not None
            and previous >= 0
            and self._due(previous)
            and int(self.state.last_epoch.numpy()) != previous
        ):
            self.collect(epoch=previous)
        self._first_epoch = False

    def on_epoch_end(self, epoch, logs=None):
        if self._due(epoch):
            self.collect(epoch=epoch)

    def on_train_end(self, logs=None):
        self._detach()

    # --- the posterior ------------------------------------------------------------

    def posterior(
        self,
        scale=0.5,
        seed=None,
        refresh_data=None,
        num_samples=None,
        batch_size=128,
        assign_mean=True,
        name=None,
    ):
        """The SWAG posterior of what was collected.

        Args:
            scale: Factor of the covariance, > 0; 0.5 (default) is the paper's
                `(Sigma_diag + Sigma_low_rank) / 2`.
            seed: Integer seed of the draws, or None.
            refresh_data: Inputs to recompute batch-norm statistics on, per
                weight draw (required when the model has trainable
                `BatchNormalization` layers and `subset="all"`).
            num_samples: With `refresh_data`: how many draws to keep.
            batch_size: With `refresh_data`: rows per forward pass.
            assign_mean: Set the model's collected variables to the SWA mean
                (Izmailov et al. 2018), so the model itself and the posterior
                under `sampling_mode(..., "mean")` predict with it (batch-norm
                statistics refreshed too when `refresh_data` is given).
            name: The posterior's name.

        Returns:
            A `SWAGPosterior` drawing in-graph; with `refresh_data`, a
            `tdg.inference.SampleSet` of `num_samples` draws, each with its
            own batch-norm statistics.

        Raises:
            ValueError: When nothing was collected, or `refresh_data` is
                missing for a batch-norm model.
        """
        if self.num_collected < 1:
            raise ValueError(
                "SWAG has collected nothing: fit past `start_epoch` with the callback first."
            )
        _validation.boolean("assign_mean", assign_mean)
        model = self.model
        needs_refresh = self.subset == "all" and bool(batch_norm_layers(model))
        if needs_refresh and refresh_data is None:
            raise ValueError(
                "The model has BatchNormalization layers, whose statistics depend on the "
                "weights drawn: pass `refresh_data` (training inputs) and `num_samples` to "
                "get a SampleSet with statistics recomputed per draw."
            )
        if refresh_data is not None:
            num_samples = _validation.positive_int("num_samples", num_samples)
            batch_size = _validation.positive_int("batch_size", batch_size)
        positions = {id(v): i for i, v in enumerate(model.weights)}
        kwargs = {} if name is None else {"name": name}
        posterior = SWAGPosterior(
            model,
            self.rank,
            [positions[id(v)] for v in self.variables],
            scale=scale,
            seed=seed,
            **kwargs,
        )
        count = min(self.num_collected, self.rank)
        posterior.set_state(self.mean, self.second_moment, self.deviations, count)
        if assign_mean:
            for v, value in zip(self.variables, _split(self.mean, self.variables), strict=True):
                v.assign(value)
        if refresh_data is None:
            return posterior
        variables = posterior.random_variables
        draws = [
            d.numpy() for d in posterior.weight_samples(num_samples, posterior.draws.next_seed())
        ]
        statistics, values = refresh_batch_norm(model, variables, draws, refresh_data, batch_size)
        if assign_mean and statistics:
            current = [v.numpy()[None] for v in variables]
            _, at_mean = refresh_batch_norm(model, variables, current, refresh_data, batch_size)
            for v, value in zip(statistics, at_mean, strict=True):
                v.assign(value[0])
        return SampleSet.from_samples(
            model, draws + values, variables=variables + statistics, seed=seed, name=name
        )


def _split(flat, variables):
    sizes = np.cumsum([int(np.prod(v.shape)) for v in variables])[:-1]
    return [
        piece.reshape(v.shape).astype(v.dtype)
        for piece, v in zip(np.split(flat, sizes), variables, strict=True)
    ]
