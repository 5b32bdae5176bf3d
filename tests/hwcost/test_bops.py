"""BopsModel: bops = MACs·b_w·b_a, flash and activation bytes by their equations."""

import math

import pytest

from hwcost import BopsModel, CostTableError, LayerSpec

_SPECS = [
  LayerSpec("conv", "conv", 3, 1, 16, 16, (8, 8), (8, 8)),
  LayerSpec("dw", "conv", 3, 2, 16, 16, (8, 8), (4, 4), groups=16),
  LayerSpec("grouped", "conv", 1, 1, 6, 9, (5, 5), (5, 5), groups=3),
  LayerSpec("fc", "linear", 1, 1, 37, 10, (1, 1), (1, 1)),
]


@pytest.mark.parametrize("spec", _SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("w_bits", [2, 3, 4, 8])
@pytest.mark.parametrize("a_bits", [2, 4, 8])
def test_equations(spec, w_bits, a_bits):
  cost = BopsModel().cost(spec, w_bits, a_bits)
  assert cost.provenance == "bops"
  assert set(cost.values) == {"bops", "flash_bytes", "act_bytes"}
  assert cost.values["bops"] == spec.macs * w_bits * a_bits
  assert cost.values["flash_bytes"] == math.ceil(spec.weight_count * w_bits / 8) + 4 * spec.cout
  assert cost.values["act_bytes"] == math.ceil(spec.in_elems * a_bits / 8) + spec.out_elems


def test_groups_are_counted_by_hand():
  model = BopsModel()
  dw = model.cost(_SPECS[1], 4, 8).values
  # 4*4 outputs * 16 channels * 1 input channel each * 9 taps = 2304 MACs.
  assert dw["bops"] == 2304 * 4 * 8
  assert dw["flash_bytes"] == 144 * 4 / 8 + 64  # 144 weights at 4 bits + 16 int32 biases
  grouped = model.cost(_SPECS[2], 3, 8).values
  # 25 outputs * 9 channels * 2 inputs per group = 450 MACs; 18 weights at 3 bits = 6.75 -> 7 B.
  assert grouped["bops"] == 450 * 3 * 8
  assert grouped["flash_bytes"] == 7 + 36


@pytest.mark.parametrize("w_bits, a_bits", [(1, 8), (8, 1), (0, 4), (4.0, 4), (True, 8)])
def test_rejects_under_two_bits(w_bits, a_bits):
  model = BopsModel()
  assert not model.supports(w_bits, a_bits)
  with pytest.raises(CostTableError, match=r"bops: layer 'fc': .* unsupported"):
    model.cost(_SPECS[3], w_bits, a_bits)
