"""Expected cost: the einsum against a loop, its gradients against finite differences, and
the one-hot case against the cost model's exact value."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwcost import BopsModel, build_cost_tables, layers_cost
from qdarts.objective import CostObjective, costliest_subnet, expected_cost
from qdarts.relaxation import expected_probs
from search_spaces import Probs, TinySpace

W_BITS, A_BITS = (2, 4, 8), (2, 4, 8)


@pytest.fixture(scope="module")
def space_tables():
  from flax import nnx

  space = TinySpace((8, 8, 1), 4, 4, (4, 8, 8), (1, 2, 1), ("conv3x3", "dwsep3x3", "skip"))
  net = space.build(W_BITS, A_BITS, nnx.Rngs(0))
  layers = space.candidate_layers(net)
  tables = build_cost_tables(layers, BopsModel(), W_BITS, A_BITS, ("bops",))
  return space, layers, tables


def _random_logits(shape_op, shape_w, shape_a, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s) for k, s in (("op", shape_op), ("w", shape_w), ("a", shape_a))}


def test_einsum_equals_loop_over_discrete_choices(space_tables):
  _, _, tables = space_tables
  table = tables.values[0]
  num_l, num_o, nw, na = table.shape
  probs = expected_probs(_random_logits((num_l, num_o), (num_l, num_o, nw), (num_l, num_o, na)))
  p, q, r = (np.asarray(x, np.float64) for x in probs)
  loop = sum(
    p[l, o] * q[l, o, w] * r[l, o, a] * table[l, o, w, a]
    for l, o, w, a in itertools.product(range(num_l), range(num_o), range(nw), range(na))
  )
  got = float(expected_cost(jnp.asarray(table, jnp.float32), probs))
  np.testing.assert_allclose(got, loop, rtol=1e-5)


def test_gradient_matches_finite_differences(space_tables):
  """∂E[C]/∂(α, β, γ) through the softmaxes, in float64, by central differences."""
  _, _, tables = space_tables
  table = tables.values[0] / tables.values[0].max()  # O(1) values
  num_l, num_o, nw, na = table.shape
  with jax.enable_x64(True):
    logits = {
      k: jnp.asarray(v)
      for k, v in _random_logits((num_l, num_o), (num_l, num_o, nw), (num_l, num_o, na), 1).items()
    }
    t = jnp.asarray(table, jnp.float64)

    def cost(lg):
      return expected_cost(t, expected_probs(lg))

    grads = jax.grad(cost)(logits)
    eps = 1e-6
    for key in ("op", "w", "a"):
      flat = np.asarray(logits[key]).ravel()
      for i in np.random.default_rng(2).choice(flat.size, 8, replace=False):
        bumped = [flat.copy(), flat.copy()]
        bumped[0][i] += eps
        bumped[1][i] -= eps
        plus, minus = (
          float(cost({**logits, key: jnp.asarray(b.reshape(logits[key].shape))})) for b in bumped
        )
        fd = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(float(grads[key].ravel()[i]), fd, rtol=1e-6, atol=1e-9)
    assert float(jnp.abs(grads["op"]).sum()) > 0  # the cost pushes the op choice too


def test_one_hot_expected_cost_equals_cost_model_exactly(space_tables):
  space, layers, tables = space_tables
  table = tables.values[0]
  mask = np.asarray(tables.op_mask)
  rng = np.random.default_rng(3)
  for _ in range(5):
    ops = [rng.choice(np.flatnonzero(mask[l])) for l in range(len(layers))]
    wi, ai = rng.integers(0, 3, len(layers)), rng.integers(0, 3, len(layers))
    num_l, num_o = mask.shape
    p = np.zeros((num_l, num_o))
    q, r = np.zeros((num_l, num_o, 3)), np.zeros((num_l, num_o, 3))
    p[range(num_l), ops] = 1
    q[range(num_l), ops, wi] = 1
    r[range(num_l), ops, ai] = 1
    exact = sum(
      layers_cost(layers[l][ops[l]], BopsModel(), W_BITS[wi[l]], A_BITS[ai[l]])["bops"]
      for l in range(num_l)
    )
    with jax.enable_x64(True):
      got = expected_cost(jnp.asarray(table), Probs(*(jnp.asarray(x) for x in (p, q, r))))
      assert float(got) == exact


def _objective(form, weight, budget=None, reference=4.0, peak=False, table=None):
  table = np.ones((1, 1, 1, 1)) if table is None else table
  return CostObjective.create(
    [
      {
        "metric": "peak_act_bytes" if peak else "bops",
        "form": form,
        "weight": weight,
        "budget": budget,
        "table": table,
        "fixed": 0.0,
        "reference": reference,
        "peak": peak,
      }
    ]
  )


def test_penalty_forms():
  assert float(_objective("linear", 0.5).penalty(jnp.asarray([2.0]))) == pytest.approx(0.25)
  hinge = _objective("hinge", 2.0, budget=1.0)
  assert float(hinge.penalty(jnp.asarray([0.5]))) == 0.0
  assert float(hinge.penalty(jnp.asarray([1.5]))) == pytest.approx(1.0)
  log = _objective("log", 1.0)
  assert float(log.penalty(jnp.asarray([2.0]))) == pytest.approx(np.log(0.5))
  budget = _objective("budget", 3.0, budget=2.0)
  assert float(budget.penalty(jnp.asarray([3.0]))) == pytest.approx(3.0 * 0.5)


def test_several_terms_add_up():
  table = np.ones((1, 1, 1, 1))
  both = CostObjective.create(
    [
      {
        "metric": m,
        "form": "linear",
        "weight": w,
        "budget": None,
        "table": table,
        "fixed": 0.0,
        "reference": 2.0,
        "peak": False,
      }
      for m, w in (("latency_ms", 1.0), ("energy_uj", 3.0))
    ]
  )
  assert float(both.penalty(jnp.asarray([1.0, 1.0]))) == pytest.approx(0.5 + 1.5)


def test_dual_ascent_raises_lambda_over_budget_and_lowers_it_under():
  obj = _objective("budget", 1.0, budget=10.0)
  over = obj.dual_update(jnp.asarray([15.0]), jnp.float32(0.2))
  assert float(over.weight[0]) == pytest.approx(1.0 + 0.2 * 0.5)
  under = obj.dual_update(jnp.asarray([0.0]), jnp.float32(10.0))
  assert float(under.weight[0]) == 0.0  # λ ≥ 0
  linear = _objective("linear", 1.0).dual_update(jnp.asarray([15.0]), jnp.float32(0.2))
  assert float(linear.weight[0]) == 1.0  # only budget terms move


def test_peak_metric_is_a_smooth_max_in_search_and_exact_max_in_report():
  table = np.zeros((3, 1, 1, 1))
  table[:, 0, 0, 0] = [100.0, 300.0, 200.0]
  obj = _objective("linear", 1.0, reference=300.0, peak=True, table=table)
  ones = Probs(jnp.ones((3, 1)), jnp.ones((3, 1, 1)), jnp.ones((3, 1, 1)))
  assert float(obj.costs(ones, exact=True)[0]) == 300.0
  smooth = float(obj.costs(ones)[0])
  assert 300.0 <= smooth <= 300.0 * (1 + np.log(4) / 20) + 1e-3


def test_objective_is_a_pytree_so_weights_do_not_recompile():
  traces = 0

  @jax.jit
  def f(obj):
    nonlocal traces
    traces += 1
    return obj.penalty(jnp.asarray([1.0]))

  for w in (0.0, 0.5, 2.0):
    f(_objective("linear", w))
  assert traces == 1


def test_reference_is_the_costliest_subnet():
  table = np.zeros((2, 2, 1, 2))
  table[0, 0, 0] = [1, 3]
  table[0, 1, 0] = [2, 9]  # op 1 of layer 0 does not fit: ignored
  table[1, 1, 0] = [5, 7]
  mask = np.array([[True, False], [True, True]])
  assert costliest_subnet(table, mask, 10.0, peak=False) == 10 + 3 + 7
  assert costliest_subnet(table, mask, 10.0, peak=True) == 10  # max(fixed, 3, 7)
