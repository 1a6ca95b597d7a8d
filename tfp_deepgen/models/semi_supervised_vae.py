"""Semi-supervised learning with a VAE: Kingma et al. (2014)'s M2 model."""

import math

import keras
import tensorflow as tf

from tfp_deepgen import _validation
from tfp_deepgen.heads import Categorical, final_head
from tfp_deepgen.models.conditional_vae import ConditionalVAE

__all__ = ["SemiSupervisedVAE", "UNLABELLED"]

#: The label of an example whose class is unknown.
UNLABELLED = -1


@keras.saving.register_keras_serializable(package="tfp_deepgen")
class SemiSupervisedVAE(ConditionalVAE):
    """Kingma et al. (2014)'s M2: a VAE whose class is a partly observed latent.

    Generative model: y ~ Uniform(num_classes), z ~ p(z), x ~ p(x|y, z).
    Inference: a classifier q(y|x) and an encoder q(z|x, y). `fit(x,
    labels)` trains on a mix: `labels` holds class ids, or `UNLABELLED`
    (-1) where the class is unknown (`fit(x)` alone: all unlabelled). Per
    example the loss is

    - labelled: `-L(x, y) + classification_weight * (-log q(y|x))`, with
      `L(x, y) = E_q(z|x,y)[log p(x|y,z) + log p(y)] - beta * KL(q(z|x,y) || p(z))`;
    - unlabelled: `-U(x)`, `U(x) = sum_y q(y|x) (L(x, y) - log q(y|x))`, the
      bound with y summed out (every class is decoded, so a step costs
      `num_classes` VAE passes).

    Logs `loss`, `reconstruction`, `kl` (both under the label, or averaged
    over q(y|x) when unlabelled) and `accuracy` of q(y|x) on the labelled
    examples. Calling the model returns the classifier's logits.

    Kingma et al. weigh the classification term by `alpha = 0.1 N` against
    an objective summed over the N examples, with the term averaged over
    the labelled ones: per labelled example that is
    `classification_weight = 0.1 * N / num_labelled` here.

    Args:
        classifier: Keras model `x -> logits`, ending in a
            `tdg.heads.Categorical(num_classes)` head.
        encoder: Keras model `[x, one-hot y] -> params of q(z|x, y)`.
        decoder: Keras model `[z, one-hot y] -> params of p(x|y, z)`.
        num_classes: Number of classes (taken from the classifier's head
            when None).
        classification_weight: Weight of `-log q(y|x)` per labelled example.
        **kwargs: `prior`, `beta`, `analytic_kl`, `seed` as for
            `tdg.models.VAE`.

    Example:

    >>> import keras, numpy as np, tfp_deepgen as tdg
    >>> head = tdg.heads.Categorical(3)
    >>> classifier = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3), head])
    >>> q, p = tdg.heads.IndependentNormal(2), tdg.heads.IndependentBernoulli(6)
    >>> x_in, z_in, y_in = keras.Input((6,)), keras.Input((2,)), keras.Input((3,))
    >>> joined = keras.layers.Concatenate()([x_in, y_in])
    >>> encoder = keras.Model([x_in, y_in], q(keras.layers.Dense(q.input_size)(joined)))
    >>> joined = keras.layers.Concatenate()([z_in, y_in])
    >>> decoder = keras.Model([z_in, y_in], p(keras.layers.Dense(p.input_size)(joined)))
    >>> m2 = tdg.models.SemiSupervisedVAE(classifier, encoder, decoder, seed=0)
    >>> m2.compile("adam")
    >>> rng = np.random.RandomState(0)
    >>> x = (rng.rand(30, 6) > 0.5).astype("float32")
    >>> labels = np.where(rng.rand(30) < 0.2, rng.randint(3, size=30), -1)
    >>> sorted(m2.fit(x, labels, epochs=1, verbose=0).history)
    ['accuracy', 'kl', 'loss', 'reconstruction']
    >>> tuple(m2.classify(x).shape)
    (30, 3)
    """

    nested_objects = ("classifier", *ConditionalVAE.nested_objects)

    def __init__(
        self,
        classifier,
        encoder,
        decoder,
        num_classes=None,
        classification_weight=1.0,
        **kwargs,
    ):
        head = final_head(classifier, "classifier", (Categorical,))
        if num_classes is not None and num_classes != head.num_classes:
            raise ValueError(
                f"`num_classes` ({num_classes}) must match the classifier head's "
                f"num_classes ({head.num_classes}), or be None."
            )
        if kwargs.get("num_importance_samples", 1) != 1:
            raise ValueError(
                "`num_importance_samples` must be 1 for SemiSupervisedVAE: its bound "
                "sums y out of the ELBO."
            )
        kwargs.pop("num_importance_samples", None)
        super().__init__(encoder, decoder, num_classes=head.num_classes, **kwargs)
        self.classifier = classifier
        self.classifier_head = head
        self.classification_weight = _validation.non_negative_float(
            "classification_weight", classification_weight
        )
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [*super().metrics, self.accuracy_tracker]

    def build(self, input_shape):
        # `(x_shape, labels_shape)`, or the bare `x_shape` of `fit(x)` without labels.
        x_shape = input_shape[0] if isinstance(input_shape[0], (tuple, list)) else input_shape
        if not self.classifier.built:
            self.classifier.build(x_shape)
        super().build((x_shape, (None,)))

    def _unpack(self, inputs):
        if isinstance(inputs, (tuple, list)) and len(inputs) == 2:
            x, labels = inputs
        else:
            x, labels = inputs, None
        x = tf.convert_to_tensor(x)
        if labels is None:
            labels = tf.fill(tf.shape(x)[:1], UNLABELLED)
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank == 2 and labels.shape[-1] == 1:
            labels = labels[:, 0]
        return x, tf.cast(labels, "int32")

    # -- the bound -----------------------------------------------------------

    def _class_bounds(self, x, num_samples, beta, training=False, iwae=False):
        """`L(x, y)` for every class y (log p(y) included), shape `(batch, num_classes)`."""
        k = self.num_classes
        batch = tf.shape(x)[0]
        every_class, classes = self._every_class(x)
        terms = self._bound_terms(
            every_class, num_samples, iwae, beta, training=training, condition=classes
        )
        log_prior = -math.log(k)

        def per_class(t):
            return tf.transpose(tf.reshape(t, [k, batch]))

        return (
            per_class(terms["bound"]) + log_prior,
            per_class(terms["reconstruction"]),
            per_class(terms["kl"]),
            terms["decoder_params"],
        )

    def _every_class(self, x):
        """`x` once per class, class-major `(num_classes * batch, ...)`, and the one-hot classes."""
        k = self.num_classes
        every_class = tf.tile(x, tf.concat([[k], tf.ones([x.shape.rank - 1], tf.int32)], 0))
        return every_class, tf.one_hot(tf.repeat(tf.range(k), tf.shape(x)[0]), k)

    def call(self, inputs, training=None):
        x, labels = self._unpack(inputs)
        logits = self.classifier(x, training=training)
        log_q = tf.nn.log_softmax(logits)
        bound, reconstruction, kl, _ = self._class_bounds(x, 1, self.beta, training)
        labelled = labels >= 0
        label = tf.where(labelled, labels, 0)
        unlabelled_bound = tf.reduce_sum(tf.exp(log_q) * (bound - log_q), -1)
        labelled_loss = -tf.gather(bound, label, batch_dims=1) - (
            self.classification_weight * tf.gather(log_q, label, batch_dims=1)
        )
        self.add_loss(tf.reduce_mean(tf.where(labelled, labelled_loss, -unlabelled_bound)))
        weights = tf.where(labelled[:, None], tf.one_hot(label, self.num_classes), tf.exp(log_q))
        self.reconstruction_tracker.update_state(tf.reduce_sum(weights * reconstruction, -1))
        self.kl_tracker.update_state(tf.reduce_sum(weights * kl, -1))
        labelled_weight = tf.cast(labelled, "float32")
        self.accuracy_tracker.update_state(label, logits, sample_weight=labelled_weight)
        return logits

    # -- public methods ------------------------------------------------------

    def classify(self, x):
        """Class probabilities q(y|x), shape `(batch, num_classes)`."""
        return tf.nn.softmax(self.classifier(x, training=False))

    def elbo(self, x, num_samples=1, batch_size=None):
        """Per-example bound `U(x)` on log p(x), the class summed out under q(y|x)."""
        bound = self._evaluate_every_class(x, num_samples, batch_size, iwae=False)
        log_q = tf.nn.log_softmax(self.classifier(x, training=False))
        return tf.reduce_sum(tf.exp(log_q) * (bound - log_q), -1)

    def log_likelihood(self, x, num_samples=1000, batch_size=None):
        """Estimate of log p(x) = log sum_y p(y) p(x|y), each p(x|y) importance-sampled."""
        bound = self._evaluate_every_class(x, num_samples, batch_size, iwae=True)
        return tf.reduce_logsumexp(bound, -1)

    def _evaluate_every_class(self, x, num_samples, batch_size, iwae):
        """`L(x, y)` for every class, shape `(n, num_classes)`, a batch of x at a time."""
        x = tf.convert_to_tensor(x)
        n, k = int(x.shape[0]), self.num_classes
        if batch_size is None:
            batch_size = max(1, 2**16 // (num_samples * k))
        batch_size = _validation.positive_int("batch_size", batch_size)
        parts = []
        for start in range(0, n, batch_size):
            batch = x[start : start + batch_size]
            size = int(batch.shape[0])
            every_class, classes = self._every_class(batch)
            bound = self._evaluate_bound(every_class, num_samples, size * k, iwae, classes)
            parts.append(tf.transpose(tf.reshape(bound, [k, size])))
        return tf.concat(parts, 0) - math.log(k) if parts else tf.zeros([0, k])

    # -- serving -------------------------------------------------------------

    def serving_endpoints(self, num_samples):
        """`{name: (function, input_signature, output names)}` for `tdg.export`.

        `serving_default` and `classify`: `x` -> `probabilities` and `label`
        (the most probable class); `log_likelihood`: `x` -> log p(x) with y
        summed out; and `encode`, `decode`, `generate`, `reconstruct` taking
        int32 `labels` as for `ConditionalVAE`.
        """
        endpoints = super().serving_endpoints(num_samples)
        x_spec, _ = self._data_specs()

        def classify(x):
            probabilities = self.classify(x)
            return {"probabilities": probabilities, "label": tf.argmax(probabilities, -1)}

        def log_likelihood(x):
            bound, _, _, _ = self._class_bounds(x, num_samples, beta=1.0, iwae=True)
            return {"log_likelihood": tf.reduce_logsumexp(bound, -1)}

        classification = (classify, [x_spec], ("probabilities", "label"))
        endpoints.update(
            serving_default=classification,
            classify=classification,
            log_likelihood=(log_likelihood, [x_spec], ("log_likelihood",)),
        )
        return endpoints

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        del config["num_importance_samples"]
        config["classifier"] = keras.saving.serialize_keras_object(self.classifier)
        config["classification_weight"] = self.classification_weight
        return config
