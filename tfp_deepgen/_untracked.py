"""A holder for references Keras must not track as a layer's or model's own state."""


class Untracked:
    """Wraps `value` so Keras's attribute tracking leaves it alone.

    Keras tracks layers, variables and containers assigned to a layer's
    attributes (they would be saved as its own weights and sub-layers); a
    cache of compiled functions or copies of another layer's scales must not be.
    """

    def __init__(self, value):
        self.value = value
