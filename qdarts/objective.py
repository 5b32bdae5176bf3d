"""The search objective's cost term: expected hardware cost as one contraction, and its forms.

At setup the cost model fills, per choice point l, a table T_l[o, b_w, b_a] (``hwcost``). In
the step the expected cost of a SubNet drawn from the choice distributions is

.. math::
  \\mathbb{E}[C] = C_{fixed} + \\sum_l \\sum_o p_{l,o} \\sum_{b_w, b_a} q_{l,o,b_w}\\,
  r_{l,o,b_a}\\, T_l[o, b_w, b_a]

(p: op probabilities, q/r: weight/activation bit probabilities), so any cost model, analytic
or measured, plugs in without being differentiable, and costing is free at step time.
"""

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hwcost import CostModel, CostTables, LayerSpec
from qdarts.errors import ConfigError
from search_spaces import Probs


def expected_cost(table: jax.Array, probs: Probs) -> jax.Array:
  """Σ_l Σ_o p_lo Σ_{w,a} q_low r_loa T_lowa for one metric.

  Args:
    table: ``(L, O, Bw, Ba)`` cost of each op at each bit pair (0 where an op does not fit).
    probs: op ``(L, O)``, weight-bit ``(L, O, Bw)``, activation-bit ``(L, O, Ba)``.

  Returns:
    A scalar in the table's unit.
  """
  return jnp.einsum("lo,low,loa,lowa->", probs.op, probs.w, probs.a, table)


SMOOTH_MAX_SHARPNESS = 20.0
"""β of the smooth max of peak metrics: (ref/β)·logsumexp(β·v/ref) overestimates the max by at
most ref·log(L+1)/β, about 10% of the costliest SubNet's peak for a dozen layers."""

FORMS = ("linear", "hinge", "log", "budget")


def expected_layer_costs(table: jax.Array, probs: Probs) -> jax.Array:
  """``(L,)``: Σ_o p_lo Σ_{w,a} q_low r_loa T_lowa, the expected cost of each choice point."""
  return jnp.einsum("lo,low,loa,lowa->l", probs.op, probs.w, probs.a, table)


def one_hot_argmax(probs: Probs) -> Probs:
  """The argmax SubNet as one-hot probabilities (bits of the argmax op of each layer)."""
  op = jax.nn.one_hot(probs.op.argmax(-1), probs.op.shape[-1])
  w = jax.nn.one_hot(probs.w.argmax(-1), probs.w.shape[-1])
  a = jax.nn.one_hot(probs.a.argmax(-1), probs.a.shape[-1])
  return Probs(op, w, a)


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["tables", "fixed", "reference", "weight", "budget"],
  meta_fields=["metrics", "forms", "peak"],
)
@dataclass(frozen=True)
class CostObjective:
  """The cost term of the architecture loss: Σ_k penalty_k(E[C_k]) over K cost terms.

  Each term has a metric, a form and a weight λ_k (from the ``cost`` config section):

  * ``linear``: λ·E[C]/C_ref, with C_ref the cost of the costliest SubNet, so it lies in [0, λ];
  * ``hinge``:  λ·relu(E[C]/B − 1), zero once the budget B is met;
  * ``log``:    λ·log(E[C]/C_ref) (FBNet's form: equal relative savings weigh the same);
  * ``budget``: λ·(E[C]/B − 1), the Lagrangian term, with λ ≥ 0 adapted by dual ascent
    (:meth:`dual_update`) on the exact cost of the current argmax SubNet, so the search keeps
    pushing until the SubNet it would derive meets B.

  Additive metrics sum over layers. Peak metrics (``peak_act_bytes``) take a smooth max over
  layers of the expected per-layer value during the search and the exact max for reporting.

  A pytree whose numbers are leaves: it enters the jitted architecture step as an argument, so
  other weights or budgets reuse the compiled step and λ changes every step without retracing.

  Attributes:
    tables: ``(K, L, O, Bw, Ba)`` float32 per term.
    fixed: ``(K,)`` cost of the layers every SubNet has (sum, or max for a peak metric).
    reference: ``(K,)`` C_ref, the costliest SubNet's cost.
    weight: ``(K,)`` λ_k.
    budget: ``(K,)`` B_k (1 where unused).
    metrics, forms, peak: static, per term.
  """

  tables: jax.Array
  fixed: jax.Array
  reference: jax.Array
  weight: jax.Array
  budget: jax.Array
  metrics: tuple[str, ...]
  forms: tuple[str, ...]
  peak: tuple[bool, ...]

  @classmethod
  def create(cls, terms: list[dict]) -> "CostObjective":
    """From dicts with ``metric, form, weight, budget, table, fixed, reference, peak``."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    for t in terms:
      if t["form"] not in FORMS:
        raise ValueError(f"unknown cost form {t['form']!r}")
    return cls(
      tables=f32(np.stack([t["table"] for t in terms])),
      fixed=f32([t["fixed"] for t in terms]),
      reference=f32([t["reference"] for t in terms]),
      weight=f32([t["weight"] for t in terms]),
      budget=f32([1.0 if t["budget"] is None else t["budget"] for t in terms]),
      metrics=tuple(t["metric"] for t in terms),
      forms=tuple(t["form"] for t in terms),
      peak=tuple(bool(t["peak"]) for t in terms),
    )

  def costs(self, probs: Probs, *, exact: bool = False) -> jax.Array:
    """``(K,)`` expected cost of each term (exact max for peak terms when ``exact``)."""
    out = []
    for k, peak in enumerate(self.peak):
      if not peak:
        out.append(self.fixed[k] + expected_cost(self.tables[k], probs))
        continue
      values = jnp.concatenate([self.fixed[k][None], expected_layer_costs(self.tables[k], probs)])
      if exact:
        out.append(values.max())
      else:
        scale = self.reference[k] / SMOOTH_MAX_SHARPNESS
        out.append(scale * jax.nn.logsumexp(values / scale))
    return jnp.stack(out)

  def penalty(self, costs: jax.Array) -> jax.Array:
    """Σ_k penalty_k(costs[k]), a scalar."""
    total = jnp.float32(0.0)
    for k, form in enumerate(self.forms):
      c, lam, ref, budget = costs[k], self.weight[k], self.reference[k], self.budget[k]
      if form == "linear":
        total += lam * c / ref
      elif form == "hinge":
        total += lam * jax.nn.relu(c / budget - 1.0)
      elif form == "log":
        total += lam * jnp.log(c / ref)
      else:  # budget
        total += jax.lax.stop_gradient(lam) * (c / budget - 1.0)
    return total

  def dual_update(self, exact_costs: jax.Array, lr: jax.Array) -> "CostObjective":
    """λ_k ← max(0, λ_k + lr·(C_k/B_k − 1)) for budget terms; other terms unchanged."""
    is_budget = jnp.asarray([f == "budget" for f in self.forms])
    stepped = jnp.maximum(self.weight + lr * (exact_costs / self.budget - 1.0), 0.0)
    return dataclasses.replace(self, weight=jnp.where(is_budget, stepped, self.weight))


def costliest_subnet(table: np.ndarray, op_mask: np.ndarray, fixed: float, peak: bool) -> float:
  """C_ref: per choice point the most expensive fitting op at any bits; summed with the fixed
  cost, or (peak metrics) the max of those and the fixed layers' peak."""
  per_op = table.reshape(*table.shape[:2], -1).max(axis=-1)  # (L, O)
  per_layer = np.where(op_mask, per_op, -np.inf).max(axis=1)  # (L,)
  return float(max(fixed, per_layer.max()) if peak else fixed + per_layer.sum())


def peak_act_table(candidate_layers, model, w_bits, a_bits, pair_mask=None) -> np.ndarray:
  """``(L, O, Bw, Ba)``: per op, the largest ``act_bytes`` of its layers (0 for no layers, and
  for pairs outside ``pair_mask``, which the model may refuse to cost)."""
  table = np.zeros((len(candidate_layers), len(candidate_layers[0]), len(w_bits), len(a_bits)))
  for l, row in enumerate(candidate_layers):
    for o, specs in enumerate(row):
      for i, w in enumerate(w_bits):
        for j, a in enumerate(a_bits):
          if pair_mask is not None and not pair_mask[l, o, i, j]:
            continue
          table[l, o, i, j] = max(
            (model.cost(spec, w, a).values["act_bytes"] for spec in specs or ()), default=0.0
          )
  return table


def check_metrics(terms, model: CostModel) -> None:
  """Raises ConfigError if a term's metric is not one ``model`` provides."""
  provided = set(model.metrics) - {"act_bytes"}
  if "act_bytes" in model.metrics:
    provided.add("peak_act_bytes")
  for i, term in enumerate(terms):
    if term.metric not in provided:
      where = f"cost.terms[{i}].metric" if len(terms) > 1 else "cost.metric"
      raise ConfigError(
        f"{where}: target {model.name!r} provides {', '.join(sorted(provided))}, "
        f"not {term.metric!r}"
      )


def build_objective(
  terms,
  tables: CostTables,
  candidate_layers,
  fixed_layers: list[LayerSpec],
  model: CostModel,
  w_bits,
  a_bits,
  pair_mask=None,
  fixed_bits: int = 8,
) -> CostObjective:
  """The objective of the config's cost terms, with tables filled once from ``model``.

  Args:
    terms: ``CostTerm``s (metric, form, weight, budget).
    tables: additive tables of ``model`` for every additive metric of the terms.
    candidate_layers: ``L × O`` LayerSpec lists of the space (None where an op does not fit).
    fixed_layers: the layers every SubNet has, costed at ``fixed_bits``.
    pair_mask: bool ``(L, O, Bw, Ba)`` of the choices the search may take (default: the
      tables' own); others are 0 in every table, so they never set the reference cost.

  Raises:
    ConfigError: a term's metric is not provided by the target.
  """
  check_metrics(terms, model)
  allowed = (tables.pair_mask if pair_mask is None else pair_mask) & tables.op_mask[..., None, None]
  built = []
  for term in terms:
    fixed_costs = [model.cost(s, fixed_bits, fixed_bits).values for s in fixed_layers]
    if term.metric == "peak_act_bytes":
      table = peak_act_table(candidate_layers, model, w_bits, a_bits, allowed)
      fixed = max((c["act_bytes"] for c in fixed_costs), default=0.0)
    else:
      table = np.where(allowed, tables.metric(term.metric), 0.0)
      fixed = sum(c[term.metric] for c in fixed_costs)
    peak = term.metric == "peak_act_bytes"
    built.append(
      {
        "metric": term.metric,
        "form": term.form,
        "weight": term.weight,
        "budget": term.budget,
        "table": table,
        "fixed": fixed,
        "peak": peak,
        "reference": costliest_subnet(table, tables.op_mask, fixed, peak),
      }
    )
  return CostObjective.create(built)
