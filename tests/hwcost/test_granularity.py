"""channel_granularity: padded MACs, the GAP8 values it pins, and its validation."""

import pathlib

import pytest
import yaml

from hwcost import ChannelGranularity, CostTableError, LayerSpec, build_cost_tables, load_target
from hwcost.roofline import padded_macs

_GAP8 = pathlib.Path(__file__).resolve().parents[2] / "configs" / "targets" / "gap8_pulpnn.yaml"
_GAP8_KHZ = 250 * 1e3  # cycles per ms at 250 MHz


def test_no_granularity_is_the_true_macs():
  layers = [
    LayerSpec("conv", "conv", 3, 2, 5, 7, (9, 9), (5, 5)),
    LayerSpec("grouped", "conv", 3, 1, 12, 6, (4, 4), (4, 4), groups=3),
    LayerSpec("dw", "conv", 5, 1, 6, 12, (4, 4), (4, 4), groups=6),
    LayerSpec("fc", "linear", 1, 1, 33, 10, (1, 1), (1, 1)),
  ]
  for spec in layers:
    assert padded_macs(spec, ChannelGranularity()) == spec.macs


def test_padded_macs_by_hand():
  conv = LayerSpec("conv", "conv", 3, 1, 6, 6, (8, 8), (8, 8))
  assert padded_macs(conv, ChannelGranularity(cin=4, cout=4)) == 64 * 9 * 8 * 8
  assert padded_macs(conv, ChannelGranularity(cout=4)) == 64 * 9 * 6 * 8
  # groups=2: each output reads 6 input channels, padded to 8; 12 outputs stay 12.
  grouped = LayerSpec("grouped", "conv", 3, 1, 12, 12, (8, 8), (8, 8), groups=2)
  assert padded_macs(grouped, ChannelGranularity(cin=4, cout=4)) == 64 * 9 * 12 * 8
  # depthwise: one input channel per group; the 6 channels pad to 8.
  dw = LayerSpec("dw", "conv", 3, 1, 6, 6, (8, 8), (8, 8), groups=6)
  assert padded_macs(dw, ChannelGranularity(cout=4)) == 64 * 9 * 8 * 1
  fc = LayerSpec("fc", "linear", 1, 1, 33, 10, (1, 1), (1, 1))
  assert padded_macs(fc, ChannelGranularity(cin=2, cout=4)) == 34 * 12


def test_gap8_declares_the_plinio_granularities():
  compute = load_target(_GAP8).target.compute
  assert compute["conv"].channel_granularity == ChannelGranularity(cout=4)
  assert compute["depthwise"].channel_granularity == ChannelGranularity(cout=4)
  assert compute["linear"].channel_granularity == ChannelGranularity(cin=2, cout=4)


def test_gap8_depthwise_pads_channels_to_four():
  dw6 = LayerSpec("dw6", "conv", 3, 1, 6, 6, (8, 8), (8, 8), groups=6)
  cost = load_target(_GAP8).cost(dw6, 8, 8).values
  # PLiNIO: 4 * ceil(6/4) * 8 * 8 * 9 = 4,608 cycles at 1 MAC/cycle (memory: 846 B / 8 = 106).
  cycles = 4 * 2 * 8 * 8 * 9
  assert cost["latency_ms"] == pytest.approx(cycles / _GAP8_KHZ, rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(4608 * 976.5e-6, rel=1e-12)
  assert cost["bops"] == dw6.macs * 64  # bops count the true MACs (3,456), not the padded ones


def test_gap8_linear_pads_cin_to_two_and_cout_to_four():
  fc = LayerSpec("fc", "linear", 1, 1, 33, 10, (1, 1), (1, 1))
  cost = load_target(_GAP8).cost(fc, 2, 2).values
  # PLiNIO: ceil(33/2) * ceil(10/4) = 17 * 3 = 51 cycles = 408 padded MACs / 8; memory at w2a2:
  # (83 + 40 + 9 + 10) B / 8 = 17.75 cycles.
  assert cost["latency_ms"] == pytest.approx(51 / _GAP8_KHZ, rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(408 * 122.0625e-6, rel=1e-12)


def test_gap8_conv_pads_cout_to_four():
  conv = LayerSpec("conv6", "conv", 3, 1, 16, 6, (8, 8), (8, 8))
  cost = load_target(_GAP8).cost(conv, 8, 8).values
  padded = 8 * 8 * 9 * 16 * 8  # 73,728 MACs for 55,296 true; memory: 2,296 B / 8 = 287 cycles
  assert cost["latency_ms"] == pytest.approx(padded / 15.5 / _GAP8_KHZ, rel=1e-12)
  assert cost["energy_uj"] == pytest.approx(padded * 63e-6, rel=1e-12)


def _doc(granularity) -> dict:
  """A w8a8 target, 10 MACs/cycle and 1 pJ/MAC everywhere, with ``granularity`` on linear."""
  op = {"macs_per_cycle": 10, "energy_pj_per_mac": 1.0}
  return {
    "schema_version": 1,
    "name": "grain",
    "description": "test target with channel granularity",
    "sources": ["made up for tests"],
    "clock_mhz": 100,
    "precision": {"supported": [[8, 8]], "unsupported_policy": "error"},
    "memory": {"bandwidth_bytes_per_cycle": 1000, "energy_pj_per_byte": 0.0},
    "compute": {"conv": dict(op), "depthwise": dict(op), "linear": {**op, **granularity}},
  }


def _load(tmp_path, doc):
  path = tmp_path / "grain.yaml"
  path.write_text(yaml.safe_dump(doc))
  return load_target(path)


def test_cost_tables_carry_the_padding(tmp_path):
  fc = LayerSpec("fc", "linear", 1, 1, 30, 10, (1, 1), (1, 1))
  plain = _load(tmp_path, _doc({}))
  grained = _load(tmp_path, _doc({"channel_granularity": {"cout": 8}}))
  metrics = ["latency_ms", "bops"]
  tables = [build_cost_tables([[[fc]]], model, [8], [8], metrics) for model in (plain, grained)]
  # 300 MACs / 10 = 30 cycles; 30 x 16 = 480 padded MACs / 10 = 48 cycles, at 100 MHz.
  assert tables[0].metric("latency_ms")[0, 0, 0, 0] == pytest.approx(30 / 1e5, rel=1e-12)
  assert tables[1].metric("latency_ms")[0, 0, 0, 0] == pytest.approx(48 / 1e5, rel=1e-12)
  assert tables[0].metric("bops")[0, 0, 0, 0] == tables[1].metric("bops")[0, 0, 0, 0]


@pytest.mark.parametrize(
  "op_class, value, field, message",
  [
    ("linear", {"cin": 0}, "channel_granularity.cin", "expected a positive int"),
    ("linear", {"cout": -4}, "channel_granularity.cout", "expected a positive int"),
    ("linear", {"cout": 2.5}, "channel_granularity.cout", "got 2.5"),
    ("linear", {"cout": True}, "channel_granularity.cout", "got True"),
    ("linear", {"cout": "4"}, "channel_granularity.cout", "got '4'"),
    ("linear", {"cin": 2, "cmid": 4}, "channel_granularity.cmid", "unknown key (allowed: cin,"),
    ("linear", {}, "channel_granularity", "expected at least one of cin, cout"),
    ("linear", 4, "channel_granularity", "expected a mapping with keys cin, cout, got 4"),
    ("depthwise", {"cin": 4}, "channel_granularity.cin", "only cout applies"),
  ],
)
def test_bad_granularity_names_file_and_field(tmp_path, op_class, value, field, message):
  doc = _doc({})
  doc["compute"][op_class]["channel_granularity"] = value
  with pytest.raises(CostTableError) as info:
    _load(tmp_path, doc)
  text = str(info.value)
  assert text.startswith(f"{tmp_path / 'grain.yaml'}: compute.{op_class}.{field}: "), text
  assert message in text, text
