"""The built-in targets in configs/targets/: every file costs every op class, pinned values.

The pinned numbers are written here as the YAML files state them, so a silent change to a file
or to the roofline model fails a test.
"""

import itertools
import math
import pathlib

import pytest

from hwcost import METRICS, LayerSpec, load_target

_TARGETS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "targets"
_YAMLS = sorted(_TARGETS.glob("*.yaml"))
_M7 = _TARGETS / "cortex_m7_cmsisnn.yaml"
_GAP8 = _TARGETS / "gap8_pulpnn.yaml"
_BITS = (2, 4, 8)

# One of each op class the search spaces use.
_CONV3 = LayerSpec("conv3x3", "conv", 3, 1, 16, 16, (8, 8), (8, 8))
_CONV5 = LayerSpec("conv5x5", "conv", 5, 1, 16, 24, (8, 8), (8, 8))
_DW3 = LayerSpec("dw3x3", "conv", 3, 1, 16, 16, (8, 8), (8, 8), groups=16)
_PW = LayerSpec("pw1x1", "conv", 1, 1, 16, 32, (8, 8), (8, 8))
_FC = LayerSpec("fc", "linear", 1, 1, 64, 10, (1, 1), (1, 1))
_LAYERS = (_CONV3, _CONV5, _DW3, _PW, _FC)

# _CONV3 by hand: 8*8 outputs * 16 * 16 * 9 MACs; weights 2304 B at w8 + 64 B int32 bias;
# input 1024 B at a8, output 1024 B (8-bit container).
_CONV3_MACS = 8 * 8 * 16 * 16 * 9  # 147,456
_CONV3_W8A8_BYTES = 2304 + 64 + 1024 + 1024  # 4,416


def test_the_builtins_are_there():
  names = {p.name for p in _YAMLS}
  assert {"bitfusion45.yaml", "cortex_m7_cmsisnn.yaml", "gap8_pulpnn.yaml"} <= names


@pytest.mark.parametrize("path", _YAMLS, ids=lambda p: p.stem)
def test_every_target_costs_every_op_class_at_every_pair(path):
  model = load_target(path)
  assert model.target.sources and model.target.description
  for spec, w_bits, a_bits in itertools.product(_LAYERS, _BITS, _BITS):
    assert model.supports(w_bits, a_bits, spec), (spec.name, w_bits, a_bits)
    cost = model.cost(spec, w_bits, a_bits)
    assert set(cost.values) == set(METRICS)
    for metric, value in cost.values.items():
      assert math.isfinite(value) and value > 0, (spec.name, w_bits, a_bits, metric, value)
    assert cost.provenance.startswith(f"analytic:{model.name} ")
    if (w_bits, a_bits) in model.target.supported:
      assert "promoted" not in cost.provenance
    else:
      assert f"promoted a{a_bits}w{w_bits} -> a" in cost.provenance, cost.provenance


# --- cortex_m7_cmsisnn: 480 MHz, 0.22 MACs/cycle (every op class, a8w8 and a8w4), 4 B/cycle,
# 102.45 mW active power, 0 pJ/MAC and 0 pJ/B (all energy is power x time).
_M7_CLOCK_MHZ = 480
_M7_MACS_PER_CYCLE = 0.22
_M7_BYTES_PER_CYCLE = 4
_M7_POWER_MW = 102.45


def test_m7_data_sheet():
  target = load_target(_M7).target
  assert target.name == "cortex_m7_cmsisnn"
  assert target.supported == ((4, 8), (8, 8))
  assert target.unsupported_policy == "promote"
  assert target.clock_mhz == _M7_CLOCK_MHZ and target.static_power_mw == _M7_POWER_MW
  assert target.memory.sram_bytes == 512 * 1024 and target.memory.flash_bytes == 2048 * 1024
  for op in ("conv", "depthwise", "linear"):
    assert target.compute[op].macs_per_cycle == {(8, 8): 0.22, (4, 8): 0.22}


def test_m7_conv3x3_w8a8_by_hand():
  cost = load_target(_M7).cost(_CONV3, 8, 8).values
  compute_cycles = _CONV3_MACS / _M7_MACS_PER_CYCLE  # 670,254.5
  memory_cycles = _CONV3_W8A8_BYTES / _M7_BYTES_PER_CYCLE  # 1,104
  latency_ms = max(compute_cycles, memory_cycles) / (_M7_CLOCK_MHZ * 1e3)
  assert latency_ms == pytest.approx(1.396364, rel=1e-6)
  assert cost["latency_ms"] == pytest.approx(latency_ms, rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(_M7_POWER_MW * latency_ms, rel=1e-12)  # 143.06 µJ
  assert cost["flash_bytes"] == 2304 + 64 and cost["act_bytes"] == 1024 + 1024


def test_m7_depthwise_and_linear_by_hand():
  model = load_target(_M7)
  dw = model.cost(_DW3, 8, 8).values  # 9,216 MACs; 144 + 64 + 1024 + 1024 B
  assert dw["latency_ms"] == pytest.approx(9216 / 0.22 / (480 * 1e3), rel=1e-12)
  fc = model.cost(_FC, 8, 8).values  # 640 MACs; 640 + 40 + 64 + 10 B
  assert fc["latency_ms"] == pytest.approx(640 / 0.22 / (480 * 1e3), rel=1e-12)
  assert fc["energy_uj"] == pytest.approx(102.45 * fc["latency_ms"], rel=1e-12)


@pytest.mark.parametrize("spec", [_CONV3, _CONV5, _DW3, _PW], ids=lambda s: s.name)
def test_m7_int4_weights_save_flash_not_cycles(spec):
  model = load_target(_M7)
  w8, w4 = model.cost(spec, 8, 8).values, model.cost(spec, 4, 8).values
  assert spec.macs / _M7_MACS_PER_CYCLE > (w8["flash_bytes"] + w8["act_bytes"]) / 4  # compute bound
  assert w4["latency_ms"] == w8["latency_ms"]
  assert w4["energy_uj"] == w8["energy_uj"]
  assert w4["flash_bytes"] < w8["flash_bytes"]
  assert w4["flash_bytes"] == math.ceil(spec.weight_count / 2) + 4 * spec.cout


@pytest.mark.parametrize("w_bits", _BITS)
@pytest.mark.parametrize("a_bits", [2, 4])
def test_m7_narrow_activations_are_costed_as_int8(w_bits, a_bits):
  model = load_target(_M7)
  w_run = 4 if w_bits <= 4 else 8  # 2-bit weights run as 4-bit (least wider supported pair)
  cost = model.cost(_CONV3, w_bits, a_bits)
  ran = model.cost(_CONV3, w_run, 8)
  assert cost.values == ran.values
  assert cost.provenance.endswith(f"; promoted a{a_bits}w{w_bits} -> a8w{w_run}")


def test_m7_two_bit_weights_run_as_four():
  model = load_target(_M7)
  cost = model.cost(_CONV3, 2, 8)
  assert cost.values == model.cost(_CONV3, 4, 8).values
  assert cost.provenance.endswith("; promoted a8w2 -> a8w4")


# --- gap8_pulpnn: 250 MHz, conv 15.5 MACs/cycle at every pair, depthwise 1.0, linear 8,
# 8 B/cycle, 63 / 976.5 / 122.0625 pJ/MAC, 0 pJ/B, no static power.
_GAP8_CLOCK_MHZ = 250
_GAP8_BYTES_PER_CYCLE = 8


def test_gap8_data_sheet():
  target = load_target(_GAP8).target
  assert target.name == "gap8_pulpnn"
  assert target.supported == tuple(itertools.product(_BITS, _BITS))
  assert target.clock_mhz == _GAP8_CLOCK_MHZ and target.static_power_mw == 0
  assert target.memory.sram_bytes == 512 * 1024 and target.memory.flash_bytes is None
  conv = target.compute["conv"]
  assert set(conv.macs_per_cycle.values()) == {15.5}
  assert set(target.compute["depthwise"].macs_per_cycle.values()) == {1.0}
  assert set(target.compute["linear"].macs_per_cycle.values()) == {8}
  # Depthwise and linear energy = conv's 63 pJ/MAC at constant energy per cycle.
  assert target.compute["depthwise"].energy_pj_per_mac[8, 8] == pytest.approx(63 * 15.5 / 1.0)
  assert target.compute["linear"].energy_pj_per_mac[8, 8] == pytest.approx(63 * 15.5 / 8)


def test_gap8_conv3x3_w8a8_by_hand():
  cost = load_target(_GAP8).cost(_CONV3, 8, 8).values
  compute_cycles = _CONV3_MACS / 15.5  # 9,513.3
  memory_cycles = _CONV3_W8A8_BYTES / _GAP8_BYTES_PER_CYCLE  # 552
  latency_ms = max(compute_cycles, memory_cycles) / (_GAP8_CLOCK_MHZ * 1e3)
  assert latency_ms == pytest.approx(0.0380532, rel=1e-5)
  assert cost["latency_ms"] == pytest.approx(latency_ms, rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(_CONV3_MACS * 63 * 1e-6, rel=1e-12)  # 9.29 µJ


def test_gap8_depthwise_by_hand():
  cost = load_target(_GAP8).cost(_DW3, 8, 8).values
  macs = 8 * 8 * 16 * 9  # 9,216: 9,216 cycles at 1 MAC/cycle > (144 + 64 + 2048) / 8
  assert cost["latency_ms"] == pytest.approx(macs / 1.0 / (250 * 1e3), rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(macs * 976.5 * 1e-6, rel=1e-12)


@pytest.mark.parametrize("bits, moved", [(8, 640 + 40 + 64 + 10), (2, 160 + 40 + 16 + 10)])
def test_gap8_linear_by_hand(bits, moved):
  cost = load_target(_GAP8).cost(_FC, bits, bits).values
  # channel_granularity {cin: 2, cout: 4}: 64 -> 10 runs as 64 -> 12, 768 MACs / 8 = 96 cycles
  # (PLiNIO: ceil(64/2) * ceil(10/4) = 96): compute bound against 94.25 memory cycles at w8a8
  # and 28.25 at w2a2.
  cycles = max(64 * 12 / 8, moved / _GAP8_BYTES_PER_CYCLE)
  assert cycles == 96
  assert cost["latency_ms"] == pytest.approx(cycles / (250 * 1e3), rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(768 * 122.0625 * 1e-6, rel=1e-12)


@pytest.mark.parametrize("w_bits, a_bits", list(itertools.product(_BITS, _BITS)))
def test_gap8_depthwise_is_much_slower_per_mac_than_conv(w_bits, a_bits):
  model = load_target(_GAP8)
  per_mac = {
    spec.name: model.cost(spec, w_bits, a_bits).values["latency_ms"] / spec.macs
    for spec in (_CONV3, _PW, _DW3)
  }
  assert per_mac["dw3x3"] > 10 * per_mac["conv3x3"]
  assert per_mac["dw3x3"] > 10 * per_mac["pw1x1"]


@pytest.mark.parametrize("spec", [_CONV3, _CONV5, _PW], ids=lambda s: s.name)
def test_gap8_fewer_bits_never_cost_more_conv_latency(spec):
  model = load_target(_GAP8)
  latency = {(w, a): model.cost(spec, w, a).values["latency_ms"] for w in _BITS for a in _BITS}
  for (w, a), (w2, a2) in itertools.product(latency, latency):
    if w <= w2 and a <= a2:
      assert latency[w, a] <= latency[w2, a2], ((w, a), (w2, a2))
