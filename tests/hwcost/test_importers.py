"""Importing APQ's BitFusion table (apq-bitfusion) into measured rows, and its errors.

The fixture is hand-written in the published format (values copied from
mit-han-lab/apq lut/BitFusion_new.b1.dict): nine layers at W8A8, W4A4 and W6A4, plus the
shape-less ``head`` and ``tail`` entries.
"""

import json
import pathlib
import pickle

import pytest

from hwcost import CostTableError, LayerSpec, load_target, read_measured_csv
from hwcost.importers import IMPORT_FORMATS, import_table, measured_rows_csv, read_apq_bitfusion
from qdarts.cli import main

_FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "apq_bitfusion.dict"
_PW_KEY = "(96, 456, 14, 1, 1, 0, 1)-W4A4"
_PW_LATENCY_MS = 0.062192
_PW_ENERGY_MJ = 0.10688197403091196
_PW = LayerSpec("pw", "conv", 1, 1, 96, 456, (14, 14), (14, 14))
_DW_S2 = LayerSpec("dw", "conv", 3, 2, 456, 456, (14, 14), (7, 7), groups=456)

# A target that runs the fixture's pairs natively (w, a): bitfusion45's numbers (500 MHz, BitFusion
# law from 512 MACs/cycle at w8a8, so 2048 at w4a4): a peak above every row (the fastest implies
# 790 MACs/cycle at w4a4), and a fallback for every row.
_TARGET = """\
schema_version: 1
name: apq_bitfusion
description: APQ's BitFusion table over a roofline fallback
sources: ["mit-han-lab/apq lut/BitFusion_new.b1.dict"]
clock_mhz: 500
precision:
  supported: [[8, 8], [4, 4], [6, 4]]
  unsupported_policy: error
memory: {bandwidth_bytes_per_cycle: 24, energy_pj_per_byte: 167.5}
compute:
  conv:
    macs_per_cycle: {form: bitfusion, macs_per_cycle_8x8: 512}
    energy_pj_per_mac: {form: bitfusion, energy_pj_per_mac_8x8: 0.459}
  depthwise: {macs_per_cycle: 32, energy_pj_per_mac: 7.344}
measured: {file: rows.csv}
"""


def test_reads_layers_bits_and_units():
  table = read_apq_bitfusion(_FIXTURE)
  assert table.format == "apq-bitfusion" and table.skipped == ("head", "tail")
  assert len(table.rows) == 9
  row = next(r for r in table.rows if r.key == _PW_KEY)
  assert row.spec.macs == _PW.macs and row.spec.groups == 1
  assert (row.w_bits, row.a_bits) == (4, 4)
  assert row.latency_ms == _PW_LATENCY_MS  # ms as published
  assert row.energy_uj == _PW_ENERGY_MJ * 1000  # mJ -> µJ
  dw = next(r for r in table.rows if r.key == "(456, 456, 14, 3, 2, 1, 456)-W4A4")
  assert dw.spec.is_depthwise and dw.spec.out_hw == (7, 7) and dw.spec.macs == _DW_S2.macs
  w6 = next(r for r in table.rows if r.key == "(96, 456, 14, 1, 1, 0, 1)-W6A4")
  assert (w6.w_bits, w6.a_bits) == (6, 4)


def test_both_format_names_read_the_same_table():
  assert set(IMPORT_FORMATS) == {"apq-bitfusion", "haq-bitfusion"}
  assert import_table(_FIXTURE, "haq-bitfusion") == import_table(_FIXTURE, "apq-bitfusion")
  with pytest.raises(CostTableError, match="unknown table format; expected one of apq-bitfusion"):
    import_table(_FIXTURE, "hw-nas-bench")


def test_imported_csv_prices_a_layer_exactly(tmp_path):
  table = read_apq_bitfusion(_FIXTURE)
  (tmp_path / "rows.csv").write_text(measured_rows_csv(table))
  assert len(read_measured_csv(tmp_path / "rows.csv").rows) == 9
  (tmp_path / "target.yaml").write_text(_TARGET)
  model = load_target(tmp_path / "target.yaml")
  cost = model.cost(_PW, 4, 4)
  assert cost.values["latency_ms"] == _PW_LATENCY_MS
  assert cost.values["energy_uj"] == _PW_ENERGY_MJ * 1000
  assert cost.provenance.startswith("measured:exact"), cost.provenance
  dw = model.cost(_DW_S2, 4, 4)
  assert dw.values["latency_ms"] == 0.03921 and dw.provenance.startswith("measured:exact")


def test_csv_names_source_and_units():
  text = measured_rows_csv(read_apq_bitfusion(_FIXTURE))
  assert f"# Imported from {_FIXTURE} (format apq-bitfusion)" in text
  assert "energy (mJ) x 1000" in text and "head, tail" in text
  assert "conv,1,1,1,96,456,14,14,14,14,4,4,0.062192,106.8819740309119" in text


def _write(tmp_path, doc) -> pathlib.Path:
  path = tmp_path / "table.dict"
  path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
  return path


_GOOD_VALUE = {"latency": 0.5, "energy": 0.25}

# (case id, table, key or text the message names, what it says)
_CASES = [
  ("not a layer key", {"stem": _GOOD_VALUE}, "key 'stem'", "expected '(cin, cout, input_size"),
  ("no bits", {"(8, 8, 4, 1, 1, 0, 1)": _GOOD_VALUE}, "key '(8, 8, 4, 1, 1, 0, 1)'",
   "-W{w_bits}A{a_bits}'"),
  ("six fields", {"(8, 8, 4, 1, 1, 0)-W8A8": _GOOD_VALUE}, "key '(8, 8, 4, 1, 1, 0)-W8A8'",
   "expected 7 non-negative ints"),
  ("not an int", {"(8, 8.5, 4, 1, 1, 0, 1)-W8A8": _GOOD_VALUE}, "8.5", "non-negative ints"),
  ("zero channels", {"(0, 8, 4, 1, 1, 0, 1)-W8A8": _GOOD_VALUE}, "key '(0, 8, 4, 1, 1, 0, 1)-W8A8'",
   "cin: expected a positive int, got 0"),
  ("valid padding", {"(8, 8, 4, 3, 1, 0, 1)-W8A8": _GOOD_VALUE}, "key '(8, 8, 4, 3, 1, 0, 1)-W8A8'",
   "padding: expected kernel // 2 = 1"),
  ("even kernel", {"(8, 8, 4, 2, 1, 1, 1)-W8A8": _GOOD_VALUE}, "(8, 8, 4, 2, 1, 1, 1)-W8A8",
   "with an odd kernel"),
  ("groups", {"(8, 6, 4, 1, 1, 0, 4)-W8A8": _GOOD_VALUE}, "(8, 6, 4, 1, 1, 0, 4)-W8A8",
   "groups: expected a divisor of cin=8 and cout=6, got 4"),
  ("zero bits", {"(8, 8, 4, 1, 1, 0, 1)-W0A8": _GOOD_VALUE}, "W0A8", "w_bits: expected 1..16"),
  ("wide bits", {"(8, 8, 4, 1, 1, 0, 1)-W8A32": _GOOD_VALUE}, "W8A32",
   "a_bits: expected 1..16, got 32"),
  ("value not a mapping", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": 0.5}, "W8A8",
   'expected {"latency": ms, "energy": mJ}, got 0.5'),
  ("no latency", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": {"energy": 1.0}}, "W8A8", "latency: missing"),
  ("unknown field", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": {"latency": 1.0, "power": 2}}, "W8A8",
   "'power': unknown field"),
  ("zero latency", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": {"latency": 0}}, "W8A8",
   "latency: expected a positive number (ms), got 0"),
  ("energy a string", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": {"latency": 1, "energy": "2"}}, "W8A8",
   "energy: expected a positive number (mJ), got '2'"),
  ("bool latency", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": {"latency": True}}, "W8A8", "got True"),
  ("same layer twice", {"(8, 8, 4, 1, 1, 0, 1)-W8A8": _GOOD_VALUE,
   "(8,8,4,1,1,0,1)-W8A8": _GOOD_VALUE}, "key '(8,8,4,1,1,0,1)-W8A8'",
   "names the same layer and bits as key '(8, 8, 4, 1, 1, 0, 1)-W8A8'"),
  ("only totals", {"head": _GOOD_VALUE, "tail": _GOOD_VALUE}, "table.dict",
   "expected at least one layer key"),
  ("a list", [1, 2], "table.dict", "expected a JSON object of layer keys"),
  ("key given twice", '{"head": {"latency": 1}, "head": {"latency": 2}}', "key 'head'",
   "given twice"),
  ("not JSON", "{'(8, 8, 4, 1, 1, 0, 1)-W8A8': 1}", "table.dict", "JSON syntax error at line 1"),
]  # fmt: skip


@pytest.mark.parametrize("case, doc, names, says", _CASES, ids=[c[0] for c in _CASES])
def test_bad_table_names_file_and_key(tmp_path, case, doc, names, says):
  path = _write(tmp_path, doc)
  with pytest.raises(CostTableError) as info:
    read_apq_bitfusion(path)
  text = str(info.value)
  assert text.startswith(f"{path}: "), text
  assert names in text and says in text, text


def test_pickle_is_refused_unloaded(tmp_path):
  path = tmp_path / "table.pkl"
  path.write_bytes(pickle.dumps({_PW_KEY: {"latency": 1.0}}))
  with pytest.raises(CostTableError, match="looks like a Python pickle.*never loaded"):
    read_apq_bitfusion(path)


def test_missing_file(tmp_path):
  with pytest.raises(CostTableError, match="no such cost-table file"):
    read_apq_bitfusion(tmp_path / "nope.dict")


def test_cli_writes_the_csv(tmp_path, capsys):
  out = tmp_path / "rows.csv"
  assert main(["import-table", "--format", "haq-bitfusion", str(_FIXTURE), "--out", str(out)]) == 0
  assert out.read_text() == measured_rows_csv(read_apq_bitfusion(_FIXTURE))
  said = capsys.readouterr().out
  assert said == f"{out}: 9 rows from {_FIXTURE} (haq-bitfusion; skipped head, tail (no shape))\n"


@pytest.mark.parametrize(
  "table, out, says",
  [
    ("bad", "rows.csv", "key 'stem': expected '(cin, cout, input_size"),
    ("good", "missing/rows.csv", "folder"),
    ("good", ".", "is a folder"),
  ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, table, out, says):
  path = _FIXTURE if table == "good" else _write(tmp_path, {"stem": _GOOD_VALUE})
  out_path = tmp_path / out
  code = main(["import-table", "--format", "apq-bitfusion", str(path), "--out", str(out_path)])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1 and err.startswith("qdarts: error: "), err
  assert says in err, err
  assert not (tmp_path / "rows.csv").exists()
