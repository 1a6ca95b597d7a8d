"""Monte-Carlo predictive distribution of a model, usually one that ends in a head.

`p(y | x) ~= 1/S sum_s p(y | NN(x; W_s))` with `W_s` independent posterior
samples, computed in one graph: the batch is stacked `S` times and run once
under one `tfp_deepgen.layers.inference_state`.

`MonteCarloPredictive(model, ...)` is the predictive as an object: call it
inside your own `tf.function`, or use its `predict` method, which compiles
and keeps one function per set of outputs. The function `predict` does the
same with a predictive it keeps per model and settings (held weakly: it goes
away with the model).

The package's modules, one idea each:

- `monte_carlo`: `MonteCarloPredictive` and `predict`.
- `inputs`: checks the inputs `x` against the model's and converts them.
- `summaries`: the summaries of the samples, for classifiers and for
  continuous and count heads.
- `quantiles`: quantiles of the equal-weight mixture over samples.

Example:

>>> import keras, numpy as np, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal()
>>> model = keras.Sequential(
...     [keras.Input((3,)), tdg.layers.DenseFlipout(head.input_size, seed=0), head]
... )
>>> out = tdg.predictive.predict(model, np.ones((5, 3), "float32"), num_samples=8)
>>> out["mean"].shape, out["quantiles"].shape, out["samples"].shape
((5, 1), (5, 3, 1), (5, 8, 1))
"""

from tfp_deepgen.predictive.monte_carlo import DEFAULT_QUANTILES as DEFAULT_QUANTILES
from tfp_deepgen.predictive.monte_carlo import MonteCarloPredictive, predict

__all__ = ["MonteCarloPredictive", "predict"]
