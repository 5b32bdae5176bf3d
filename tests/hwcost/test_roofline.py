"""RooflineModel: the built-in BitFusion target, hand-computed latencies, promotion."""

import itertools
import math

import pytest
import yaml

from hwcost import METRICS, CostModel, CostTableError, LayerSpec, RooflineModel, load_target

_BITS = (2, 4, 8)
_BIG_CONV = LayerSpec("big", "conv", 3, 1, 64, 64, (16, 16), (16, 16))
_TINY_1X1 = LayerSpec("tiny", "conv", 1, 1, 4, 4, (32, 32), (32, 32))
_DEPTHWISE = LayerSpec("dw", "conv", 3, 1, 32, 32, (16, 16), (16, 16), groups=32)
_FC = LayerSpec("fc", "linear", 1, 1, 256, 10, (1, 1), (1, 1))
_FC16 = LayerSpec("fc", "linear", 1, 1, 16, 10, (1, 1), (1, 1))


def test_bitfusion45_loads(bitfusion_path):
  model = load_target(bitfusion_path)
  assert isinstance(model, RooflineModel) and isinstance(model, CostModel)
  assert model.name == "bitfusion45" and model.metrics == METRICS
  assert model.target.supported == tuple(itertools.product(_BITS, _BITS))
  assert model.target.clock_mhz == 500 and model.target.sources
  assert all(model.supports(w, a) for w in _BITS for a in _BITS)
  assert not model.supports(16, 8)  # 16 bits: nothing to promote to


@pytest.mark.parametrize(
  "w_bits, a_bits, macs_per_cycle",
  [(8, 8, 512), (4, 8, 1024), (8, 4, 1024), (4, 4, 2048), (2, 8, 2048), (2, 4, 4096), (2, 2, 8192)],
)
def test_bitfusion_law(bitfusion_path, w_bits, a_bits, macs_per_cycle):
  conv = load_target(bitfusion_path).target.compute["conv"]
  assert conv.macs_per_cycle[w_bits, a_bits] == macs_per_cycle
  assert conv.energy_pj_per_mac[w_bits, a_bits] == pytest.approx(0.459 * 512 / macs_per_cycle)


def test_big_conv_is_compute_bound(bitfusion_path):
  cost = load_target(bitfusion_path).cost(_BIG_CONV, 8, 8)
  macs = 16 * 16 * 64 * 64 * 9  # 9,437,184
  moved = 36864 + 4 * 64 + 16 * 16 * 64 + 16 * 16 * 64  # weights + bias + input + output
  assert macs / 512 > moved / 24  # 18,432 compute cycles > 2,912 memory cycles
  latency_ms = macs / 512 / (500 * 1e3)
  assert cost.values["latency_ms"] == pytest.approx(latency_ms, rel=1e-12)
  energy_uj = (macs * 0.459 + moved * 167.5) * 1e-6 + 30.46 * latency_ms
  assert cost.values["energy_uj"] == pytest.approx(energy_uj, rel=1e-12)
  assert cost.values["bops"] == macs * 64
  assert cost.provenance == f"analytic:bitfusion45 ({bitfusion_path})"


@pytest.mark.parametrize("bits, moved", [(8, 16 + 16 + 4096 + 4096), (2, 4 + 16 + 1024 + 4096)])
def test_tiny_1x1_is_memory_bound(bitfusion_path, bits, moved):
  cost = load_target(bitfusion_path).cost(_TINY_1X1, bits, bits)
  macs = 32 * 32 * 4 * 4  # 16,384: 32 cycles at 512 MACs/cycle, 2 at 8192
  assert macs / 512 < moved / 24
  assert cost.values["latency_ms"] == pytest.approx(moved / 24 / (500 * 1e3), rel=1e-12)


@pytest.mark.parametrize("spec", [_BIG_CONV, _TINY_1X1, _DEPTHWISE, _FC], ids=lambda s: s.name)
@pytest.mark.parametrize("metric", ["latency_ms", "energy_uj", "bops", "flash_bytes", "act_bytes"])
def test_fewer_bits_never_cost_more(bitfusion_path, spec, metric):
  model = load_target(bitfusion_path)
  cost = {(w, a): model.cost(spec, w, a).values[metric] for w in _BITS for a in _BITS}
  for (w, a), (w2, a2) in itertools.product(cost, cost):
    if w <= w2 and a <= a2:
      assert cost[w, a] <= cost[w2, a2], ((w, a), (w2, a2))


def test_hand_computed_small_target(eight_bit_target):
  cost = eight_bit_target("error").cost(_FC16, 8, 8).values
  # 160 MACs / 10 = 16 cycles; bytes 160 + 40 + 16 + 10 = 226, / 4 = 56.5 cycles; + 5 overhead.
  assert cost["latency_ms"] == pytest.approx(61.5 / (100 * 1e3), rel=1e-12)
  assert cost["energy_uj"] == pytest.approx((160 * 1.0 + 226 * 2.0) * 1e-6, rel=1e-12)


def test_promote_costs_the_next_pair_up_and_says_so(eight_bit_target):
  model = eight_bit_target("promote")
  assert model.supports(4, 2) and model.supports(8, 8) and not model.supports(16, 8)
  assert not model.supports(0, 8) and not model.supports(4.0, 8)
  promoted, native = model.cost(_FC16, 4, 2), model.cost(_FC16, 8, 8)
  assert promoted.values == native.values
  assert promoted.provenance.endswith("eight.yaml); promoted a2w4 -> a8w8")
  match = r"eight\.yaml: layer 'fc': a8w16 .* not supported by target 'eight' \(nothing supported"
  with pytest.raises(CostTableError, match=match + r" is as wide; supported: a8w8\)"):
    model.cost(_FC16, 16, 8)


def test_error_policy_refuses(eight_bit_target):
  model = eight_bit_target("error")
  assert model.supports(8, 8) and not model.supports(4, 8)
  match = r"eight\.yaml: layer 'fc': a8w4 \(w_bits=4, a_bits=8\) is not supported by target "
  with pytest.raises(CostTableError, match=match + r"'eight' \(unsupported_policy: error"):
    model.cost(_FC16, 4, 8)


def test_promote_picks_the_narrowest_wider_pair(tmp_path, eight_bit_doc):
  doc = eight_bit_doc
  doc["precision"]["supported"] = [[8, 8], [4, 8], [8, 4]]
  for op in doc["compute"].values():
    op["macs_per_cycle"] = {"a8w8": 10, "a8w4": 20, "a4w8": 30}
    op["energy_pj_per_mac"] = 1.0
  path = tmp_path / "three.yaml"
  path.write_text(yaml.safe_dump(doc))
  model = load_target(path)
  # (2, 2) fits under (4, 8) and (8, 4), equally wide (32 bit-products): the narrower w wins.
  assert model.cost(_FC16, 2, 2).provenance.endswith("promoted a2w2 -> a8w4")
  assert model.cost(_FC16, 8, 2).provenance.endswith("promoted a2w8 -> a4w8")


def test_static_power_adds_power_times_time(tmp_path, eight_bit_doc):
  eight_bit_doc["static_power_mw"] = 10.0
  path = tmp_path / "leaky.yaml"
  path.write_text(yaml.safe_dump(eight_bit_doc))
  cost = load_target(path).cost(_FC16, 8, 8).values
  assert cost["energy_uj"] == pytest.approx(612e-6 + 10.0 * cost["latency_ms"], rel=1e-12)
  assert math.isclose(cost["latency_ms"], 61.5e-5)
