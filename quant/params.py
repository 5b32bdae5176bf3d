"""The parameter type of quantizer step sizes, so filters select them by type."""

from flax import nnx


class QScale(nnx.Param):
  """A learnable quantizer step size (LSQ's s); trained with the weights."""
