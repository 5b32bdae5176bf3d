"""Budget mode: dual ascent during the search and a derivation that meets the budget."""

import numpy as np

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.derive import argmax_selection, derive_within_budgets, widen_free_bits
from qdarts.objective import CostObjective


def _term(table, budget, metric="bops", peak=False):
  return {
    "metric": metric,
    "form": "budget",
    "weight": 1.0,
    "budget": budget,
    "table": table,
    "fixed": 0.0,
    "reference": float(table.max()) * table.shape[0],
    "peak": peak,
  }


def _objective(table, budget):
  return CostObjective.create([_term(table, budget)])


def test_bits_the_target_charges_nothing_for_are_added_and_nothing_else():
  """(L=3, O=1, Bw=2, Ba=2), bits (2, 8). Latency: layer 0 the same at every width (GAP8's
  sub-byte kernels), layer 1 slower with 8-bit activations, layer 2 slower with 8-bit weights.
  Activation bytes (a memory capacity) grow with the activation bits."""
  latency = np.array(
    [[[[3.0, 3.0], [3.0, 3.0]]], [[[2.0, 4.0], [2.0, 4.0]]], [[[1.0, 1.0], [5.0, 5.0]]]]
  )
  act_bytes = np.array([[[[10.0, 40.0], [10.0, 40.0]]]] * 3)
  allowed = np.ones((3, 1, 2, 2), bool)
  sel = np.zeros((3, 3), int)  # every layer derived at w2a2
  for sram, widened_acts in ((1000.0, True), (20.0, False)):
    objective = CostObjective.create(
      [_term(latency, 100.0, "latency_ms"), _term(act_bytes, sram, "peak_act_bytes", peak=True)]
    )
    new, widened = widen_free_bits(sel, objective, allowed, (2, 8), (2, 8))
    a0 = 1 if widened_acts else 0  # 8-bit activations only where the SRAM still holds them
    assert new.tolist() == [[0, 1, a0], [0, 1, 0], [0, 0, a0]]
    assert widened == [0, 1, 2] if widened_acts else widened == [0, 1]
    before = latency[np.arange(3), 0, sel[:, 1], sel[:, 2]].sum()
    assert latency[np.arange(3), 0, new[:, 1], new[:, 2]].sum() == before  # cost unchanged
  macs = np.array([5.0, 7.0, 9.0])[:, None, None, None]
  bops = macs * (np.array([2.0, 8.0])[:, None] * np.array([2.0, 8.0])[None, :])  # w·a·MACs
  objective = CostObjective.create([_term(bops, 1e6)])
  assert widen_free_bits(sel, objective, allowed, (2, 8), (2, 8))[1] == []  # never free


def test_derivation_keeps_the_argmax_when_it_meets_the_budget():
  table = np.array([[[[1.0, 2.0]], [[5.0, 9.0]]]] * 2)  # (L=2, O=2, Bw=1, Ba=2)
  logits = {
    "op": np.array([[2.0, 0.0]] * 2),
    "w": np.zeros((2, 2, 1)),
    "a": np.array([[[0.0, 1.0]] * 2] * 2),
  }
  sel, moved = derive_within_budgets(logits, _objective(table, 10.0), np.ones((2, 2, 1, 2), bool))
  np.testing.assert_array_equal(sel, argmax_selection(logits))
  assert not moved


def test_derivation_gives_up_the_least_probability_to_meet_the_budget():
  table = np.array([[[[1.0, 2.0]], [[5.0, 9.0]]]] * 2)
  logits = {
    "op": np.array([[0.0, 3.0], [0.0, 0.1]]),
    "w": np.zeros((2, 2, 1)),
    "a": np.array([[[0.0, 2.0]] * 2] * 2),
  }
  assert argmax_selection(logits)[:, 0].tolist() == [1, 1]  # 9 + 9 = 18 > 12
  sel, moved = derive_within_budgets(logits, _objective(table, 12.0), np.ones((2, 2, 1, 2), bool))
  assert moved
  cost = sum(table[l, o, w, a] for l, (o, w, a) in enumerate(sel))
  assert cost <= 12.0
  assert sel[0, 0] == 1  # the confident layer keeps its op; the unsure one gives way


def test_infeasible_budget_is_reported_not_hidden():
  table = np.full((2, 1, 1, 1), 5.0)
  logits = {"op": np.zeros((2, 1)), "w": np.zeros((2, 1, 1)), "a": np.zeros((2, 1, 1))}
  sel, moved = derive_within_budgets(logits, _objective(table, 1.0), np.ones((2, 1, 1, 1), bool))
  assert not moved and sel.shape == (2, 3)


def test_cortex_m7_latency_budget_is_met_on_digits(tmp_path, quickstart_path):
  """The quickstart's data and space on the Cortex-M7 target, with a 1 ms latency budget
  (its SubNets range from 0.32 ms to 10.5 ms)."""
  budget = 1.0
  cfg = load_config(
    quickstart_path,
    [
      "cost.target=cortex_m7_cmsisnn",
      "cost.metric=latency_ms",
      "cost.form=budget",
      f"cost.budget={budget}",
      "cost.weight=0.0",
      "search.epochs=8",
      "search.warmup_epochs=3",
      "train.epochs=2",
    ],
  )
  result = pipeline.run(pipeline.prepare(cfg), tmp_path)
  term, *memory = result["cost_terms"]
  assert term["met"], term
  # the target's SRAM and flash sizes are budgets of their own, met too
  assert {m["metric"] for m in memory} == {"peak_act_bytes", "flash_bytes"}
  assert all(m["met"] and m["form"] == "budget" for m in memory), memory
  assert term["derived"] <= budget
  assert result["cost"]["latency_ms"] == term["derived"]
  print(f"Cortex-M7 budget {budget} ms: derived {term['derived']:.3f} ms, λ {term['weight']:.3f}")
