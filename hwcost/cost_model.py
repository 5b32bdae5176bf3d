"""What a hardware cost model is, and the per-layer quantities every model shares.

A cost model maps one layer and one discrete (w_bits, a_bits) pair to a few numbers: it knows
nothing of search methods (PLiNIO's rule). The search fills its tables once from these numbers
and makes them differentiable by weighting them with its probabilities (:mod:`hwcost.tables`).

Shared definitions, for a layer with M MACs, N_w weights, C_out outputs channels, N_in input and
N_out output elements, at b_w weight and b_a activation bits:

.. math::
  \\text{bops} = M \\, b_w \\, b_a \\qquad
  \\text{flash\\_bytes} = \\lceil N_w b_w / 8 \\rceil + 4 C_{out} \\qquad
  \\text{act\\_bytes} = \\lceil N_{in} b_a / 8 \\rceil + N_{out}

The bias is int32 (4 bytes per output channel); the input is read at b_a bits and the output is
written in an 8-bit container (its requantized codes, before the next layer narrows them).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hwcost.layer_spec import LayerSpec

METRICS = ("bops", "latency_ms", "energy_uj", "flash_bytes", "act_bytes")
"""Every metric a cost model may provide, with its unit in its name (bops and bytes are counts)."""

BIAS_BYTES = 4
"""Bytes per output channel of the int32 bias."""

OUT_CONTAINER_BITS = 8
"""Bits per output element as written to memory (an int8 container)."""


class CostTableError(Exception):
  """A target file or a cost query a user can fix: a bad field, an unsupported bit pair, a layer
  the target cannot cost. The message names the file, the field or layer, and what was expected.
  """


@dataclass(frozen=True)
class Cost:
  """The cost of one layer at one bit pair.

  Attributes:
    values: metric name -> value, only the metrics the model provides (units in the names).
    provenance: where the numbers come from, e.g. ``"bops"`` or
      ``"analytic:bitfusion45 (configs/targets/bitfusion45.yaml)"``, plus any promotion.
  """

  values: Mapping[str, float]
  provenance: str


@runtime_checkable
class CostModel(Protocol):
  """A per-layer hardware cost model, numpy only.

  Attributes:
    name: short name used in provenance and messages.
    metrics: which of :data:`METRICS` :meth:`cost` returns.
  """

  name: str
  metrics: tuple[str, ...]

  def supports(self, w_bits: int, a_bits: int, spec: LayerSpec | None = None) -> bool:
    """Whether :meth:`cost` succeeds for this pair (natively or by the target's promotion)."""
    ...

  def cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
    """Cost of ``spec`` at (``w_bits``, ``a_bits``).

    Raises:
      CostTableError: the pair is unsupported and the target's policy is ``error`` (or nothing
        to promote to), or the target has no entry for the layer's op class. Never returns a
        silent zero.
    """
    ...


def layer_bops(spec: LayerSpec, w_bits: int, a_bits: int) -> float:
  """Bit operations M·b_w·b_a; groups are counted through M (``spec.macs``)."""
  return float(spec.macs * w_bits * a_bits)


def layer_flash_bytes(spec: LayerSpec, w_bits: int) -> float:
  """Stored parameter bytes ⌈N_w·b_w/8⌉ + 4·C_out (packed weights plus an int32 bias)."""
  return float(math.ceil(spec.weight_count * w_bits / 8) + BIAS_BYTES * spec.cout)


def layer_act_bytes(spec: LayerSpec, a_bits: int) -> float:
  """Activation bytes ⌈N_in·b_a/8⌉ + N_out (input at b_a bits, output in an 8-bit container).

  This is the layer's activation traffic; the peak memory of a network is a maximum over layers
  of such figures, not their sum, so it is reported, not added into a budget.
  """
  out_bytes = math.ceil(spec.out_elems * OUT_CONTAINER_BITS / 8)
  return float(math.ceil(spec.in_elems * a_bits / 8) + out_bytes)


def shared_metrics(spec: LayerSpec, w_bits: int, a_bits: int) -> dict[str, float]:
  """The three metrics every model computes the same way: bops, flash_bytes, act_bytes."""
  return {
    "bops": layer_bops(spec, w_bits, a_bits),
    "flash_bytes": layer_flash_bytes(spec, w_bits),
    "act_bytes": layer_act_bytes(spec, a_bits),
  }
