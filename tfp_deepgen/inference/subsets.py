"""Which weights of a trained model a posterior is over.

A post-hoc posterior (Laplace, SWAG, SGLD samples, HMC) can cover every
trainable weight of a model (`"all"`) or only the weights of its last layer
with weights (`"last_layer"`: the layer that feeds the head), the others kept
at their trained values.

Example:

>>> import keras, tfp_deepgen as tdg
>>> head = tdg.heads.IndependentNormal()
>>> layers = [keras.layers.Dense(4), keras.layers.Dense(head.input_size), head]
>>> model = keras.Sequential([keras.Input((3,)), *layers])
>>> [v.name for v in posterior_variables(model, "last_layer")]
['kernel', 'bias']
>>> tuple(posterior_variables(model, "last_layer")[0].shape)
(4, 2)
"""

import keras

from tfp_deepgen import _validation

__all__ = ["SUBSETS", "last_weighted_layer", "posterior_variables"]

SUBSETS = ("all", "last_layer")


def _layers_in_order(model):
    """The layers of `model` that hold no other layers, in call order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_layers_in_order(layer))
        else:
            found.append(layer)
    return found


def last_weighted_layer(model):
    """The last layer of `model` with trainable weights (nested models looked into).

    Raises:
        ValueError: When `model` has no trainable weights.
    """
    for layer in reversed(_layers_in_order(model)):
        if layer.trainable_weights:
            return layer
    raise ValueError(
        f"`model` {model.name!r} has no trainable weights; a weight posterior needs a "
        "trained model with weights (build it first, e.g. with keras.Input)."
    )


def posterior_variables(model, subset="all"):
    """The trainable variables of `model` a posterior of `subset` is over.

    Args:
        model: A built Keras model.
        subset: `"all"` (every trainable variable) or `"last_layer"`.

    Returns:
        A list of `keras.Variable`s, in `model.trainable_variables` order.
    """
    _validation.one_of("subset", subset, SUBSETS)
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"`model` {model.name!r} must be built and have trainable weights; start it "
            "with keras.Input(shape) or call it once on a batch."
        )
    if subset == "all":
        return list(model.trainable_variables)
    chosen = {id(v) for v in last_weighted_layer(model).trainable_weights}
    return [v for v in model.trainable_variables if id(v) in chosen]
