"""Capability masks and memory budgets: what the target cannot run or hold is never derived."""

from importlib import resources

import jax
import numpy as np
import pytest

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.errors import ConfigError
from qdarts.supernet import choice_masks, masked_logits


def _bitfusion(tmp_path, replace: dict, extra: str = "") -> str:
  text = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  for old, new in replace.items():
    assert old in text
    text = text.replace(old, new)
  path = tmp_path / "target.yaml"
  path.write_text(text + extra)
  return str(path)


ALL_PAIRS = "supported: {w_bits: [2, 4, 8], a_bits: [2, 4, 8]}"
NO_2BIT_WEIGHTS = {
  ALL_PAIRS: "supported: {w_bits: [4, 8], a_bits: [2, 4, 8]}",
  "unsupported_policy: promote": "unsupported_policy: error",
}


def test_choice_masks_factor_a_product_and_flag_the_rest():
  op_mask = np.array([[True, True, False]])
  pair = np.zeros((1, 3, 2, 2), bool)
  pair[0, 0] = [[False, False], [True, True]]  # weights: only the 2nd width; any activation
  pair[0, 1] = [[True, False], [False, True]]  # diagonal: not a product
  masks, not_product = choice_masks(op_mask, pair)
  assert masks.w[0, 0].tolist() == [False, True] and masks.a[0, 0].tolist() == [True, True]
  assert not_product == [(0, 1)]
  assert masks.op.tolist() == [[True, True, False]]


def test_unsupported_weight_width_is_masked_and_never_derived(
  quickstart_path, tiny_overrides, tmp_path
):
  target = _bitfusion(tmp_path, NO_2BIT_WEIGHTS)
  # a heavy latency weight: without the mask the search would pick the cheapest, 2-bit weights
  overrides = [*tiny_overrides, f"cost.target={target}", "cost.metric=latency_ms", "cost.weight=20"]
  setup = pipeline.prepare(load_config(quickstart_path, overrides))
  quantized = np.array([[bool(specs) for specs in row] for row in setup.candidate_layers])
  assert not setup.masks.w[quantized][:, 0].any() and setup.masks.w[quantized][:, 1:].all()
  logits = masked_logits(setup.supernet)
  p_w = jax.nn.softmax(logits["w"], -1)
  assert float(p_w[quantized][:, 0].max()) == 0.0  # exactly zero probability, not just small
  (tmp_path / "run").mkdir()
  result = pipeline.run(setup, tmp_path / "run")
  bits = [layer["w_bits"] for layer in result["subnet"] if layer["w_bits"] is not None]
  assert bits and set(bits) <= {4, 8}


def test_pairs_that_separate_logits_cannot_express_are_rejected(
  quickstart_path, tiny_overrides, tmp_path
):
  target = _bitfusion(
    tmp_path,
    {
      ALL_PAIRS: "supported: [[8, 8], [4, 4]]",
      "unsupported_policy: promote": "unsupported_policy: error",
    },
  )
  cfg = load_config(
    quickstart_path,
    [*tiny_overrides, f"cost.target={target}", "quant.w_bits=[4,8]", "quant.a_bits=[4,8]"],
  )
  with pytest.raises(ConfigError, match=r"only at w4a4, w8a8: not every combination"):
    pipeline.prepare(cfg)


def test_candidates_larger_than_sram_are_masked(quickstart_path, tiny_overrides, tmp_path):
  # the tiny space's largest op works on 8×8×4 inputs; 0.4 KiB holds only the small ones
  target = _bitfusion(tmp_path, {"sram_kib: ": "sram_kib: 0.4 #"})
  setup = pipeline.prepare(load_config(quickstart_path, [*tiny_overrides, f"cost.target={target}"]))
  sram = 0.4 * 1024
  from qdarts.objective import peak_act_table

  peak = peak_act_table(setup.candidate_layers, setup.cost_model, (2, 4, 8), (2, 4, 8))
  allowed = (
    setup.masks.op[..., None, None] & setup.masks.w[..., :, None] & setup.masks.a[..., None, :]
  )
  assert (peak[allowed] <= sram).all()
  assert (peak > sram).any() and allowed.any()
  assert "peak_act_bytes" in setup.objective.metrics  # the SRAM budget is a term of its own


def test_a_stem_larger_than_sram_is_an_error(quickstart_path, tiny_overrides, tmp_path):
  target = _bitfusion(tmp_path, {"sram_kib: ": "sram_kib: 0.01 #"})
  with pytest.raises(ConfigError, match=r"layer 'stem.conv3x3' needs .* memory.sram_kib"):
    pipeline.prepare(load_config(quickstart_path, [*tiny_overrides, f"cost.target={target}"]))
