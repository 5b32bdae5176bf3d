"""Cost tables T[m, l, o, b_w, b_a]: every discrete choice of a search space, costed once.

The search never calls a cost model while it trains. It builds these tables once, and its loss
contracts them with the op and bit probabilities (one einsum), which makes the expected cost
differentiable without the cost model being so.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwcost.cost_model import CostModel, CostTableError
from hwcost.layer_spec import LayerSpec


@dataclass(frozen=True)
class CostTables:
  """Costs of every (choice point, candidate op, weight bits, activation bits).

  Let L be the number of choice points, O the most candidates any choice point has, and Bw, Ba
  the numbers of weight and activation widths. For a candidate op o at choice point l made of
  layers S_{l,o}:

  .. math::
    T[m, l, o, i, j] = \\sum_{s \\in S_{l,o}} \\text{cost}_m(s, w_i, a_j)

  An op with no layers (skip, identity, pooling without weights) costs 0: it computes nothing
  the model counts. A padding slot (a choice point with fewer than O candidates) is 0 and masked
  out of ``op_mask``; an unsupported pair is 0 and masked out of ``pair_mask``, and the search
  must never select it (mask its logits to −∞). ``act_bytes`` is summed like every metric, which
  gives activation traffic, not a peak working set.

  Attributes:
    metrics: names of the first axis of ``values``.
    values: float64 ``(M, L, O, Bw, Ba)``.
    op_mask: bool ``(L, O)``; True where the candidate exists.
    pair_mask: bool ``(L, O, Bw, Ba)``; True where the model supports the pair for every layer
      of the candidate (and the candidate exists).
  """

  metrics: tuple[str, ...]
  values: np.ndarray  # (M, L, O, Bw, Ba) float64
  op_mask: np.ndarray  # (L, O) bool
  pair_mask: np.ndarray  # (L, O, Bw, Ba) bool

  def metric(self, name: str) -> np.ndarray:
    """The ``(L, O, Bw, Ba)`` table of one metric."""
    return self.values[self.metrics.index(name)]


def build_cost_tables(
  ops_layers: Sequence[Sequence[Sequence[LayerSpec] | None]],
  model: CostModel,
  w_bits: Sequence[int],
  a_bits: Sequence[int],
  metrics: Sequence[str],
) -> CostTables:
  """Costs every candidate op of every choice point at every bit pair.

  Args:
    ops_layers: for each choice point l, for each candidate op o, the op's layers (an empty
      list for an op that computes nothing) or None for a padding slot.
    model: the cost model.
    w_bits: candidate weight widths, Bw of them, e.g. ``(2, 4, 8)``.
    a_bits: candidate activation widths, Ba of them.
    metrics: which of ``model.metrics`` to tabulate, M of them.

  Returns:
    The :class:`CostTables`.

  Raises:
    CostTableError: a metric is not provided by the model, or the model cannot cost a layer
      (e.g. a target without an entry for its op class).
    ValueError: no choice points, or empty or repeated bit lists (a bug in the caller).

  Example:
    >>> from hwcost import BopsModel, LayerSpec
    >>> fc = LayerSpec("fc", "linear", 1, 1, 8, 2, (1, 1), (1, 1))
    >>> t = build_cost_tables([[[fc], [], None]], BopsModel(), [2, 8], [8], ["bops"])
    >>> t.values[0, 0, :, :, 0].tolist(), t.op_mask.tolist()
    ([[256.0, 1024.0], [0.0, 0.0], [0.0, 0.0]], [[True, True, False]])
  """
  metrics = _check_metrics(model, metrics)
  w_bits, a_bits = _check_bits(w_bits, "w_bits"), _check_bits(a_bits, "a_bits")
  if not ops_layers:
    raise ValueError("ops_layers has no choice points")
  n_ops = max(len(ops) for ops in ops_layers)
  shape = (len(ops_layers), n_ops, len(w_bits), len(a_bits))
  values = np.zeros((len(metrics), *shape), np.float64)  # (M, L, O, Bw, Ba)
  op_mask = np.zeros(shape[:2], bool)  # (L, O)
  pair_mask = np.zeros(shape, bool)  # (L, O, Bw, Ba)
  for point, ops in enumerate(ops_layers):
    for slot, layers in enumerate(ops):
      if layers is None:
        continue
      op_mask[point, slot] = True
      for i, w in enumerate(w_bits):
        for j, a in enumerate(a_bits):
          if all(model.supports(w, a, spec) for spec in layers):
            pair_mask[point, slot, i, j] = True
            totals = layers_cost(layers, model, w, a)
            values[:, point, slot, i, j] = [totals[m] for m in metrics]
  return CostTables(metrics=metrics, values=values, op_mask=op_mask, pair_mask=pair_mask)


def layers_cost(
  layers: Sequence[LayerSpec], model: CostModel, w_bits: int, a_bits: int
) -> dict[str, float]:
  """Exact cost of one discrete choice: Σ over ``layers`` of each of ``model.metrics``.

  Used for a derived SubNet, whose layers all run at (``w_bits``, ``a_bits``). No layers cost 0.

  Raises:
    CostTableError: the model cannot cost a layer at this pair.
  """
  totals = dict.fromkeys(model.metrics, 0.0)
  for spec in layers:
    cost = model.cost(spec, w_bits, a_bits)
    for metric in model.metrics:
      totals[metric] += float(cost.values[metric])
  return totals


def _check_metrics(model: CostModel, metrics: Sequence[str]) -> tuple[str, ...]:
  missing = [m for m in metrics if m not in model.metrics]
  if missing:
    raise CostTableError(
      f"cost model {model.name!r} does not provide {', '.join(map(repr, missing))}; "
      f"it provides {', '.join(model.metrics)}"
    )
  if not metrics:
    raise ValueError("no metrics requested")
  return tuple(metrics)


def _check_bits(bits: Sequence[int], what: str) -> tuple[int, ...]:
  bits = tuple(int(b) for b in bits)
  if not bits or len(set(bits)) != len(bits):
    raise ValueError(f"{what} must be a non-empty list of distinct widths, got {bits}")
  return bits
