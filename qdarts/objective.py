"""The search objective's cost term: expected hardware cost as one contraction, and its forms.

At setup the cost model fills, per choice point l, a table T_l[o, b_w, b_a] (``hwcost``). In
the step the expected cost of a SubNet drawn from the choice distributions is

.. math::
  \\mathbb{E}[C] = C_{fixed} + \\sum_l \\sum_o p_{l,o} \\sum_{b_w, b_a} q_{l,o,b_w}\\,
  r_{l,o,b_a}\\, T_l[o, b_w, b_a]

(p: op probabilities, q/r: weight/activation bit probabilities), so any cost model, analytic
or measured, plugs in without being differentiable, and costing is free at step time.
"""

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

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


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["table", "fixed_cost", "reference", "weight", "budget"],
  meta_fields=["form"],
)
@dataclass(frozen=True)
class CostObjective:
  """The cost term of the architecture loss.

  ``linear``: λ·E[C]/C_ref, with C_ref the cost of the costliest SubNet of the space, so the
  term lies in [0, λ]. ``hinge``: λ·relu(E[C]/budget − 1), zero once the budget is met.

  A pytree whose numbers are leaves: it enters the jitted architecture step as an argument, so
  another cost weight or budget reuses the compiled step (and, later, λ can change per step).

  Attributes:
    table: ``(L, O, Bw, Ba)`` float32, the chosen metric.
    fixed_cost: cost of the layers every SubNet has (stem, classifier).
    reference: C_ref.
    form, weight, budget: from the ``cost`` config section.
  """

  table: jax.Array
  fixed_cost: jax.Array
  reference: jax.Array
  weight: jax.Array
  budget: jax.Array
  form: str

  @classmethod
  def create(
    cls,
    table: np.ndarray,
    fixed_cost: float,
    reference: float,
    form: str,
    weight: float,
    budget: float | None,
  ) -> "CostObjective":
    """Builds the objective with every number as a float32 array of fixed shape."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return cls(
      table=f32(table),
      fixed_cost=f32(fixed_cost),
      reference=f32(reference),
      weight=f32(weight),
      budget=f32(1.0 if budget is None else budget),
      form=form,
    )

  def expected(self, probs: Probs) -> jax.Array:
    return self.fixed_cost + expected_cost(self.table, probs)

  def penalty(self, cost: jax.Array) -> jax.Array:
    if self.form == "linear":
      return self.weight * cost / self.reference
    if self.form == "hinge":
      return self.weight * jax.nn.relu(cost / self.budget - 1.0)
    raise ValueError(f"unknown cost form {self.form!r}")


def costliest_subnet(table: np.ndarray, op_mask: np.ndarray, fixed_cost: float) -> float:
  """C_ref: fixed cost plus, per choice point, the most expensive fitting op at any bits."""
  per_op = table.reshape(*table.shape[:2], -1).max(axis=-1)  # (L, O)
  return float(fixed_cost + np.where(op_mask, per_op, -np.inf).max(axis=1).sum())
