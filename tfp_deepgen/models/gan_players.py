"""How a GAN's two players must fit together, checked before any training.

The generator maps z (and a conditional GAN's one-hot label) to an example;
the discriminator maps that example (and the label) to one score. These
functions build the players when their shapes allow and name the shapes that
disagree.

Example:

>>> import keras
>>> from tfp_deepgen.models import gan_players
>>> generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
>>> discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
>>> gan_players.sample_shape(generator)
(3,)
>>> gan_players.check_players(generator, discriminator, 2, None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
ValueError: The generator makes examples of shape (3,), but the discriminator takes ...
"""

__all__ = ["check_players", "describe_inputs", "input_shapes", "output_shape", "sample_shape"]


def check_players(generator, discriminator, latent_dim, num_classes):
    """Builds the players when their shapes allow and checks that they fit together.

    Returns whether both players are built. Raises a `ValueError` saying
    which shapes disagree.
    """
    condition_shape = [(None, num_classes)] if num_classes else []
    generator_inputs = input_shapes(generator)
    if generator_inputs is not None:
        expected = [(None, latent_dim), *condition_shape]
        if [shape[-1] for shape in generator_inputs] != [shape[-1] for shape in expected]:
            raise ValueError(
                f"The generator must take {describe_inputs(num_classes)}, inputs of "
                f"shapes {expected}; its inputs have shapes {generator_inputs}."
            )
    elif not generator.built:
        z_shape = (None, latent_dim)
        generator.build([z_shape, *condition_shape] if condition_shape else z_shape)
    example_shape = sample_shape(generator)
    discriminator_inputs = input_shapes(discriminator)
    if discriminator_inputs is not None:
        if example_shape is not None and tuple(discriminator_inputs[0][1:]) != example_shape:
            raise ValueError(
                f"The generator makes examples of shape {example_shape}, but the "
                f"discriminator takes examples of shape {tuple(discriminator_inputs[0][1:])}."
            )
        if len(discriminator_inputs) != 1 + len(condition_shape) or (
            condition_shape and discriminator_inputs[1][-1] != num_classes
        ):
            raise ValueError(
                f"The discriminator must take {describe_inputs(num_classes, 'x')}; its "
                f"inputs have shapes {discriminator_inputs}."
            )
    elif not discriminator.built and example_shape is not None:
        x_shape = (None, *example_shape)
        discriminator.build([x_shape, *condition_shape] if condition_shape else x_shape)
    score_shape = output_shape(discriminator)
    if score_shape is not None and tuple(score_shape[1:]) not in ((), (1,)):
        raise ValueError(
            "The discriminator must output one score per example, shape (batch, 1) or "
            f"(batch,); its output has shape {tuple(score_shape)}."
        )
    return generator.built and discriminator.built


def sample_shape(generator):
    """Shape of one generated example, or None while unknown."""
    shape = output_shape(generator)
    return None if shape is None else tuple(shape[1:])


def input_shapes(model):
    """Shapes of a functional model's inputs, or None when unknown."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return [tuple(tensor.shape) for tensor in inputs]


def output_shape(model):
    """Shape of a model's (single) output, or None when unknown."""
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tuple(outputs[0].shape)
    return None


def describe_inputs(num_classes, first="z"):
    """The inputs a player must take, in words, for error messages."""
    if num_classes:
        return f"[{first}, one-hot labels of size {num_classes}]"
    return f"one input {first}"
