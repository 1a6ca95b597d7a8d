"""Figure helpers shared by the image examples."""

import numpy as np


def tile(images, side, columns, pad=1):
    """`(n, side * side)` images as one array, `columns` per row, on a light gray grid."""
    rows = len(images) // columns
    cell = side + pad
    canvas = np.full((rows * cell - pad, columns * cell - pad), 0.25)
    for index, image in enumerate(images[: rows * columns]):
        row, column = divmod(index, columns)
        canvas[row * cell : row * cell + side, column * cell : column * cell + side] = (
            image.reshape(side, side)
        )
    return canvas
