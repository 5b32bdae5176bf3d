"""Derivation: the argmax SubNet of the learned logits, and its exact cost on the target."""

from collections.abc import Sequence

import numpy as np

from hwcost import CostModel, LayerSpec, layers_cost, share_measured
from search_spaces import Choice


def argmax_selection(logits: dict) -> np.ndarray:
  """``(L, 3)`` (op, w, a) indices: per choice point the op of largest α, then that op's bits
  of largest β and γ.

  Args:
    logits: masked ``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}`` (ops that do not fit
      a choice point are at −1e9, so they are never derived).
  """
  op = np.asarray(logits["op"]).argmax(-1)
  layers = np.arange(op.size)
  w = np.asarray(logits["w"])[layers, op].argmax(-1)
  a = np.asarray(logits["a"])[layers, op].argmax(-1)
  return np.stack([op, w, a], axis=1)


def choices_from_selection(
  sel: np.ndarray, op_names: Sequence[str], w_bits: Sequence[int], a_bits: Sequence[int]
) -> list[Choice]:
  return [Choice(op_names[o], int(w_bits[w]), int(a_bits[a])) for o, w, a in sel]


def derive_choices(
  logits: dict, op_names: Sequence[str], w_bits: Sequence[int], a_bits: Sequence[int]
) -> list[Choice]:
  """The argmax SubNet (see :func:`argmax_selection`) as :class:`Choice`s."""
  return choices_from_selection(argmax_selection(logits), op_names, w_bits, a_bits)


def subnet_costs(
  choices: Sequence[Choice],
  candidate_layers,
  fixed_layers: Sequence[LayerSpec],
  op_names: Sequence[str],
  model: CostModel,
  fixed_bits: int = 8,
) -> dict:
  """Exact per-layer and total cost of a SubNet on ``model``, every metric it provides.

  Returns:
    ``{"layers": [{metric: value} per choice point], "fixed": [{"name", "cost"}...],
    "total": {metric: value}}``; totals sum the additive metrics and add ``peak_act_bytes``,
    the largest layer's activation bytes, where the model gives ``act_bytes``; also the
    distinct provenances and the share of the latency that came from measured rows.
  """
  groups = [
    (candidate_layers[l][op_names.index(c.op)], c.w_bits, c.a_bits) for l, c in enumerate(choices)
  ]
  return grouped_costs(groups, fixed_layers, model, fixed_bits)


def grouped_costs(
  groups: Sequence[tuple[Sequence[LayerSpec], int | None, int | None]],
  fixed_layers: Sequence[LayerSpec],
  model: CostModel,
  fixed_bits: int = 8,
) -> dict:
  """:func:`subnet_costs` of layers given as groups ``(specs, w_bits, a_bits)`` (one group per
  choice point, or per DARTS gene); a group without specs may have ``None`` bits."""
  per_group, specs_and_bits = [], [(s, fixed_bits, fixed_bits) for s in fixed_layers]
  for specs, w_bits, a_bits in groups:
    per_group.append(layers_cost(specs, model, w_bits, a_bits))  # no specs: zeros
    specs_and_bits += [(s, w_bits, a_bits) for s in specs]
  fixed = [
    {"name": s.name, "cost": layers_cost([s], model, fixed_bits, fixed_bits)} for s in fixed_layers
  ]
  total = {
    m: float(sum(c[m] for c in per_group) + sum(f["cost"][m] for f in fixed))
    for m in model.metrics
    if m != "act_bytes"
  }
  every = [model.cost(s, w, a) for s, w, a in specs_and_bits]
  if "act_bytes" in model.metrics:  # not additive: the largest layer's input + output
    total["peak_act_bytes"] = float(max(c.values["act_bytes"] for c in every))
  return {
    "layers": per_group,
    "fixed": fixed,
    "total": total,
    "provenance": sorted({c.provenance for c in every}),
    "measured_latency_share": share_measured(every) if "latency_ms" in model.metrics else None,
  }


def _log_softmax(x: np.ndarray) -> np.ndarray:
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def selection_costs(
  tables: np.ndarray, fixed: np.ndarray, peak: Sequence[bool], sel: np.ndarray
) -> np.ndarray:
  """``(K,)`` exact costs of a selection ``sel`` ``(L, 3)`` of (op, w, a) indices.

  Args:
    tables: ``(K, L, O, Bw, Ba)``; fixed: ``(K,)``; peak: ``K`` flags (max instead of sum).
  """
  layers = np.arange(len(sel))
  per_layer = tables[:, layers, sel[:, 0], sel[:, 1], sel[:, 2]]  # (K, L)
  return np.where(peak, np.maximum(fixed, per_layer.max(1)), fixed + per_layer.sum(1))


def derive_within_budgets(logits: dict, objective, allowed: np.ndarray) -> tuple[np.ndarray, bool]:
  """A probable SubNet that meets every ``budget`` term, found greedily.

  Starts from the argmax SubNet (:func:`argmax_selection`). While some budget is exceeded, it
  makes the one change of (op, w_bits, a_bits) at one choice point that gives up the least
  log-probability per unit of relative violation Σ_k relu(C_k/B_k − 1) removed. Stops when
  every budget is met, or when no single change reduces the violation (the budget is then
  reported as not met).

  Args:
    logits: masked ``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}``.
    objective: the search's :class:`~qdarts.objective.CostObjective`.
    allowed: bool ``(L, O, Bw, Ba)``: the choices the search may take (capability masks).

  Returns:
    ``(L, 3)`` indices (op, w, a) per choice point, and whether any change was made.
  """
  log_p = {k: _log_softmax(np.asarray(v, np.float64)) for k, v in logits.items()}
  score = log_p["op"][..., None, None] + log_p["w"][..., :, None] + log_p["a"][..., None, :]
  score = np.where(allowed, score, -np.inf)  # (L, O, Bw, Ba)
  num_l = score.shape[0]
  sel = argmax_selection(logits)
  budget_terms = [k for k, f in enumerate(objective.forms) if f == "budget"]
  if not budget_terms:
    return sel, False
  tables = np.asarray(objective.tables, np.float64)[budget_terms]
  fixed = np.asarray(objective.fixed, np.float64)[budget_terms]
  budgets = np.asarray(objective.budget, np.float64)[budget_terms]
  peak = np.asarray(objective.peak)[budget_terms]

  def violation(s):
    return np.maximum(selection_costs(tables, fixed, peak, s) / budgets - 1.0, 0.0).sum()

  changed = False
  while (current := violation(sel)) > 0:
    best, best_ratio = None, np.inf
    for l in range(num_l):
      for option in np.argwhere(np.isfinite(score[l])):
        trial = sel.copy()
        trial[l] = option
        gain = current - violation(trial)
        if gain > 1e-12:
          ratio = (score[l][tuple(sel[l])] - score[l][tuple(option)]) / gain
          if ratio < best_ratio:
            best, best_ratio = trial, ratio
    if best is None:
      break
    sel, changed = best, True
  return sel, changed


MEMORY_METRICS = ("flash_bytes", "peak_act_bytes")  # capacities: a budget there is a constraint


def widen_free_bits(
  sel: np.ndarray, objective, allowed: np.ndarray, w_bits: Sequence[int], a_bits: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
  """Raises a derived layer's bit-widths where the target charges nothing for them.

  A short search leaves the bit logits close to uniform, so the argmax bits of a layer can be
  narrower than bits that cost the same on the target (measured: on GAP8 with PULP-NN, whose
  kernels run sub-byte data no faster, the joint search derived 2-bit weights or activations
  at no latency saving; README, search quality). Per choice point, keeping its op, this takes
  the widest allowed ``(w, a)`` pair with ``w ≥`` and ``a ≥`` the derived ones such that

  * no term's per-layer cost rises (``objective.tables[k, l, o, w, a]``), except
  * ``budget`` terms on memory metrics (:data:`MEMORY_METRICS`): capacities, which only have to
    stay met by the whole SubNet.

  So a SubNet's cost on every optimized metric is unchanged; only precision that is free on
  the target is added (wider is never less accurate under QAT, the rule's assumption).

  Args:
    sel: ``(L, 3)`` derived (op, w, a) indices.
    objective: the search's :class:`~qdarts.objective.CostObjective`.
    allowed: bool ``(L, O, Bw, Ba)``, the choices the search may take.
    w_bits, a_bits: the candidate bit-widths the indices refer to.

  Returns:
    The new selection and the choice points whose bits were raised.
  """
  tables = np.asarray(objective.tables, np.float64)  # (K, L, O, Bw, Ba)
  fixed = np.asarray(objective.fixed, np.float64)
  budget = np.asarray(objective.budget, np.float64)
  peak = np.asarray(objective.peak)
  capacity = np.asarray(
    [
      f == "budget" and m in MEMORY_METRICS
      for m, f in zip(objective.metrics, objective.forms, strict=True)
    ]
  )
  sel, widened = np.array(sel), []
  for l, (o, w, a) in enumerate(sel):
    now = tables[:, l, o, w, a]
    best = (w_bits[w] + a_bits[a], w_bits[w])
    for w2, a2 in np.argwhere(allowed[l, o]):
      key = (w_bits[w2] + a_bits[a2], w_bits[w2])
      if w_bits[w2] < w_bits[w] or a_bits[a2] < a_bits[a] or key <= best:
        continue
      if np.any(~capacity & (tables[:, l, o, w2, a2] > now * (1 + 1e-9))):
        continue
      trial = sel.copy()
      trial[l] = (o, w2, a2)
      if np.any(capacity & (selection_costs(tables, fixed, peak, trial) > budget)):
        continue
      best, sel[l] = key, (o, w2, a2)
    if tuple(sel[l]) != (o, w, a):
      widened.append(l)
  return sel, widened
