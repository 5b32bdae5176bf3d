"""build_cost_tables against a Python loop over discrete choices; masks; layers_cost."""

import numpy as np
import pytest

from hwcost import (
  BopsModel,
  CostTableError,
  LayerSpec,
  build_cost_tables,
  layers_cost,
  load_target,
)

_W_BITS = (2, 4, 8)
_A_BITS = (4, 8)


def _sep_conv(c: int, hw: int) -> list[LayerSpec]:
  return [
    LayerSpec("sep.dw", "conv", 3, 1, c, c, (hw, hw), (hw, hw), groups=c),
    LayerSpec("sep.pw", "conv", 1, 1, c, c, (hw, hw), (hw, hw)),
  ]


# Two choice points: the first with three candidates (sep conv, skip = no layers, 3x3 conv),
# the second with two (a linear layer, a padded slot) and one missing slot.
_OPS_LAYERS = [
  [_sep_conv(8, 8), [], [LayerSpec("c3", "conv", 3, 1, 8, 16, (8, 8), (8, 8))]],
  [[LayerSpec("fc", "linear", 1, 1, 16, 10, (1, 1), (1, 1))], None],
]


def _loop_oracle(ops_layers, model, metrics):
  """T[m, l, o, i, j] by the definition: a sum of per-layer costs, one choice at a time."""
  n_ops = max(len(ops) for ops in ops_layers)
  out = np.zeros((len(metrics), len(ops_layers), n_ops, len(_W_BITS), len(_A_BITS)))
  for l, ops in enumerate(ops_layers):  # noqa: E741
    for o, layers in enumerate(ops):
      for i, w in enumerate(_W_BITS):
        for j, a in enumerate(_A_BITS):
          for k, metric in enumerate(metrics):
            out[k, l, o, i, j] = sum(model.cost(s, w, a).values[metric] for s in layers or [])
  return out


def test_bops_tables_equal_the_loop():
  metrics = ("bops", "flash_bytes", "act_bytes")
  tables = build_cost_tables(_OPS_LAYERS, BopsModel(), _W_BITS, _A_BITS, metrics)
  assert tables.metrics == metrics
  assert tables.values.shape == (3, 2, 3, 3, 2) and tables.values.dtype == np.float64
  np.testing.assert_array_equal(tables.values, _loop_oracle(_OPS_LAYERS, BopsModel(), metrics))
  np.testing.assert_array_equal(tables.op_mask, [[True, True, True], [True, False, False]])
  np.testing.assert_array_equal(
    tables.pair_mask, np.broadcast_to(tables.op_mask[..., None, None], (2, 3, 3, 2))
  )
  # The skip op computes nothing: 0 at every pair, and every pair is allowed.
  assert not tables.values[:, 0, 1].any()
  # By hand: sep conv bops at w2/a4 = (8*8*8*9 + 8*8*8*8) MACs * 2 * 4.
  assert tables.metric("bops")[0, 0, 0, 0] == (4608 + 4096) * 8


def test_roofline_tables_equal_the_loop(bitfusion_path):
  model = load_target(bitfusion_path)
  tables = build_cost_tables(_OPS_LAYERS, model, _W_BITS, _A_BITS, ("latency_ms", "energy_uj"))
  oracle = _loop_oracle(_OPS_LAYERS, model, ("latency_ms", "energy_uj"))
  np.testing.assert_allclose(tables.values, oracle, rtol=1e-12, atol=0)


def test_unsupported_pairs_are_masked_and_zero(eight_bit_target):
  model = eight_bit_target("error")
  ops_layers = [[[LayerSpec("fc", "linear", 1, 1, 16, 10, (1, 1), (1, 1))], []]]
  tables = build_cost_tables(ops_layers, model, (4, 8), (4, 8), ("latency_ms",))
  # Only w8/a8 is supported for the linear op; the empty op supports every pair.
  np.testing.assert_array_equal(tables.pair_mask[0, 0], [[False, False], [False, True]])
  assert tables.pair_mask[0, 1].all()
  assert tables.values[0, 0, 0, 1, 1] > 0
  assert (tables.values[0, 0, 0][~tables.pair_mask[0, 0]] == 0).all()


def test_unknown_metric_names_it_and_the_models_metrics():
  with pytest.raises(
    CostTableError,
    match=r"'bops' does not provide 'latency_ms'; it provides "
    r"bops, flash_bytes, act_bytes",
  ):
    build_cost_tables(_OPS_LAYERS, BopsModel(), _W_BITS, _A_BITS, ("bops", "latency_ms"))


def test_missing_op_class_raises_instead_of_costing_zero(eight_bit_target):
  model = eight_bit_target("promote")  # has conv and linear, no depthwise
  with pytest.raises(CostTableError, match=r"eight\.yaml: layer 'sep\.dw' is a depthwise layer"):
    build_cost_tables([[_sep_conv(8, 8)]], model, (8,), (8,), ("latency_ms",))


def test_layers_cost_is_the_sum_over_layers():
  layers = _sep_conv(8, 8)
  total = layers_cost(layers, BopsModel(), 4, 8)
  assert total == {
    m: sum(BopsModel().cost(s, 4, 8).values[m] for s in layers) for m in BopsModel.metrics
  }
  assert layers_cost([], BopsModel(), 4, 8) == {"bops": 0.0, "flash_bytes": 0.0, "act_bytes": 0.0}
  with pytest.raises(CostTableError):
    layers_cost(layers, BopsModel(), 1, 8)


@pytest.mark.parametrize("w_bits", [(), (4, 4)])
def test_bad_bit_lists_are_programming_errors(w_bits):
  with pytest.raises(ValueError, match="w_bits must be a non-empty list of distinct widths"):
    build_cost_tables(_OPS_LAYERS, BopsModel(), w_bits, _A_BITS, ("bops",))
