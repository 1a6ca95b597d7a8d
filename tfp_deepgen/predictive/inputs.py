"""Checking the inputs `x` of a predictive against the model's, and converting them.

`checked_inputs(model, x, convert)` brings `x` into the structure of inputs
`model` takes (one array, or a dict, list or tuple of them), builds an
unbuilt model from it, and fails early with the shape received and the shape
expected, instead of an error from deep inside the stacked Monte-Carlo batch.
"""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["checked_inputs"]


def checked_inputs(model, x, convert):
    """`x` as the structure of inputs `model` takes, each input converted.

    Builds an unbuilt `model` from the shapes of `x` (symbolically: no weight
    is drawn, no seed moves), as `model(x)` would, and checks every input
    against the model's: rank, every known dimension after the batch, and
    one batch size across inputs. Only static shapes are compared, so inside
    a traced function this costs nothing per call.

    Args:
        model: A Keras model.
        x: An array or tensor (or nested lists of numbers), or a dict, list
            or tuple of them (one level) for a model with several inputs.
        convert: Maps one input to an array or tensor (`np.asarray`,
            `tf.convert_to_tensor`).

    Returns:
        `x` with every input converted; one array for a one-input model.

    Raises:
        ValueError: Naming the input, the shape received and the shape
            expected.

    Example:

    >>> import keras, numpy as np
    >>> from tfp_deepgen.predictive.inputs import checked_inputs
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> checked_inputs(model, [[1.0, 2.0, 3.0]], np.asarray).shape
    (1, 3)
    >>> checked_inputs(model, np.ones((2, 4)), np.asarray)
    Traceback (most recent call last):
    ...
    ValueError: `x` must have shape (batch, 3); received shape (2, 4).
    """
    expected = _expected_inputs(model)
    if expected is None:  # unbuilt or subclassed: guess from `x` as Keras does
        single = not (
            isinstance(x, dict)
            or (isinstance(x, (list, tuple)) and x and all(_is_array(v) for v in x))
        )
    else:
        single = not tf.nest.is_nested(expected)
    x = _converted(x, convert, single)
    named = [(_path_name(path), leaf) for path, leaf in _flatten_with_paths(x)]
    shapes = {name: _static_shape(leaf) for name, leaf in named}
    for name, shape in shapes.items():
        if shape == ():
            raise ValueError(
                f"`{name}` must be a batch, with the examples along its first axis; "
                "received a scalar."
            )
    sizes = {name: shape[0] for name, shape in shapes.items() if shape and shape[0] is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "Every input in `x` must hold the same number of examples (its first axis); "
            f"received batch sizes {sizes}."
        )
    if expected is None:
        if not model.built:
            model(tf.nest.map_structure(_symbolic_batch, x))
        return x
    try:
        tf.nest.assert_same_structure(expected, x, check_types=False)
    except (ValueError, TypeError):
        return x  # e.g. a list for a dict of inputs: left to Keras to reconcile
    for (name, _), spec in zip(named, tf.nest.flatten(expected), strict=True):
        _check_shape(name, shapes[name], tuple(spec.shape))
    return x


def _is_array(value):
    return isinstance(value, (np.ndarray, np.generic)) or keras.ops.is_tensor(value)


def _expected_inputs(model):
    """The structure of `keras.Input`s `model` takes, or None while unknown."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            return None
        inputs = model.inputs
        return inputs[0] if inputs and len(inputs) == 1 else None
    try:  # a functional model, or a subclassed one called symbolically
        return model.input
    except (AttributeError, ValueError):
        return None


def _converted(x, convert, single):
    """`x` with `convert` applied to each input: the whole of `x` when `single`."""
    if single:
        if isinstance(x, (list, tuple)) and len(x) == 1 and _is_array(x[0]):
            x = x[0]  # model([x]) on a one-input model
        return convert(x)
    if isinstance(x, dict):
        return {key: convert(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(convert(value) for value in x)
    return convert(x)


def _static_shape(leaf):
    """`leaf`'s static shape as a tuple, or None for an unknown rank."""
    shape = leaf.shape
    if isinstance(shape, tf.TensorShape):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def _check_shape(name, shape, expected):
    if shape is None:
        return
    fits = len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape[1:], expected[1:], strict=True)
    )
    if not fits:
        raise ValueError(
            f"`{name}` must have shape {_shape_text(('batch', *expected[1:]))}; "
            f"received shape {_shape_text(shape)}."
        )


def _shape_text(shape):
    """`(4, 10)`, `(4,)`, `(batch, 63)`: a shape as Python writes a tuple."""
    dims = ["batch" if i == 0 and d is None else str(d) for i, d in enumerate(shape)]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _flatten_with_paths(x):
    """`[(key or index, input)]` in `tf.nest.flatten`'s order (dict keys sorted)."""
    if isinstance(x, dict):
        return [((key,), x[key]) for key in sorted(x)]
    if isinstance(x, (list, tuple)):
        return [((i,), value) for i, value in enumerate(x)]
    return [((), x)]


def _path_name(path):
    return "x" + "".join(f"[{key!r}]" for key in path)


def _symbolic_batch(leaf):
    dtype = keras.backend.standardize_dtype(leaf.dtype)
    return keras.KerasTensor((None, *leaf.shape[1:]), dtype=dtype)
