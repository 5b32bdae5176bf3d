"""Analytic roofline cost of a layer on a target described by a YAML data sheet.

Per layer the target either computes or moves bytes, whichever takes longer, plus a fixed
overhead; the BitFusion simulator overlaps the two the same way ("compute + max(0, memory −
compute)"). See :mod:`hwcost.target_file` for the file format.
"""

import numbers
import os
from dataclasses import dataclass
from typing import ClassVar

from hwcost.cost_model import METRICS, Cost, CostTableError, shared_metrics
from hwcost.layer_spec import LayerSpec
from hwcost.lut import LutCostModel
from hwcost.measured_rows import read_measured_csv
from hwcost.target_file import (
  ChannelGranularity,
  OpClassSpec,
  Pair,
  TargetSpec,
  grid_key,
  read_target_file,
)


@dataclass(frozen=True)
class RooflineModel:
  """Roofline latency and energy of one layer on one target.

  Let M be the layer's MACs as the hardware computes them (:func:`padded_macs`: the true MACs
  unless the op class declares a ``channel_granularity``), P(b_w, b_a) the target's MACs per
  cycle for the layer's op class,
  e_MAC(b_w, b_a) its energy per MAC (pJ), B the bytes the layer moves, β the memory bandwidth
  (bytes/cycle), e_B the energy per byte (pJ), c_0 the overhead cycles, f the clock (MHz) and
  P_s the static power (mW). The bytes are the stored parameters plus the activations,
  B = flash_bytes + act_bytes (:mod:`hwcost.cost_model`), each touched once: a lower bound
  that ignores tiling refetches. Then

  .. math::
    c = \\max\\left(\\frac{M}{P(b_w, b_a)}, \\frac{B}{\\beta}\\right) + c_0 \\qquad
    t_{ms} = \\frac{c}{10^3 f} \\qquad
    E_{\\mu J} = 10^{-6} \\left(M \\, e_{MAC} + B \\, e_B\\right) + P_s \\, t_{ms}

  (mW · ms = µJ). The op class is ``depthwise`` when g = C_in > 1, ``linear`` for linear
  layers, and ``conv`` otherwise (grouped convolutions included). Padded MACs enter the energy
  too (the idle lanes of a padded group burn their cycle); ``bops`` stays M·b_w·b_a of the true
  MACs, a hardware-agnostic count.

  A pair outside the target's supported set follows its ``unsupported_policy``: ``error``
  refuses it; ``promote`` costs the smallest supported pair (b_w', b_a') with b_w' ≥ b_w and
  b_a' ≥ b_a (least b_w'·b_a', then least b_w'), and every metric, bops and flash bytes
  included, is that of the promoted pair, because that is what the hardware runs and stores.

  Attributes:
    target: the checked target file.

  Example:
    >>> model = load_target("configs/targets/bitfusion45.yaml")  # doctest: +SKIP
    >>> model.cost(LayerSpec("fc", "linear", 1, 1, 64, 10, (1, 1), (1, 1)), 8, 8)  # doctest: +SKIP

  References:
    Williams, Waterman, Patterson, `Roofline <https://doi.org/10.1145/1498765.1498785>`_,
    CACM 2009. Sharma et al., `Bit Fusion <https://arxiv.org/abs/1712.01507>`_, ISCA 2018
    (simulator: github.com/hsharma35/bitfusion).
  """

  target: TargetSpec
  metrics: ClassVar[tuple[str, ...]] = METRICS

  @property
  def name(self) -> str:
    return self.target.name

  @property
  def provenance(self) -> str:
    """How costs from this model are labelled: ``analytic:<name> (<file>)``."""
    return f"analytic:{self.target.name} ({self.target.path})"

  def supports(self, w_bits: int, a_bits: int, spec: LayerSpec | None = None) -> bool:
    """Whether the pair is supported, or promotable under ``unsupported_policy: promote``.

    ``spec`` does not change the answer: a layer whose op class the target lacks is an error
    in :meth:`cost`, never a masked choice.
    """
    del spec
    return self.promoted(w_bits, a_bits) is not None

  def cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
    """Roofline bops, latency_ms, energy_uj, flash_bytes and act_bytes of ``spec``.

    Raises:
      CostTableError: the pair is unsupported under policy ``error`` or has nothing to promote
        to, or the target has no entry for the layer's op class.
    """
    pair = self._resolve(spec, w_bits, a_bits)
    op = self._op_class(spec)
    values = shared_metrics(spec, *pair)
    moved_bytes = values["flash_bytes"] + values["act_bytes"]
    macs = padded_macs(spec, op.channel_granularity)
    latency_ms = self._latency_ms(op, pair, macs, moved_bytes)
    energy_pj = macs * op.energy_pj_per_mac[pair]
    energy_pj += moved_bytes * self.target.memory.energy_pj_per_byte
    values["latency_ms"] = latency_ms
    values["energy_uj"] = energy_pj * 1e-6 + self.target.static_power_mw * latency_ms
    provenance = self.provenance
    if pair != (w_bits, a_bits):
      provenance += f"; promoted {grid_key(w_bits, a_bits)} -> {grid_key(*pair)}"
    return Cost(values={m: values[m] for m in METRICS}, provenance=provenance)

  def _latency_ms(self, op: OpClassSpec, pair: Pair, macs: int, moved_bytes: float) -> float:
    compute_cycles = macs / op.macs_per_cycle[pair]
    memory_cycles = moved_bytes / self.target.memory.bandwidth_bytes_per_cycle
    cycles = max(compute_cycles, memory_cycles) + op.overhead_cycles
    return cycles / (self.target.clock_mhz * 1e3)

  def promoted(self, w_bits: int, a_bits: int) -> Pair | None:
    """The pair the hardware runs for (w_bits, a_bits), or None if it cannot run it."""
    if not all(_is_bits(b) for b in (w_bits, a_bits)):
      return None
    if (w_bits, a_bits) in self.target.supported:
      return (w_bits, a_bits)
    if self.target.unsupported_policy != "promote":
      return None
    above = [(w, a) for w, a in self.target.supported if w >= w_bits and a >= a_bits]
    return min(above, key=lambda p: (p[0] * p[1], p[0]), default=None)

  def _resolve(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Pair:
    pair = self.promoted(w_bits, a_bits)
    if pair is None:
      supported = ", ".join(grid_key(w, a) for w, a in self.target.supported)
      policy = self.target.unsupported_policy
      why = "nothing supported is as wide" if policy == "promote" else "unsupported_policy: error"
      raise CostTableError(
        f"{self.target.path}: layer {spec.name!r}: {grid_key(w_bits, a_bits)} "
        f"(w_bits={w_bits}, a_bits={a_bits}) is not supported by target {self.name!r} "
        f"({why}; supported: {supported}); drop these bits from the search"
      )
    return pair

  def _op_class(self, spec: LayerSpec) -> OpClassSpec:
    op_class = op_class_of(spec)
    if op_class not in self.target.compute:
      raise CostTableError(
        f"{self.target.path}: layer {spec.name!r} is a {op_class} layer, but the target has no "
        f"compute.{op_class} entry (it has: {', '.join(self.target.compute)}); add one, since "
        "a layer is never costed as zero"
      )
    return self.target.compute[op_class]


def padded_macs(spec: LayerSpec, granularity: ChannelGranularity) -> int:
  """MACs of ``spec`` as hardware that processes channels in groups computes them.

  With g_i = ``granularity.cin``, g_o = ``granularity.cout``, G the layer's groups and
  ⌈x⌉_g = ⌈x/g⌉·g:

  .. math::
    M_{pad} = H_{out} W_{out} \\, k^2 \\, \\lceil C_{out} \\rceil_{g_o} \\,
    \\lceil C_{in}/G \\rceil_{g_i}

  which is ``spec.macs`` when both are 1. E.g. GAP8/PULP-NN (PLiNIO's model): a linear layer
  takes ⌈C_in/2⌉·⌈C_out/4⌉ cycles at 8 MACs/cycle, i.e. M_pad/8 with g_i = 2, g_o = 4.

  The ceil has no gradient, and needs none: every search space here fixes its channel counts,
  so this runs once, when the cost tables are built, and the search differentiates through the
  tables' op and bit probabilities only. (A search over channel counts would need a
  straight-through ceil, as PLiNIO's ``FloorSTE``.)
  """
  out_h, out_w = spec.out_hw
  cout = _round_up(spec.cout, granularity.cout)
  cin = _round_up(spec.cin // spec.groups, granularity.cin)
  return out_h * out_w * spec.kernel * spec.kernel * cout * cin


def _round_up(channels: int, multiple: int) -> int:
  """⌈channels/multiple⌉·multiple, in integers."""
  return -(-channels // multiple) * multiple


def op_class_of(spec: LayerSpec) -> str:
  """The target-file op class of a layer: ``linear``, ``depthwise`` (g = C_in > 1) or ``conv``."""
  if spec.op == "linear":
    return "linear"
  return "depthwise" if spec.is_depthwise else "conv"


def load_target(path: str | os.PathLike) -> RooflineModel | LutCostModel:
  """Reads a target file (``schema_version: 1``) into its cost model.

  Without a ``measured`` field the model is the :class:`RooflineModel`. With one, it is a
  :class:`~hwcost.lut.LutCostModel` over the CSV's rows with the roofline model as fallback,
  rows looked up at the pair the target runs (:meth:`RooflineModel.promoted`), and the peak

  .. math::
    P_{peak} = 10^3 f \\max_{op, b_w, b_a} P_{op}(b_w, b_a) \\quad \\text{MACs/ms}

  (f in MHz), above which a row is an error.

  Args:
    path: the YAML file, e.g. ``configs/targets/bitfusion45.yaml``.

  Returns:
    The model; its costs name ``path`` (or the CSV's rows) in their provenance.

  Raises:
    CostTableError: the file is missing, not YAML, or breaks the format; the message names the
      file and the dotted field (see :mod:`hwcost.target_file`). A measured CSV that is
      unreadable names ``measured.file``; a bad row names the CSV, its line and its column.
  """
  target = read_target_file(path)
  model = RooflineModel(target)
  if target.measured is None:
    return model
  return LutCostModel(
    read_measured_csv(target.measured.file),
    model,
    name=target.name,
    max_extrapolation=target.measured.max_extrapolation,
    peak_macs_per_ms=peak_macs_per_ms(target),
    promote=model.promoted,
  )


def peak_macs_per_ms(target: TargetSpec) -> float:
  """The target's largest MACs per millisecond: max macs_per_cycle × clock_mhz × 10³."""
  peak = max(max(op.macs_per_cycle.values()) for op in target.compute.values())
  return peak * target.clock_mhz * 1e3


def _is_bits(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
