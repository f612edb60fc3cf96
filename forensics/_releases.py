"""The known weight releases (data). Imported by :mod:`forensics.weights`."""
from .weights import WeightSpec, register_weights

# Filled in by the weights-registry work; see weights/README.md.
