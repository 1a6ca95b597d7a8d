"""`DeepEnsemble`: M independently initialised networks trained together, predicting as a mixture.

Lakshminarayanan et al. (2017). `DeepEnsemble(build_fn, members=M)` calls
`build_fn()` M times at construction; each call must return a built Keras
model ending in a `tfp_deepgen.heads` head, all with the same architecture.
The ensemble is a `keras.Model`: `ensemble.compile(optimizer, loss)` and
`ensemble.fit(x, y)` train every member on the same batches, the training
loss being the sum of the members' own losses (so each member's gradient is
its own loss's; `fit` logs each as `member_m_loss`, and compiled metrics
over the members' outputs stacked along the batch, i.e. their average).
Its saved config holds the members' configs, not `build_fn`: a `.keras`
file loads with `safe_mode=True` without the function.

It subclasses `WeightPosterior` with the members as the weight "samples":
in a Monte-Carlo pass of S copies (`tdg.predictive.predict(ensemble, x,
num_samples=S)`), copy s runs member `s mod M` (all members in one
vectorised `stateless_call` of member 0's graph). Ask `num_samples=M` (or a
multiple) for the exact equal mixture. Outside a Monte-Carlo pass a call
answers with member 0; so does `sampling_mode(ensemble, "mean")` (an
ensemble has no mean weights; `ensemble.model` is member 0).

Adversarial training (`adversarial_epsilon`): each member m also trains on
fast-gradient-sign examples `x' = x + eps * sign(grad_x loss_m(x, y))`,
`eps = adversarial_epsilon * (max(x) - min(x))` per input feature (last
axis) over the training batch, and minimises `(loss_m(x) + loss_m(x')) / 2`:
the paper's `loss(x) + loss(x')` halved, which keeps the loss on the scale
of plain training and counts regularisation losses once. The paper uses
`adversarial_epsilon=0.01`. With several inputs (a dict or list) every
floating-point input is perturbed by its own gradient's sign; integer inputs
(token ids) are left as they are. It costs a second forward and backward
pass per member; evaluation reports the clean loss.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> def build():
...     head = tdg.heads.IndependentNormal(scale=1.0)
...     return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
>>> ensemble = tdg.inference.DeepEnsemble(build, members=3, seed=0)
>>> ensemble.compile("adam", loss=tdg.heads.final_head(ensemble).loss)
>>> x = np.ones((8, 2), "float32")
>>> _ = ensemble.fit(x, np.zeros((8, 1), "float32"), epochs=1, verbose=0)
>>> tdg.predictive.predict(ensemble, x, num_samples=3)["mean"].shape
(8, 1)
"""

import copy
import random

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import final_head
from tfp_deepgen.inference.weight_posterior import WeightPosterior

__all__ = ["DeepEnsemble"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class DeepEnsemble(WeightPosterior):
    """An ensemble of M independently initialised members, predicting as their mixture.

    Args:
        build_fn: A callable with no arguments returning a new built Keras
            model ending in a `tfp_deepgen.heads` head (used at construction
            only; not saved).
        members: M, the number of members.
        adversarial_epsilon: None (plain training) or a positive fraction of
            each input feature's batch range: the fast-gradient-sign step.
        seed: Integer seed, or None. When given, member m is built with
            Python's `random` and NumPy's global generator seeded from
            `(seed, m)` (Keras draws unseeded initialisers' seeds from
            Python's `random`), restored afterwards, so members differ and
            the ensemble is reproducible.
        member_configs: The members' serialized configs (what `from_config`
            passes instead of `build_fn`).
        **kwargs: `name` and the other arguments of `keras.Model`.

    Raises:
        ValueError: When `build_fn` returns a model without a head, members
            of different architectures, or identical members (initialisers
            with fixed seeds).
    """

    def __init__(
        self,
        build_fn=None,
        members=5,
        adversarial_epsilon=None,
        seed=None,
        member_configs=None,
        **kwargs,
    ):
        num_members = _validation.positive_int("members", members)
        if adversarial_epsilon is not None:
            adversarial_epsilon = _validation.positive_float(
                "adversarial_epsilon", adversarial_epsilon
            )
        seed = _validation.seed("seed", seed, non_negative=True)
        if member_configs is not None:
            built = [
                keras.saving.deserialize_keras_object(copy.deepcopy(c)) for c in member_configs
            ]
            if len(built) != num_members:
                raise ValueError(
                    f"`member_configs` must hold `members`={num_members} configs; "
                    f"received {len(built)}."
                )
        elif callable(build_fn):
            built = [_build_member(build_fn, seed, m) for m in range(num_members)]
        else:
            raise ValueError(
                "`build_fn` must be a callable returning a built Keras model ending in a "
                f"tfp_deepgen head; received {build_fn!r}."
            )
        for m, member in enumerate(built):
            if not isinstance(member, keras.Model) or not member.built:
                raise ValueError(
                    f"`build_fn` must return a built Keras model (start it with keras.Input); "
                    f"member {m} is {member!r}."
                )
            final_head(member, argument="build_fn()")
        shapes = [[tuple(v.shape) for v in member.weights] for member in built]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(
                "`build_fn` must return members of one architecture (the same weight "
                f"shapes); received {shapes}."
            )
        if member_configs is None and num_members > 1 and _identical(built[0], built[1]):
            raise ValueError(
                "`build_fn` returned identically initialised members: leave the layers' "
                "initializer seeds unset (None) so that each member draws its own."
            )
        super().__init__(built[0], seed=seed, **kwargs)
        self.num_members = num_members
        self.adversarial_epsilon = adversarial_epsilon
        self.members = built  # member 0 is also `self.model`; the last leads to a head
        # Names of the training outputs: fit logs each member's loss as `member_m_loss`.
        self.output_names = [f"member_{m}" for m in range(num_members)]

    # -- the posterior -----------------------------------------------------------

    @property
    def random_variables(self):
        return self.model.weights

    def weight_samples(self, num_samples, seed):
        del seed  # copies cycle through the members
        index = tf.range(num_samples) % self.num_members
        return [
            tf.gather(tf.stack([member.weights[k].value for member in self.members]), index)
            for k in range(len(self.model.weights))
        ]

    def member_outputs(self, inputs, training=False):
        """Each member's head parameters on `inputs`: a list of M tensors."""
        return [member(inputs, training=training) for member in self.members]

    # -- training ----------------------------------------------------------------

    def call(self, inputs, training=False):
        if training:
            return self.member_outputs(inputs, training=True)
        return super().call(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum over members of each member's loss on the batch (plus added losses, once)."""
        if not (isinstance(y_pred, list) and len(y_pred) == self.num_members):
            y_pred = self.member_outputs(x, training=training)
        targets = [y] * self.num_members
        weights = None if sample_weight is None else [sample_weight] * self.num_members
        if not training or self.adversarial_epsilon is None:
            return super().compute_loss(x, targets, y_pred, weights, training=training)
        copies = [tf.nest.map_structure(tf.identity, x) for _ in self.members]
        with tf.GradientTape() as tape:
            tape.watch([t for t in tf.nest.flatten(copies) if t.dtype.is_floating])
            clean = [
                member(c, training=True) for member, c in zip(self.members, copies, strict=True)
            ]
            clean_loss = super().compute_loss(x, targets, clean, weights, training=training)
        # The total's gradient with respect to member m's copy is member m's own.
        gradients = tape.gradient(clean_loss, copies)
        perturbed = [
            tf.nest.map_structure(self.adversarial_examples, c, g)
            for c, g in zip(copies, gradients, strict=True)
        ]
        adversarial = [
            member(p, training=True) for member, p in zip(self.members, perturbed, strict=True)
        ]
        adversarial_loss = super().compute_loss(x, targets, adversarial, weights, training=training)
        return 0.5 * (clean_loss + adversarial_loss)

    def adversarial_examples(self, x, gradient):
        """`x + eps * sign(gradient)`, `eps` = `adversarial_epsilon` x feature batch range.

        An input without a gradient (integer ids, an input the loss does not
        reach) is returned as it is.
        """
        x = tf.convert_to_tensor(x)
        if gradient is None or not x.dtype.is_floating:
            return x
        axes = list(range(len(x.shape) - 1))
        spread = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
        step = tf.cast(self.adversarial_epsilon, x.dtype) * spread * tf.sign(gradient)
        return tf.stop_gradient(x + step)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics over all members: their outputs stacked along the batch axis.

        A metric that averages over examples (accuracy, MAE) is so the
        members' average.
        """
        if not (isinstance(y_pred, list) and len(y_pred) == self.num_members):
            y_pred = self.member_outputs(x)
        stack = lambda t: None if t is None else tf.concat([t] * self.num_members, 0)  # noqa: E731
        return super().compute_metrics(
            x, tf.nest.map_structure(stack, y), tf.concat(y_pred, 0), stack(sample_weight)
        )

    # -- serialization -------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "members": self.num_members,
            "adversarial_epsilon": self.adversarial_epsilon,
            "seed": self.seed,
            "member_configs": [keras.saving.serialize_keras_object(m) for m in self.members],
        }

    @classmethod
    def from_config(cls, config):
        return cls(**copy.deepcopy(config))


def _build_member(build_fn, seed, index):
    """`build_fn()`, with Python's and NumPy's global generators seeded from `(seed, index)`."""
    if seed is None:
        return build_fn()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    member_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    random.seed(member_seed)
    np.random.seed(member_seed)
    try:
        return build_fn()
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _identical(first, second):
    """Whether two models' random (non-constant) weights are all equal."""
    pairs = [
        (a, b)
        for a, b in zip(first.weights, second.weights, strict=True)
        if np.ptp(np.asarray(a.numpy())) > 0
    ]
    return bool(pairs) and all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
