"""`CyclicalStepSize`: the cosine cyclical step size of cSGLD (Zhang et al. 2020).

"Cyclical Stochastic Gradient MCMC for Bayesian Deep Learning" (Zhang, Li,
Zhang, Chen and Wilson, ICLR 2020) splits training into cycles of
`steps_per_cycle` optimizer steps. Within a cycle the step size falls from
`initial_learning_rate` to 0 along a cosine (eq. 1 of the paper, with the
0-based step `k` Keras passes):

    learning_rate(k) = initial_learning_rate / 2 * (cos(pi * (k mod C) / C) + 1)

The first `exploration_fraction` of each cycle is the *exploration* stage
(large steps, no noise: SGD that moves to a new mode); the rest is the
*sampling* stage, where `tdg.inference.SGLD` / `pSGLD` add their Langevin
noise and `tdg.inference.CollectSamples` keeps samples (by default one, at
the end of each cycle). Under any other optimizer the schedule is an ordinary
cosine-with-restarts learning rate.

Example:

>>> import tfp_deepgen as tdg
>>> schedule = tdg.inference.CyclicalStepSize(0.1, steps_per_cycle=4)
>>> [round(float(schedule(k)), 4) for k in range(5)]
[0.1, 0.0854, 0.05, 0.0146, 0.1]
>>> [schedule.is_sampling_step(k) for k in range(5)]
[False, False, True, True, False]
"""

import math
import numbers

import keras
import tensorflow as tf

from tfp_deepgen import _validation

__all__ = ["CyclicalStepSize"]


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class CyclicalStepSize(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine cyclical step size with an exploration and a sampling stage.

    Args:
        initial_learning_rate: The step size at the start of each cycle, > 0.
        steps_per_cycle: C, optimizer steps per cycle (a positive integer).
        exploration_fraction: Fraction of each cycle, in [0, 1), spent
            exploring (no Langevin noise, no samples): the first
            `ceil(exploration_fraction * C)` steps of each cycle. 0 makes
            every step a sampling step. Default 0.5.
        name: The schedule's name.

    Example:

    >>> import keras, tfp_deepgen as tdg
    >>> schedule = tdg.inference.CyclicalStepSize(1e-3, steps_per_cycle=100)
    >>> optimizer = tdg.inference.SGLD(learning_rate=schedule, data_size=1000, seed=0)
    >>> keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).learning_rate.numpy()
    np.float32(0.001)
    """

    def __init__(
        self,
        initial_learning_rate,
        steps_per_cycle,
        exploration_fraction=0.5,
        name="CyclicalStepSize",
    ):
        super().__init__()
        self.initial_learning_rate = _validation.positive_float(
            "initial_learning_rate", initial_learning_rate
        )
        self.steps_per_cycle = _validation.positive_int("steps_per_cycle", steps_per_cycle)
        if (
            isinstance(exploration_fraction, bool)
            or not isinstance(exploration_fraction, numbers.Real)
            or not 0 <= exploration_fraction < 1
        ):
            raise ValueError(
                "`exploration_fraction` must be a number in [0, 1). "
                f"Received: exploration_fraction={exploration_fraction!r}"
            )
        self.exploration_fraction = float(exploration_fraction)
        # The first sampling step of a cycle; the tolerance keeps 0.3 * 10 at 3.
        self.exploration_steps = math.ceil(self.exploration_fraction * self.steps_per_cycle - 1e-9)
        if self.exploration_steps >= self.steps_per_cycle:
            raise ValueError(
                "`exploration_fraction` must leave at least one sampling step per cycle "
                f"(exploration_fraction * steps_per_cycle <= {self.steps_per_cycle - 1}). "
                f"Received: exploration_fraction={exploration_fraction!r} with "
                f"steps_per_cycle={self.steps_per_cycle}"
            )
        self.name = name

    def cycle_position(self, step):
        """`(k mod C) / C` in [0, 1) for the 0-based step `k` (a tensor)."""
        step = tf.cast(step, tf.int64)
        return tf.cast(step % self.steps_per_cycle, tf.float32) / float(self.steps_per_cycle)

    def __call__(self, step):
        position = self.cycle_position(step)
        return self.initial_learning_rate / 2.0 * (tf.cos(math.pi * position) + 1.0)

    def sampling(self, step):
        """Whether 0-based step `step` is in a sampling stage: a boolean tensor.

        Step `k` samples when `k mod C >= ceil(exploration_fraction * C)`.
        """
        return tf.cast(step, tf.int64) % self.steps_per_cycle >= self.exploration_steps

    def is_sampling_step(self, step):
        """`sampling` for a Python integer step, as a Python bool (for callbacks)."""
        return int(step) % self.steps_per_cycle >= self.exploration_steps

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_cycle": self.steps_per_cycle,
            "exploration_fraction": self.exploration_fraction,
            "name": self.name,
        }
