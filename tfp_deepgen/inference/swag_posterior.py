"""`SWAGPosterior`: the Gaussian of SWAG (Maddox et al. 2019), and MultiSWAG mixtures.

SWAG fits a Gaussian to the SGD iterates that `tdg.inference.SWAG` collects:
mean `m = E[w]`, a diagonal `diag(E[w^2] - E[w]^2)` and a low-rank part
`D^T D / (K - 1)` from the last K deviations `D` (rows `w_i - m_i`). A draw is

    w = m + sqrt(scale) * (sqrt(diag) * z1 + D^T z2 / sqrt(K - 1)),
    z1 ~ N(0, I_n), z2 ~ N(0, I_K),

so `Cov[w] = scale * (diag + D^T D / (K - 1))`. The default `scale=0.5` is
the paper's `Sigma = (Sigma_diag + Sigma_low_rank) / 2` (their code's
`scale=0.5`). The diagonal is clamped at `variance_floor` (1e-30, as the
authors' `var_clamp`): `E[w^2] - E[w]^2` is a difference of two float32
running averages and rounding makes it slightly negative for weights that
hardly move, where its square root would be NaN.

The moments and deviations are non-trainable weights of the posterior (one
row per mixture component), so a `.keras` file and an exported SavedModel
carry them and draw in-graph. `SWAGPosterior.mixture` combines several SWAG
runs into MultiSWAG (Wilson & Izmailov 2020): copy `s` of a Monte-Carlo pass
draws from component `s mod M`.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal(scale=1.0)
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> posterior = tdg.inference.SWAGPosterior(model, rank=2)  # zero state: draws = mean
>>> posterior.weight_samples(3, np.array([1, 2], "int32"))[0].shape
TensorShape([3, 2, 1])
"""

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation, random
from tfp_deepgen.inference.weight_posterior import (
    WeightPosterior,
    check_mixable,
    checked_variable_indices,
    split_flat,
)

__all__ = ["SWAGPosterior", "batch_norm_layers", "refresh_batch_norm"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class SWAGPosterior(WeightPosterior):
    """SWAG's Gaussian over some trainable variables of `model` (or a mixture of them).

    Made by `tdg.inference.SWAG.posterior()` or `SWAGPosterior.mixture`; the
    constructor makes the zero state that `.keras` loading (or
    `set_state`) fills.

    Args:
        model: A built Keras model ending in a `tfp_deepgen.heads` head.
        rank: K, the rows of the deviation matrix per component.
        variable_indices: Positions in `model.weights` of the variables drawn
            (default: the trainable ones).
        num_components: M, the number of mixture components (1 for SWAG).
        scale: Factor of the covariance, > 0 (0.5: the paper's sampling).
        variance_floor: Lower clamp of the diagonal variance, >= 0.
        seed: Integer seed of the draws, or None for a random one.
        **kwargs: `name` and the other arguments of `keras.Model`.
    """

    def __init__(
        self,
        model,
        rank,
        variable_indices=None,
        num_components=1,
        scale=0.5,
        variance_floor=1e-30,
        seed=None,
        **kwargs,
    ):
        super().__init__(model, seed=seed, **kwargs)
        self.rank = _validation.positive_int("rank", rank)
        self.num_components = _validation.positive_int("num_components", num_components)
        self.scale = _validation.positive_float("scale", scale)
        self.variance_floor = _validation.non_negative_float("variance_floor", variance_floor)
        weights = self.model.weights
        self.variable_indices = checked_variable_indices(self.model, variable_indices)
        size = sum(int(np.prod(weights[i].shape)) for i in self.variable_indices)
        self.num_parameters = size
        m = self.num_components

        def state(shape, name):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)

        self.mean = state((m, size), "mean")
        self.second_moment = state((m, size), "second_moment")
        self.deviations = state((m, self.rank, size), "deviations")
        self.num_deviations = state((m,), "num_deviations")

    @classmethod
    def mixture(cls, posteriors, seed=None, name=None):
        """MultiSWAG: the equal mixture of several SWAG posteriors of one architecture.

        The mixture wraps the first posterior's model (its weights are what
        `sampling_mode(..., "mean")` uses); copy `s` of a Monte-Carlo pass
        draws from component `s mod M`, so ask for a multiple of M samples to
        weight the components equally. The weights the components do not draw
        must be equal, so a mixture of separate runs needs `subset="all"`;
        runs of a model with batch norm give `SampleSet`s, mixed by
        `SampleSet.mixture`.

        Args:
            posteriors: `SWAGPosterior`s (at least 2) over variables of the
                same shapes and positions, with equal `scale` and
                `variance_floor`. Their ranks may differ (padded with zeros).
            seed: Integer seed of the mixture's draws, or None.
            name: The mixture's name.

        Raises:
            ValueError: When fewer than two posteriors are given or they disagree.
        """
        posteriors = list(posteriors)
        if len(posteriors) < 2 or not all(isinstance(p, SWAGPosterior) for p in posteriors):
            raise ValueError(
                "`posteriors` must be a list of at least 2 SWAGPosterior objects; received "
                f"{posteriors!r}."
            )
        check_mixable(posteriors)
        first = posteriors[0]
        for p in posteriors[1:]:
            shapes = [tuple(v.shape) for v in p.random_variables]
            if (
                p.variable_indices != first.variable_indices
                or shapes != [tuple(v.shape) for v in first.random_variables]
                or p.scale != first.scale
                or p.variance_floor != first.variance_floor
            ):
                raise ValueError(
                    "`posteriors` must cover variables of the same positions and shapes with "
                    f"equal scale and variance_floor; {p.name!r} differs from {first.name!r}."
                )
        rank = max(p.rank for p in posteriors)
        kwargs = {} if name is None else {"name": name}
        mixed = cls(
            first.model,
            rank,
            first.variable_indices,
            num_components=sum(p.num_components for p in posteriors),
            scale=first.scale,
            variance_floor=first.variance_floor,
            seed=seed,
            **kwargs,
        )

        def padded(p):
            extra = rank - p.rank
            return tf.pad(p.deviations, [[0, 0], [0, extra], [0, 0]])

        mixed.mean.assign(tf.concat([p.mean for p in posteriors], 0))
        mixed.second_moment.assign(tf.concat([p.second_moment for p in posteriors], 0))
        mixed.deviations.assign(tf.concat([padded(p) for p in posteriors], 0))
        mixed.num_deviations.assign(tf.concat([p.num_deviations for p in posteriors], 0))
        return mixed

    def set_state(self, mean, second_moment, deviations, num_deviations, component=0):
        """Sets one component from flat moments and its deviation rows.

        Args:
            mean: `(n,)` running mean of the flattened variables.
            second_moment: `(n,)` running mean of their squares.
            deviations: `(k, n)`, k <= rank, the last deviations, any order.
            num_deviations: k (rows of `deviations` that count).
            component: Which mixture component to set.
        """
        deviations = tf.convert_to_tensor(deviations, "float32")
        rows = tf.pad(deviations, [[0, self.rank - deviations.shape[0]], [0, 0]])
        for store, value in (
            (self.mean, mean),
            (self.second_moment, second_moment),
            (self.deviations, rows),
            (self.num_deviations, float(num_deviations)),
        ):
            store.assign(tf.tensor_scatter_nd_update(store, [[component]], [value]))

    @property
    def random_variables(self):
        weights = self.model.weights
        return [weights[i] for i in self.variable_indices]

    def variance(self):
        """The clamped diagonal `max(E[w^2] - E[w]^2, variance_floor)`, shape `(M, n)`."""
        raw = self.second_moment - tf.square(self.mean)
        return tf.maximum(raw, self.variance_floor)

    def low_rank_factor(self):
        """`D / sqrt(max(k - 1, 1))` per component, shape `(M, K, n)` (unused rows zero)."""
        divisor = tf.sqrt(tf.maximum(self.num_deviations - 1.0, 1.0))
        return self.deviations / divisor[:, None, None]

    def covariance(self, component=0):
        """The dense `(n, n)` covariance of one component's draws (small subsets only).

        `scale * (diag(variance) + D^T D / (k - 1))`.
        """
        factor = self.low_rank_factor()[component]
        low_rank = tf.matmul(factor, factor, transpose_a=True)
        return self.scale * (tf.linalg.diag(self.variance()[component]) + low_rank)

    def weight_samples(self, num_samples, seed):
        m, n = self.num_components, self.num_parameters
        per_component = -(-num_samples // m)
        z = random.normal([per_component, m, n + self.rank], seed)
        diagonal = tf.sqrt(self.variance()) * z[..., :n]
        low_rank = tf.einsum("cmk,mkn->cmn", z[..., n:], self.low_rank_factor())
        draws = self.mean + np.sqrt(self.scale).astype("float32") * (diagonal + low_rank)
        flat = tf.reshape(draws, [per_component * m, n])[:num_samples]
        return split_flat(flat, self.random_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rank": self.rank,
                "variable_indices": self.variable_indices,
                "num_components": self.num_components,
                "scale": self.scale,
                "variance_floor": self.variance_floor,
            }
        )
        return config


def batch_norm_layers(model):
    """The trainable `keras.layers.BatchNormalization` layers of `model` (nested models too).

    Frozen ones run in inference mode in training too, so their statistics
    never depend on the weights drawn.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(batch_norm_layers(layer))
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
    return found


def _batches(data, batch_size):
    size = int(tf.nest.flatten(data)[0].shape[0])
    for start in range(0, size, batch_size):
        rows = slice(start, start + batch_size)
        yield tf.nest.map_structure(lambda a, rows=rows: a[rows], data)


def refresh_batch_norm(model, variables, samples, data, batch_size=128):
    """Batch-norm statistics of `model` recomputed under each weight sample.

    As Maddox et al.'s `bn_update`: the model runs in training mode over
    `data` in batches, and each moving mean and variance becomes the average
    over batches (weighted by batch size) of the batch mean and (biased, as
    Keras's) batch variance of the layer's input. `model` is not changed.

    Args:
        model: A built Keras model.
        variables: Variables of `model` that `samples` replace.
        samples: One `(N, *shape)` array per variable.
        data: Inputs (an array, or the structure `model` takes), all rows.
        batch_size: Rows per forward pass.

    Returns:
        `(statistics, values)`: the moving mean and variance variables of the
        trainable batch-norm layers, and one `(N, *shape)` array per
        statistic.
    """
    layers = batch_norm_layers(model)
    statistics = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    momenta = [layer.momentum for layer in layers for _ in range(2)]
    if any(m >= 1.0 for m in momenta):
        raise ValueError(
            "Batch-norm layers must have momentum < 1 for their statistics to be refreshed."
        )
    trainable = model.trainable_variables
    non_trainable = model.non_trainable_variables
    positions = [next(i for i, v in enumerate(non_trainable) if v is s) for s in statistics]

    @tf.function
    def batch_statistics(trainable_values, non_trainable_values, inputs):
        # Keras updates `moving * momentum + batch * (1 - momentum)`: from zero
        # moving values, the update divided by `1 - momentum` is the batch statistic.
        _, updated = model.stateless_call(
            trainable_values, non_trainable_values, inputs, training=True
        )
        return [updated[p] / (1.0 - m) for p, m in zip(positions, momenta, strict=True)]

    drawn = {id(v): i for i, v in enumerate(variables)}
    zeros = {p: tf.zeros_like(non_trainable[p]) for p in positions}
    base_non_trainable = [zeros.get(i, v.value) for i, v in enumerate(non_trainable)]
    num_samples = int(np.shape(samples[0])[0])
    refreshed = [np.zeros((num_samples, *s.shape), "float64") for s in statistics]
    for s in range(num_samples):
        values = [
            tf.convert_to_tensor(samples[drawn[id(v)]][s], v.dtype) if id(v) in drawn else v.value
            for v in trainable
        ]
        total = 0
        for batch in _batches(data, batch_size):
            rows = int(tf.nest.flatten(batch)[0].shape[0])
            update = batch_statistics(values, base_non_trainable, batch)
            for out, value in zip(refreshed, update, strict=True):
                out[s] += rows * value.numpy()
            total += rows
        for out in refreshed:
            out[s] /= total
    return statistics, [r.astype(s.dtype) for r, s in zip(refreshed, statistics, strict=True)]
