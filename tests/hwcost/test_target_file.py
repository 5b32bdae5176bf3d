"""Target-file validation: each mistake raises CostTableError naming the file and the field."""

import pytest
import yaml

from hwcost import CostTableError, load_target


def _set(*keys_and_value):
  """A mutation that sets doc[k1][k2]... = value."""
  *keys, value = keys_and_value

  def mutate(doc):
    for key in keys[:-1]:
      doc = doc[key]
    doc[keys[-1]] = value

  return mutate


def _delete(*keys):
  def mutate(doc):
    for key in keys[:-1]:
      doc = doc[key]
    del doc[keys[-1]]

  return mutate


# (case id, mutation of the valid 8-bit document, field the message must name, message text)
_CASES = [
  ("missing key", _delete("clock_mhz"), "clock_mhz", "missing required key"),
  ("missing nested key", _delete("memory", "energy_pj_per_byte"), "memory.energy_pj_per_byte",
   "missing required key"),
  ("unknown key", _set("memory", "bandwith_bytes_per_cycle", 8), "memory.bandwith_bytes_per_cycle",
   "unknown key (allowed: bandwidth_bytes_per_cycle, energy_pj_per_byte, sram_kib, flash_kib)"),
  ("unit-less key", _set("latency", 3), "latency", "unknown key (allowed: schema_version"),
  ("unknown op class", _set("compute", "pool", {}), "compute.pool",
   "unknown key (allowed: conv, depthwise, linear)"),
  ("negative throughput", _set("compute", "conv", "macs_per_cycle", "a8w8", -3),
   "compute.conv.macs_per_cycle.a8w8", "expected a positive number, got -3"),
  ("zero clock", _set("clock_mhz", 0), "clock_mhz", "expected a positive number, got 0"),
  ("string clock", _set("clock_mhz", "fast"), "clock_mhz",
   "expected a positive number, got 'fast'"),
  ("negative energy", _set("compute", "linear", "energy_pj_per_mac", -0.1),
   "compute.linear.energy_pj_per_mac", "expected a non-negative number, got -0.1"),
  ("bool as number", _set("memory", "bandwidth_bytes_per_cycle", True),
   "memory.bandwidth_bytes_per_cycle", "expected a positive number, got True"),
  ("bad grid key", _set("compute", "conv", "macs_per_cycle", {"8x8": 10}),
   "compute.conv.macs_per_cycle.8x8", "malformed grid key; expected a{a_bits}w{w_bits}"),
  ("unsupported grid key", _set("compute", "conv", "macs_per_cycle", {"a8w8": 10, "a4w4": 20}),
   "compute.conv.macs_per_cycle.a4w4", "not a supported pair (precision.supported: a8w8)"),
  ("grid misses a pair", _set("precision", "supported", [[8, 8], [4, 8]]),
   "compute.conv.macs_per_cycle", "missing a8w4 (a grid needs every supported pair)"),
  ("bad policy", _set("precision", "unsupported_policy", "round"), "precision.unsupported_policy",
   "expected one of promote, error, got 'round'"),
  ("bad supported pair", _set("precision", "supported", [[8, 8, 8]]), "precision.supported[0]",
   "expected a [w_bits, a_bits] pair"),
  ("bad bit width", _set("precision", "supported", {"w_bits": [8, 0], "a_bits": [8]}),
   "precision.supported.w_bits[1]", "expected a positive int bit-width, got 0"),
  ("bad form",
   _set("compute", "conv", "macs_per_cycle", {"form": "magic", "macs_per_cycle_8x8": 1}),
   "compute.conv.macs_per_cycle.form", "expected one of bitfusion, got 'magic'"),
  ("form without base", _set("compute", "conv", "energy_pj_per_mac", {"form": "bitfusion"}),
   "compute.conv.energy_pj_per_mac.energy_pj_per_mac_8x8", "missing required key"),
  ("wrong schema", _set("schema_version", 2), "schema_version", "expected 1, got 2"),
  ("no sources", _set("sources", []), "sources", "expected a non-empty list of citations"),
  ("empty compute", _set("compute", {}), "compute", "expected at least one op class"),
  ("list as grid", _set("compute", "conv", "macs_per_cycle", [512]), "compute.conv.macs_per_cycle",
   "expected a number, a grid {a8w8: ..., ...} or {form: bitfusion, ...}, got a list [512]"),
]  # fmt: skip


@pytest.mark.parametrize(
  "mutate, field, message", [c[1:] for c in _CASES], ids=[c[0] for c in _CASES]
)
def test_bad_field_names_file_and_field(tmp_path, eight_bit_doc, mutate, field, message):
  mutate(eight_bit_doc)
  path = tmp_path / "bad_target.yaml"
  path.write_text(yaml.safe_dump(eight_bit_doc))
  with pytest.raises(CostTableError) as info:
    load_target(path)
  assert str(info.value).startswith(f"{path}: {field}: "), str(info.value)
  assert message in str(info.value)


def test_bitfusion_form_refuses_wider_than_8_bits(tmp_path, eight_bit_doc):
  eight_bit_doc["precision"]["supported"] = {"w_bits": [8, 16], "a_bits": [8]}
  eight_bit_doc["compute"] = {
    "conv": {
      "macs_per_cycle": {"form": "bitfusion", "macs_per_cycle_8x8": 512},
      "energy_pj_per_mac": 1.0,
    }
  }
  path = tmp_path / "wide.yaml"
  path.write_text(yaml.safe_dump(eight_bit_doc))
  with pytest.raises(
    CostTableError,
    match=r"wide\.yaml: compute\.conv\.macs_per_cycle\.form: "
    r"bitfusion covers 2\.\.8 bits, but a8w16 are supported",
  ):
    load_target(path)


@pytest.mark.parametrize(
  "text, message",
  [
    ("schema_version: 1\nname: [unclosed\n", r"YAML syntax error at line 3, column 1"),
    ("schema_version: 1\nschema_version: 1\n", r"YAML syntax error at line 2.*duplicate key"),
    ("", r"\(top level\): the file is empty"),
    ("- 1\n- 2\n", r"\(top level\): expected a mapping"),
  ],
  ids=["syntax", "duplicate key", "empty", "not a mapping"],
)
def test_bad_yaml_names_the_file(tmp_path, text, message):
  path = tmp_path / "broken.yaml"
  path.write_text(text)
  with pytest.raises(CostTableError, match=r"broken\.yaml: " + message):
    load_target(path)


def test_missing_file(tmp_path):
  with pytest.raises(CostTableError, match=r"nowhere\.yaml: no such target file"):
    load_target(tmp_path / "nowhere.yaml")


def test_directory_is_not_a_file(tmp_path):
  with pytest.raises(CostTableError, match=r"cannot read target file"):
    load_target(tmp_path)
