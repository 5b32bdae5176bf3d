"""Derivation: the argmax SubNet of the learned logits, and its exact cost on the target."""

from collections.abc import Sequence

import numpy as np

from hwcost import CostModel, LayerSpec, layers_cost
from search_spaces import Choice


def derive_choices(
  logits: dict, op_names: Sequence[str], w_bits: Sequence[int], a_bits: Sequence[int]
) -> list[Choice]:
  """Per choice point: the op of largest α, then that op's bits of largest β and γ.

  Args:
    logits: masked ``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}`` (ops that do not fit
      a choice point are at −1e9, so they are never derived).
  """
  op_logits, w_logits, a_logits = (np.asarray(logits[k]) for k in ("op", "w", "a"))
  choices = []
  for l, o in enumerate(op_logits.argmax(-1)):
    choices.append(
      Choice(
        op=op_names[o],
        w_bits=int(w_bits[w_logits[l, o].argmax()]),
        a_bits=int(a_bits[a_logits[l, o].argmax()]),
      )
    )
  return choices


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
    the largest layer's activation bytes, where the model gives ``act_bytes``.
  """
  per_choice, specs_and_bits = [], [(s, fixed_bits, fixed_bits) for s in fixed_layers]
  for l, choice in enumerate(choices):
    specs = candidate_layers[l][op_names.index(choice.op)]
    per_choice.append(layers_cost(specs, model, choice.w_bits, choice.a_bits))
    specs_and_bits += [(s, choice.w_bits, choice.a_bits) for s in specs]
  fixed = [
    {"name": s.name, "cost": layers_cost([s], model, fixed_bits, fixed_bits)} for s in fixed_layers
  ]
  total = {
    m: float(sum(c[m] for c in per_choice) + sum(f["cost"][m] for f in fixed))
    for m in model.metrics
    if m != "act_bytes"
  }
  if "act_bytes" in model.metrics:  # not additive: the largest layer's input + output
    total["peak_act_bytes"] = float(
      max(model.cost(s, w, a).values["act_bytes"] for s, w, a in specs_and_bits)
    )
  return {"layers": per_choice, "fixed": fixed, "total": total}
