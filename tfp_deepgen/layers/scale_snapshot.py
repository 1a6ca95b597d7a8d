"""Copies of the posterior scales that Monte-Carlo passes read instead of computing them.

Example:

>>> import keras, tfp_deepgen as tdg
>>> model = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(2)])
>>> snapshot = tdg.layers.PosteriorScaleSnapshot(model)
>>> with snapshot.active():
...     outputs = model(keras.ops.ones((1, 3)))
"""

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen._untracked import Untracked
from tfp_deepgen.layers.base import inference_state, stochastic_layers
from tfp_deepgen.layers.linear import VariationalLinear

__all__ = ["PosteriorScaleSnapshot"]


class PosteriorScaleSnapshot(keras.layers.Layer):
    """Copies of the posterior scales that Monte-Carlo passes can read instead.

    A scale is computed from its variable (`exp(log_scale)` for a mean-field
    posterior) for every weight on each call, because the weights may change;
    for a few hundred thousand weights that is about half the matmuls of a
    one-example batch. When
    the weights are fixed (a SavedModel, one `predictive.predict` call), take a
    snapshot: non-trainable variables holding the scales, refreshed with
    `refresh()`, and read by every variational layer of `model` while
    `active()` (it is then the `posterior_scales` of their inference state).
    Trace the Monte-Carlo pass inside `active()`.

    With `track_changes=True` the snapshot also keeps a copy of each
    untransformed scale variable, and `refresh_if_stale()`, called inside a
    traced function, recomputes exactly the scales whose variables changed:
    a comparison per call instead of a transform (twice the memory of the
    scale variables).

    Args:
        model: A built Keras model or layer.
        track_changes: Whether `refresh_if_stale()` is available.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> model = keras.Sequential([keras.Input((3,)), tdg.layers.DenseFlipout(2)])
    >>> snapshot = tdg.layers.PosteriorScaleSnapshot(model)
    >>> with snapshot.active():
    ...     scale, _ = model.layers[0].posterior_scales()
    >>> scale is snapshot.weights[0]
    True
    """

    def __init__(self, model, track_changes=False, **kwargs):
        super().__init__(**kwargs)
        self.track_changes = _validation.boolean("track_changes", track_changes)
        copies_by_layer, entries = {}, []
        for layer in stochastic_layers(model):
            if not isinstance(layer, VariationalLinear):
                continue
            if layer.kernel_posterior_params.scale_depends_on_loc:
                continue  # its scale moves with the means; computed per call
            copies = []
            for part in ("kernel", "bias"):
                posterior = getattr(layer, f"{part}_posterior_params")
                if posterior is None:
                    copies.append(None)
                    continue
                copy = self._copy_of(posterior, f"{layer.name}_{part}_scale")
                source = None
                if track_changes:
                    source = self._copy_of(posterior, f"{layer.name}_{part}_untransformed")
                copies.append(copy)
                entries.append((posterior, copy, source))
            copies_by_layer[id(layer)] = (layer, tuple(copies))
        # Untracked: the layers are not the snapshot's own.
        self._copies_by_layer = Untracked(copies_by_layer)
        self._entries = Untracked(entries)
        self.built = True
        self.refresh()

    def _copy_of(self, posterior, name):
        return self.add_weight(
            name=name,
            shape=posterior.shape,
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
        )

    def scales_of(self, layer):
        """`(kernel scale copy, bias scale copy or None)` of `layer`, or None if not held."""
        held = self._copies_by_layer.value.get(id(layer))
        if held is None or held[0] is not layer:
            return None
        return held[1]

    def refresh(self):
        """Copies the current scales into the snapshot."""
        for posterior, copy, source in self._entries.value:
            copy.assign(posterior.scale())
            if source is not None:
                source.assign(posterior.untransformed_scale)

    def refresh_if_stale(self):
        """Recomputes the scales whose variables changed since the last refresh.

        Call it inside the traced function, before the Monte-Carlo pass.
        """
        if not self.track_changes:
            raise ValueError("`refresh_if_stale` needs a snapshot made with track_changes=True.")
        entries = self._entries.value
        if not entries:
            return
        currents = [
            tf.convert_to_tensor(posterior.untransformed_scale) for posterior, _, _ in entries
        ]
        changed = [
            tf.reduce_any(tf.not_equal(current, source))
            for current, (_, _, source) in zip(currents, entries, strict=True)
        ]

        def refresh_changed():
            for flag, current, (posterior, copy, source) in zip(
                changed, currents, entries, strict=True
            ):

                def update(posterior=posterior, copy=copy, source=source, current=current):
                    copy.assign(posterior.scale())
                    source.assign(current)
                    return tf.constant(True)

                tf.cond(flag, update, lambda: tf.constant(False))
            return tf.constant(True)

        # One branch for the common case (nothing changed). An integer index,
        # not a boolean: XLA turns a boolean conditional whose branches are
        # elementwise into a select, which computes every scale and rewrites
        # every copy on each call.
        any_changed = tf.reduce_any(tf.stack(changed))
        tf.switch_case(
            tf.cast(any_changed, tf.int32), [lambda: tf.constant(False), refresh_changed]
        )

    def active(self):
        """A context in which the model's layers read their scales from the snapshot.

        It sets the `posterior_scales` of their `tdg.layers.InferenceState`.
        """
        layers = [layer for layer, _ in self._copies_by_layer.value.values()]
        return inference_state(layers, posterior_scales=self)
