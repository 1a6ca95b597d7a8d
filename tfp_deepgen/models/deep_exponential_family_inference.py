"""Inference and evaluation of a fitted Deep Exponential Family.

`DocumentInference` is a mixin of `tdg.models.DeepExponentialFamily`: what a
fitted model tells about documents (`transform`, with optional per-document
refinement of q), about its weights (`weight_means`, `components`), the
bounds and scores to compare models by (`elbo`, `log_likelihood`,
`perplexity`), and the functions `tdg.export` serves.

Example:

>>> import numpy as np, tfp_deepgen as tdg
>>> counts = np.random.RandomState(0).poisson(2.0, (32, 12)).astype("float32")
>>> model = tdg.models.DeepExponentialFamily([3], encoder_units=[8], seed=0)
>>> model.compile("adam")
>>> _ = model.fit(counts, epochs=1, verbose=0)
>>> [tuple(top.shape) for top in model.components(top_n=2)]
[(3, 2)]
>>> float(model.perplexity(counts[:4], counts[4:8])) > 1.0
True
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.layers.base import sampling_states
from tfp_deepgen.models import variational_families as vf
from tfp_deepgen.models._batches import in_batches

__all__ = ["DocumentInference"]


class DocumentInference:
    """Posterior summaries, evaluation bounds and serving of a `DeepExponentialFamily`.

    Expects of the host model: the encoder (`_posterior_raw`), the ELBO
    pieces (`_terms`), the weights' q (`_weight_draws`), the observation
    model (`_observation_parameter`) and the data checks of `DocumentData`.
    """

    def transform(self, x, inference_steps=0):
        """Posterior mean of each latent layer given `x`: a list, bottom layer first.

        Args:
            x: Data, shape `(documents, columns)`.
            inference_steps: Steps of per-document optimization of q after the
                encoder's guess (see `perplexity`); 0 uses the encoder alone.
        """
        x = self._checked(x, "x")
        return [vf.mean(self.latent, raw) for raw in self._local_posterior(x, inference_steps)]

    def _local_posterior(self, x, inference_steps):
        """q's raw parameters for `x`: the encoder's, refined for `inference_steps` steps."""
        if (
            isinstance(inference_steps, bool)
            or not isinstance(inference_steps, numbers.Integral)
            or inference_steps < 0
        ):
            raise ValueError(
                f"`inference_steps` must be an integer >= 0. Received: "
                f"inference_steps={inference_steps!r}"
            )
        if not self.built:
            self.build(tuple(x.shape))
        raws = self._posterior_raw(x)
        if inference_steps == 0:
            return raws
        return self._refine(x, raws, int(inference_steps))

    def _refine(self, x, raws, steps, learning_rate=0.05, num_samples=8):
        """Per-document q parameters optimized by Adam on each document's ELBO.

        Starts from the encoder's output (semi-amortized inference, Kim et al.
        2018), with the weights at their posterior mean: it closes the gap
        between the encoder's guess and the best q for each document, which
        is widest for inputs unlike the training documents (such as the
        observed halves of document completion).
        """
        if not self.reparameterized:
            raise ValueError(
                f"`inference_steps` needs reparameterized latents (gamma or normal); this "
                f"model has latent={self.latent!r}."
            )
        variables = [[keras.Variable(part, trainable=True) for part in raw] for raw in raws]
        flat = [v for raw in variables for v in raw]
        optimizer = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                current = [[tf.convert_to_tensor(v) for v in raw] for raw in variables]
                terms = self._terms(
                    x, num_samples, sample_weights=False, raws=current, weights_share=False
                )
                objective = tf.reduce_sum(terms["surrogate"])
            gradients = tape.gradient(objective, flat)
            optimizer.apply_gradients(zip([-g for g in gradients], flat, strict=True))

        for _ in range(steps):
            step()
        return [[tf.convert_to_tensor(v) for v in raw] for raw in variables]

    def weight_means(self):
        """Posterior means (or point estimates) of the weight matrices, bottom first.

        Entry 0 has shape `(layer_sizes[0], num_columns)`, entry l
        `(layer_sizes[l], layer_sizes[l - 1])`.
        """
        draws, _ = self._weight_draws(sample=False)
        return [draw.value for draw in draws]

    def components(self, top_n=10, vocabulary=None):
        """The observation columns (e.g. words) each unit of each layer weighs most.

        A unit of layer 1 is its row of E[W_0]; a unit of layer l is its row
        of the product E[W_{l-1}] ... E[W_0], its expected effect on the data.

        Args:
            top_n: How many columns per unit.
            vocabulary: Optional names of the columns; then names are returned.

        Returns:
            A list over layers of arrays `(units, top_n)` of column indices
            (or lists of names), largest first.
        """
        top_n = _validation.positive_int("top_n", top_n)
        if vocabulary is not None and len(vocabulary) != self.num_columns:
            raise ValueError(
                f"`vocabulary` must name all {self.num_columns} columns; it has "
                f"{len(vocabulary)} entries."
            )
        means = [np.asarray(w) for w in self.weight_means()]
        effect, result = None, []
        for weights in means:
            effect = weights if effect is None else weights @ effect
            top = np.argsort(-effect, axis=1)[:, :top_n]
            if vocabulary is not None:
                top = [[vocabulary[i] for i in row] for row in top]
            result.append(top)
        return result

    def elbo(self, x, num_samples=1, batch_size=None):
        """Per-document ELBO, the weights' KL share included, with weights drawn from q."""
        self._require_num_examples("elbo")
        return self._evaluate(x, num_samples, batch_size, "elbo")

    def log_likelihood(self, x, num_samples=1000, batch_size=None):
        """Importance-sampled log p(x | W) per document at the weights' posterior mean.

        `log (1/k) sum_i p(x, z_i | W) / q(z_i | x)` with k = `num_samples`
        draws from the encoder's q: a lower bound in expectation that
        tightens as k grows.
        """
        return self._evaluate(x, num_samples, batch_size, "log_likelihood")

    def perplexity(
        self, x_observed, x_heldout, num_samples=100, inference_steps=0, batch_size=None
    ):
        """Held-out perplexity by document completion (Poisson observations).

        q(z | x_observed) comes from the encoder, or with `inference_steps`
        > 0 from that many Adam steps (learning rate 0.05, 8 draws) on each
        document's ELBO starting there; each held-out word's probability is
        `E_q[rate_v / sum_w rate_w]`, averaged over `num_samples` draws of z
        at the weights' posterior mean. Returns
        `exp(-sum log p(held-out words) / number of held-out words)`.

        An encoder trained on whole documents sees only halves here; a few
        hundred inference steps close most of that gap (gamma and normal
        latents).
        """
        if self.observation != "poisson":
            raise ValueError(
                "`perplexity` needs word counts (observation='poisson'); this model has "
                f"observation={self.observation!r}."
            )
        x_observed = self._checked(x_observed, "x_observed")
        x_heldout = self._checked(x_heldout, "x_heldout")
        if x_observed.shape != x_heldout.shape:
            raise ValueError(
                f"`x_observed` and `x_heldout` must have the same shape; got "
                f"{tuple(x_observed.shape)} and {tuple(x_heldout.shape)}."
            )
        if inference_steps:
            raws = self._local_posterior(x_observed, inference_steps)
            _validation.positive_int("num_samples", num_samples)
            log_probs = self._heldout_log_prob(x_observed, x_heldout, num_samples, raws)
        else:
            log_probs = self._evaluate(
                x_observed, num_samples, batch_size, "heldout", extra=x_heldout
            )
        total = tf.reduce_sum(x_heldout)
        return tf.exp(-tf.reduce_sum(log_probs) / total)

    def _heldout_log_prob(self, x_observed, x_heldout, num_samples, raws=None):
        """Per-document log p(held-out words | observed words)."""
        terms = self._terms(
            x_observed, num_samples, sample_weights=False, raws=raws, weights_share=False
        )
        log_rate = self._observation_parameter(terms["draws"][0], terms["weights"])
        word_probs = tf.reduce_mean(tf.nn.softmax(log_rate, -1), 0)
        return tf.reduce_sum(x_heldout * tf.math.log(word_probs + 1e-30), -1)

    def _evaluate(self, x, num_samples, batch_size, kind, extra=None):
        num_samples = _validation.positive_int("num_samples", num_samples)
        if batch_size is None:
            batch_size = max(1, 2**14 // num_samples)
        batch_size = _validation.positive_int("batch_size", batch_size)
        x = self._checked(x, "x")
        if not self.built:
            self.build(tuple(x.shape))
        if getattr(self, "_evaluation_graph", None) is None:
            # `sampling` only keys the trace: one per sampling state, which a
            # trace fixes (draws, or posterior means inside `sampling_mode`).
            def evaluate(x, extra, num_samples, kind, sampling):
                if kind == "heldout":
                    return self._heldout_log_prob(x, extra, num_samples)
                if kind == "elbo":
                    terms = self._terms(x, num_samples)
                    return tf.reduce_mean(terms["elbo"], 0) - terms["weights_kl"]
                terms = self._terms(x, num_samples, sample_weights=False, weights_share=False)
                return tf.reduce_logsumexp(terms["elbo"], 0) - math.log(num_samples)

            self._evaluation_graph = tf.function(evaluate, jit_compile=True, reduce_retracing=True)
        sampling = sampling_states(self)
        return in_batches(self._evaluation_graph, x, extra, batch_size, num_samples, kind, sampling)

    # -- serving -------------------------------------------------------------

    def serving_endpoints(self, num_samples):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        - `transform` and `serving_default`: `x` -> `layer_1` ... `layer_L`,
          the posterior mean of each latent layer.
        - `perplexity` (Poisson observations): `x_observed`, `x_heldout` ->
          per document `log_prob` (of the held-out words, from `num_samples`
          draws), `num_words` and `perplexity`.
        """
        num_samples = _validation.positive_int("num_samples", num_samples)
        if not self.built:
            raise ValueError("Fit or build the model before exporting it.")
        spec = tf.TensorSpec((None, self.num_columns), tf.float32, name="x")
        layer_names = tuple(f"layer_{i + 1}" for i in range(len(self.layer_sizes)))

        def transform(x):
            means = [vf.mean(self.latent, raw) for raw in self._posterior_raw(x)]
            return dict(zip(layer_names, means, strict=True))

        endpoints = {
            "serving_default": (transform, [spec], layer_names),
            "transform": (transform, [spec], layer_names),
        }
        if self.observation == "poisson":

            def perplexity(x_observed, x_heldout):
                log_prob = self._heldout_log_prob(x_observed, x_heldout, num_samples)
                num_words = tf.reduce_sum(x_heldout, -1)
                return {
                    "log_prob": log_prob,
                    "num_words": num_words,
                    "perplexity": tf.exp(-log_prob / tf.maximum(num_words, 1.0)),
                }

            endpoints["perplexity"] = (
                perplexity,
                [
                    tf.TensorSpec((None, self.num_columns), tf.float32, name="x_observed"),
                    tf.TensorSpec((None, self.num_columns), tf.float32, name="x_heldout"),
                ],
                ("log_prob", "num_words", "perplexity"),
            )
        return endpoints
