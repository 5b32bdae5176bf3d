"""Measured latency and energy rows (a LUT) over an analytic model, with provenance.

:class:`LutCostModel` answers latency_ms and energy_uj from measured rows
(:mod:`hwcost.measured_rows`) where it can and from its fallback (the analytic model) where it
cannot; every other metric is the fallback's. Let M be a layer's MACs. Within a slice of rows
with the same op, kernel, stride, depthwise-or-not, w_bits and a_bits, rows at MACs M_i with
values t_i define a piecewise power law (linear in log-log space). Between the neighbours
M_i ≤ M ≤ M_{i+1}:

.. math::
  \\log t(M) = \\log t_i + (\\log t_{i+1} - \\log t_i)
  \\frac{\\log M - \\log M_i}{\\log M_{i+1} - \\log M_i}
  \\quad\\Longleftrightarrow\\quad t(M) = t_i \\, (M / M_i)^{s_i}

so a layer at √(M_1·M_2) gets √(t_1·t_2). Rows of one slice at equal MACs (different shapes)
merge into one point at the geometric mean of their values. Bits are never interpolated.
"""

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hwcost.cost_model import Cost, CostModel, CostTableError
from hwcost.layer_spec import LayerSpec
from hwcost.measured_rows import (
  MEASURED_METRICS,
  MeasuredRow,
  MeasuredRows,
  layer_key,
  read_measured_csv,
)
from hwcost.target_file import Pair, grid_key

__all__ = ["LutCostModel", "MeasuredRow", "MeasuredRows", "read_measured_csv", "share_measured"]

_MEASURED_PREFIX = "measured:"


def _slice_key(spec: LayerSpec, pair: Pair) -> tuple:
  """The categorical keys interpolation holds fixed."""
  return (spec.op, spec.kernel, spec.stride, spec.is_depthwise, *pair)


def _class_key(spec: LayerSpec, pair: Pair) -> tuple:
  """Op class (conv, depthwise, linear) and bits: the widest calibration group."""
  return (spec.op, spec.is_depthwise, *pair)


@dataclass(frozen=True)
class _Slice:
  """The rows of one slice for one metric, as a piecewise power law in MACs.

  Attributes:
    log_macs: sorted distinct log M_i, ``(P,)``.
    log_values: log t_i, the mean log value of the rows at M_i, ``(P,)``.
    counts: rows merged into each point, ``(P,)``.
    ratios: measured/analytic of each row whose analytic value is positive.
  """

  log_macs: np.ndarray  # (P,) float64
  log_values: np.ndarray  # (P,) float64
  counts: np.ndarray  # (P,) int
  ratios: np.ndarray  # (rows,) float64

  @classmethod
  def build(cls, macs: Sequence[int], values: Sequence[float], ratios: Sequence[float]):
    log_macs, inverse = np.unique(np.log(np.asarray(macs, np.float64)), return_inverse=True)
    counts = np.bincount(inverse)
    log_values = np.bincount(inverse, weights=np.log(values)) / counts
    return cls(log_macs, log_values, counts, np.asarray(ratios, np.float64))

  def predict(self, macs: int, max_extrapolation: float) -> tuple[float, str] | None:
    """The power-law value at ``macs`` and its provenance, or None outside the bound."""
    x, lo, hi = math.log(macs), self.log_macs[0], self.log_macs[-1]
    if lo <= x <= hi:
      i = int(np.searchsorted(self.log_macs, x))
      if self.log_macs[i] == x:
        return math.exp(self.log_values[i]), f"measured:interpolated ({self.counts[i]} rows)"
      value = self._line(i - 1, i, x)
      return value, f"measured:interpolated ({self.counts[i - 1] + self.counts[i]} rows)"
    bound = math.log(max_extrapolation)
    if len(self.log_macs) < 2 or not lo - bound <= x <= hi + bound:
      return None
    i, j = (0, 1) if x < lo else (-2, -1)
    return self._line(i, j, x), "measured:extrapolated"

  def _line(self, i: int, j: int, x: float) -> float:
    slope = (self.log_values[j] - self.log_values[i]) / (self.log_macs[j] - self.log_macs[i])
    return math.exp(self.log_values[i] + slope * (x - self.log_macs[i]))


class LutCostModel:
  """Measured latency and energy where rows cover a layer, the fallback's numbers elsewhere.

  For ``latency_ms`` and ``energy_uj``, each on the rows that measure it, in this order:

  a. a row with the layer's key (shape and bits): its value, ``measured:exact (FILE:ROW)``;
  b. M within the slice's [min, max] MACs: the power law between the two neighbouring points
     (equation in :mod:`hwcost.lut`), ``measured:interpolated (n rows)`` (n: rows behind the
     points used);
  c. M within a factor ``max_extrapolation`` outside that range (and ≥ 2 distinct MACs in the
     slice): the power law of the two nearest points extended, ``measured:extrapolated``, with a
     warning naming the layer (once per layer key and bits);
  d. the slice has rows: the fallback's value × R, R the median measured/analytic ratio of
     the slice's rows, ``analytic calibrated to N rows (ratio R); <fallback provenance>``;
  e. no slice: the same with the rows of the layer's op class (conv, depthwise, linear) and
     bits, if any; else the fallback's value and provenance.

  When the two metrics' sources differ, the provenance is ``latency_ms: ...; energy_uj: ...``.
  Every other metric (bops, flash_bytes, act_bytes) is the fallback's. Rows are looked up at the
  pair the hardware runs (``promote``), so a promoted pair uses the rows of its promotion.

  Args:
    rows: the measured rows (:func:`read_measured_csv`).
    fallback: the analytic model; it must provide ``latency_ms`` and ``energy_uj``, and cost
      every row.
    name: short name used in messages.
    max_extrapolation: factor ≥ 1 beyond a slice's MACs range still extrapolated.
    peak_macs_per_ms: the target's peak throughput; a row above it is an error.
    promote: maps a requested pair to the pair the hardware runs (e.g.
      :meth:`RooflineModel.promoted`); None means every pair runs as itself.

  Raises:
    CostTableError: a row implies more than ``peak_macs_per_ms`` (usually a unit slip), is
      at bits the fallback promotes or refuses, or cannot be costed by the fallback; the message
      names ``FILE:ROW``.
    ValueError: ``max_extrapolation`` < 1 or a fallback without latency_ms and energy_uj.

  Example:
    >>> model = load_target("tests/hwcost/fixtures/two_width.yaml")  # doctest: +SKIP
    >>> model.cost(LayerSpec("c", "conv", 3, 1, 8, 16, (8, 8), (8, 8)), 8, 8).provenance
    'measured:interpolated (2 rows)'

  .. note::
    Interpolation is in MACs alone, not (cin, cout, H·W) multilinearly as research/hwcost.md
    §5.4 proposes, and calibration uses the median ratio, not the geometric mean: both are
    robust with the few rows a profile gives. Dilation is not a CSV column, so rows match a
    layer whatever its dilation.
  """

  def __init__(
    self,
    rows: MeasuredRows,
    fallback: CostModel,
    *,
    name: str,
    max_extrapolation: float = 2.0,
    peak_macs_per_ms: float | None = None,
    promote: Callable[[int, int], Pair | None] | None = None,
  ):
    if not max_extrapolation >= 1:
      raise ValueError(f"max_extrapolation must be >= 1, got {max_extrapolation!r}")
    missing = [m for m in MEASURED_METRICS if m not in fallback.metrics]
    if missing:
      raise ValueError(f"fallback {fallback.name!r} does not provide {', '.join(missing)}")
    self.name, self.rows, self.fallback = name, rows, fallback
    self.metrics = tuple(fallback.metrics)
    self.max_extrapolation = float(max_extrapolation)
    self._promote = promote
    self._check_peak(peak_macs_per_ms)
    analytic = [self._row_analytic(row) for row in rows.rows]
    self._exact = {row.key: row for row in rows.rows}
    self._slices = {m: self._group(m, analytic, _slice_key) for m in MEASURED_METRICS}
    self._classes = {m: self._group(m, analytic, _class_key) for m in MEASURED_METRICS}
    self._warned = set()

  def supports(self, w_bits: int, a_bits: int, spec: LayerSpec | None = None) -> bool:
    """The fallback's answer: rows add numbers, never pairs."""
    return self.fallback.supports(w_bits, a_bits, spec)

  def cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
    """The fallback's cost of ``spec``, latency_ms and energy_uj from the rows where they reach.

    Raises:
      CostTableError: the fallback cannot cost the layer or pair.
    """
    base = self.fallback.cost(spec, w_bits, a_bits)
    pair = self._run_pair(w_bits, a_bits)
    promoted = ""
    if pair != (w_bits, a_bits):
      promoted = f"; promoted {grid_key(w_bits, a_bits)} -> {grid_key(*pair)}"
    values, sources = dict(base.values), {}
    for metric in MEASURED_METRICS:
      values[metric], sources[metric] = self._lookup(metric, spec, pair, base)
      if sources[metric].startswith(_MEASURED_PREFIX):
        sources[metric] += promoted
    extrapolated = [m for m, s in sources.items() if s.startswith("measured:extrapolated")]
    if extrapolated:
      self._warn(spec, pair, extrapolated)
    lat, energy = sources["latency_ms"], sources["energy_uj"]
    provenance = lat if lat == energy else f"latency_ms: {lat}; energy_uj: {energy}"
    return Cost(values=values, provenance=provenance)

  def _lookup(self, metric: str, spec: LayerSpec, pair: Pair, base: Cost) -> tuple[float, str]:
    row = self._exact.get(layer_key(spec, pair))
    if row is not None and metric in row.values:
      return row.values[metric], f"measured:exact ({self.rows.where(row)})"
    found = self._slices[metric].get(_slice_key(spec, pair))
    if found is not None:
      predicted = found.predict(spec.macs, self.max_extrapolation)
      if predicted is not None:
        return predicted
    else:
      found = self._classes[metric].get(_class_key(spec, pair))
    analytic = float(base.values[metric])
    if found is None or not len(found.ratios):
      return analytic, base.provenance
    ratio = float(np.median(found.ratios))
    where = f"analytic calibrated to {len(found.ratios)} rows (ratio {ratio:.4g})"
    return analytic * ratio, f"{where}; {base.provenance}"

  def _run_pair(self, w_bits: int, a_bits: int) -> Pair:
    pair = self._promote(w_bits, a_bits) if self._promote is not None else None
    return pair if pair is not None else (w_bits, a_bits)

  def _warn(self, spec: LayerSpec, pair: Pair, metrics: list[str]):
    key = layer_key(spec, pair)
    if key in self._warned:
      return
    self._warned.add(key)
    warnings.warn(
      f"{self.name}: layer {spec.name!r} ({spec.macs} MACs, {grid_key(*pair)}): "
      f"{', '.join(metrics)} extrapolated from the rows of {self.rows.path} (up to "
      f"{self.max_extrapolation:g}x beyond their MACs range); measure this shape to be sure",
      stacklevel=3,
    )

  def _check_peak(self, peak_macs_per_ms: float | None):
    if peak_macs_per_ms is None:
      return
    for row in self.rows.rows:
      throughput = row.spec.macs / row.values["latency_ms"]
      if throughput > peak_macs_per_ms:
        raise CostTableError(
          f"{self.rows.where(row)}: latency_ms: expected at least "
          f"{row.spec.macs / peak_macs_per_ms:.4g} ms ({row.spec.macs} MACs at the target's peak "
          f"{peak_macs_per_ms:.4g} MACs/ms), got {row.values['latency_ms']:g}, which implies "
          f"{throughput:.4g} MACs/ms; is it in seconds or microseconds instead of ms?"
        )

  def _row_analytic(self, row: MeasuredRow) -> Mapping[str, float]:
    pair = (row.w_bits, row.a_bits)
    runs = self._run_pair(*pair)
    if runs != pair or not self.fallback.supports(*pair, row.spec):
      ran = f"it promotes it to {grid_key(*runs)}" if runs != pair else "it does not support it"
      raise CostTableError(
        f"{self.rows.where(row)}: w_bits: expected a bit pair {self.fallback.name!r} runs as "
        f"is, got {grid_key(*pair)} ({ran}); measure at the pair the hardware runs"
      )
    try:
      return self.fallback.cost(row.spec, *pair).values
    except CostTableError as e:
      raise CostTableError(
        f"{self.rows.where(row)}: op: {self.fallback.name!r} cannot cost this row: {e}"
      ) from None

  def _group(self, metric: str, analytic: list, key: Callable) -> dict[tuple, _Slice]:
    groups = defaultdict(list)
    for row, reference in zip(self.rows.rows, analytic, strict=True):
      if metric in row.values:
        groups[key(row.spec, (row.w_bits, row.a_bits))].append((row, reference[metric]))
    return {
      k: _Slice.build(
        [row.spec.macs for row, _ in members],
        [row.values[metric] for row, _ in members],
        [row.values[metric] / ref for row, ref in members if ref > 0],
      )
      for k, members in groups.items()
    }


def share_measured(costs: Sequence[Cost]) -> float:
  """Fraction of the summed latency that came from measured rows.

  .. math::
    \\text{share} = \\frac{\\sum_{c \\in \\text{measured}} t_c}{\\sum_c t_c}

  where a cost is measured when its latency's provenance is exact, interpolated or
  extrapolated (``measured:...``). No costs, or zero total latency, give 0.

  Raises:
    ValueError: a cost has no ``latency_ms``.
  """
  total = measured = 0.0
  for cost in costs:
    if "latency_ms" not in cost.values:
      raise ValueError(f"cost without latency_ms (provenance {cost.provenance!r})")
    latency = float(cost.values["latency_ms"])
    total += latency
    source = cost.provenance.removeprefix("latency_ms: ")
    if source.startswith(_MEASURED_PREFIX):
      measured += latency
  return measured / total if total > 0 else 0.0
