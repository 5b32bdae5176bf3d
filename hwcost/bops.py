"""The hardware-agnostic BOPs model: the ∇QDARTS paper's complexity metric.

BOPs weigh every MAC by the product of its operand widths, the premise of bit-flexible
accelerators ("the number of bit-level operations required for the multiply operator is
proportional to the product of the operands' bitwidths", Sharma et al. 2018). It also reports
the parameter and activation bytes, which need no target either.
"""

import numbers
from typing import ClassVar

from hwcost.cost_model import Cost, CostTableError, shared_metrics
from hwcost.layer_spec import LayerSpec

MIN_BITS = 2
"""Narrowest supported width: 2-bit weights are ternary (see ``quant.lsq.weight_qrange``)."""


class BopsModel:
  """BOPs, flash bytes and activation bytes of a layer; every pair with both widths ≥ 2 bits.

  For a layer with M MACs at b_w weight and b_a activation bits:

  .. math::
    \\text{bops} = M \\, b_w \\, b_a

  and flash/activation bytes as defined in :mod:`hwcost.cost_model`.

  Example:
    >>> from hwcost import LayerSpec
    >>> spec = LayerSpec("fc", "linear", 1, 1, 64, 10, (1, 1), (1, 1))
    >>> BopsModel().cost(spec, 4, 8).values["bops"]
    20480.0

  References:
    Baskin et al., `UNIQ <https://arxiv.org/abs/1804.10969>`_, 2018 (BOPs); ∇QDARTS uses
    M·b_w·b_a without accumulator terms, as does PLiNIO's ``ops_bit``.
  """

  name: ClassVar[str] = "bops"
  metrics: ClassVar[tuple[str, ...]] = ("bops", "flash_bytes", "act_bytes")

  def supports(self, w_bits: int, a_bits: int, spec: LayerSpec | None = None) -> bool:
    """True when both widths are ints of at least 2 bits; ``spec`` does not matter."""
    del spec
    return all(
      isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= MIN_BITS
      for b in (w_bits, a_bits)
    )

  def cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
    """BOPs and bytes of ``spec`` at (``w_bits``, ``a_bits``).

    Raises:
      CostTableError: a width is below 2 bits.
    """
    if not self.supports(w_bits, a_bits):
      raise CostTableError(
        f"bops: layer {spec.name!r}: w_bits={w_bits!r}, a_bits={a_bits!r} unsupported "
        f"(every pair of ints >= {MIN_BITS} is)"
      )
    return Cost(values=shared_metrics(spec, int(w_bits), int(a_bits)), provenance="bops")
