"""`SampleSet`: a posterior held as N equally weighted weight samples.

What SGLD and HMC collect, and what a SWAG posterior with batch-norm
statistics refreshed per sample becomes. The s-th copy of a Monte-Carlo pass
uses stored sample `s mod N`: ask the predictive for `num_samples=N` (or a
multiple) to average over the set exactly.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=1.0)
>>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(head.input_size), head])
>>> samples = [np.array([[[1.0]], [[3.0]]], "float32"), np.zeros((2, 1), "float32")]
>>> posterior = tdg.inference.SampleSet.from_samples(model, samples)
>>> out = tdg.predictive.predict(posterior, np.ones((1, 1), "float32"), num_samples=2)
>>> out["mean"], out["epistemic_variance"]
(array([[2.]], dtype=float32), array([[1.]], dtype=float32))
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.inference.weight_posterior import (
    WeightPosterior,
    check_mixable,
    checked_variable_indices,
)

__all__ = ["SampleSet"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class SampleSet(WeightPosterior):
    """N stored weight samples of some variables of `model`, equally weighted.

    Build one with `SampleSet.from_samples`; the constructor makes the empty
    (zero) store that `.keras` loading fills.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        num_stored: N, the number of samples stored.
        variable_indices: Positions in `model.weights` of the variables
            sampled (default: the trainable ones). The others keep `model`'s
            values.
        seed: Unused by the draws (they cycle through the set); kept for the
            interface.
        **kwargs: `name` and the other arguments of `keras.Model`.
    """

    def __init__(self, model, num_stored, variable_indices=None, seed=None, **kwargs):
        super().__init__(model, seed=seed, **kwargs)
        self.num_stored = _validation.positive_int("num_stored", num_stored)
        weights = self.model.weights
        self.variable_indices = checked_variable_indices(self.model, variable_indices)
        self.samples = [
            self.add_weight(
                shape=(self.num_stored, *weights[i].shape),
                initializer="zeros",
                dtype=weights[i].dtype,
                trainable=False,
                name=f"samples_{k}",
            )
            for k, i in enumerate(self.variable_indices)
        ]

    @classmethod
    def from_samples(cls, model, samples, variables=None, seed=None, name=None):
        """A `SampleSet` holding `samples`.

        Args:
            model: A built Keras model ending in a `tfp_deepgen.heads` head.
            samples: One array per variable, shaped `(N, *variable.shape)`,
                in the order of `variables`.
            variables: The variables of `model` sampled (default:
                `model.trainable_variables`).
            seed: See the class.
            name: The posterior's name.

        Raises:
            ValueError: When the arrays do not match the variables' shapes or
                disagree on N.
        """
        variables = list(model.trainable_variables if variables is None else variables)
        positions = {id(v): i for i, v in enumerate(model.weights)}
        if any(id(v) not in positions for v in variables):
            raise ValueError("`variables` must be variables of `model` (from model.weights).")
        samples = [np.asarray(s) for s in samples]
        if len(samples) != len(variables):
            raise ValueError(
                f"`samples` must hold one array per variable ({len(variables)}); "
                f"received {len(samples)}."
            )
        counts = {s.shape[0] if s.ndim else None for s in samples}
        for s, v in zip(samples, variables, strict=True):
            if s.shape[1:] != tuple(v.shape):
                raise ValueError(
                    f"`samples` for {v.path} must have shape (N, {', '.join(map(str, v.shape))}); "
                    f"received {s.shape}."
                )
        if len(counts) != 1:
            raise ValueError(f"`samples` must all hold the same number N; received {counts}.")
        kwargs = {} if name is None else {"name": name}
        posterior = cls(
            model, counts.pop(), [positions[id(v)] for v in variables], seed=seed, **kwargs
        )
        for store, values in zip(posterior.samples, samples, strict=True):
            store.assign(values.astype(store.dtype))
        return posterior

    @classmethod
    def mixture(cls, sample_sets, seed=None, name=None):
        """The equal mixture of several sample sets of one architecture.

        MultiSWAG for models with batch norm (each run's
        `swag.posterior(refresh_data=..., num_samples=N)` is a `SampleSet`),
        or several SGLD chains pooled. The samples are interleaved, so copy
        `s` of a Monte-Carlo pass uses set `s mod M`; ask for a multiple of
        `M * N` samples to average over every stored sample.

        Args:
            sample_sets: `SampleSet`s (at least 2) drawing the same variables
                of models of one architecture, each holding N samples. The
                weights they do not draw must be equal (the mixture takes
                them from the first set's model).
            seed: See the class.
            name: The mixture's name.

        Raises:
            ValueError: When fewer than two sets are given or they disagree.

        Example:

        >>> import keras, numpy as np, tfp_deepgen as tdg
        >>> head = tdg.heads.IndependentNormal(scale=1.0)
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1), head])
        >>> def held(kernel):
        ...     samples = [np.full((1, 1, 1), kernel, "float32"), np.zeros((1, 1), "float32")]
        ...     return tdg.inference.SampleSet.from_samples(model, samples)
        >>> pooled = tdg.inference.SampleSet.mixture([held(1.0), held(3.0)])
        >>> tdg.predictive.predict(pooled, np.ones((1, 1), "float32"), num_samples=2)["mean"]
        array([[2.]], dtype=float32)
        """
        sample_sets = list(sample_sets)
        if len(sample_sets) < 2 or not all(isinstance(s, SampleSet) for s in sample_sets):
            raise ValueError(
                "`sample_sets` must be a list of at least 2 SampleSet objects; received "
                f"{sample_sets!r}."
            )
        counts = {s.num_stored for s in sample_sets}
        if len(counts) != 1:
            raise ValueError(
                f"`sample_sets` must each hold the same number of samples; received {counts}."
            )
        check_mixable(sample_sets, "sample_sets")
        first = sample_sets[0]
        kwargs = {} if name is None else {"name": name}
        mixed = cls(
            first.model,
            first.num_stored * len(sample_sets),
            first.variable_indices,
            seed=seed,
            **kwargs,
        )
        for k, store in enumerate(mixed.samples):
            # Sample i of set m goes to position i * M + m: copy s uses set s mod M.
            stacked = tf.stack([s.samples[k] for s in sample_sets], axis=1)
            store.assign(tf.reshape(stacked, store.shape))
        return mixed

    @property
    def random_variables(self):
        weights = self.model.weights
        return [weights[i] for i in self.variable_indices]

    def weight_samples(self, num_samples, seed):
        del seed  # the set is cycled through, not sampled
        index = tf.range(num_samples) % self.num_stored
        return [tf.gather(store, index) for store in self.samples]

    def get_config(self):
        config = super().get_config()
        config.update({"num_stored": self.num_stored, "variable_indices": self.variable_indices})
        return config
