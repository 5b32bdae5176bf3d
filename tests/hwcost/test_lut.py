"""Measured rows: lookup order (exact, interpolated, extrapolated, calibrated, analytic),
provenance, share_measured, and every load-time error naming FILE:ROW: FIELD."""

import math
import pathlib
import shutil
import warnings

import numpy as np
import pytest
import yaml

from hwcost import (
  METRICS,
  BopsModel,
  Cost,
  CostModel,
  CostTableError,
  LayerSpec,
  LutCostModel,
  RooflineModel,
  build_cost_tables,
  layers_cost,
  load_target,
  read_measured_csv,
  share_measured,
)
from hwcost.measured_rows import COLUMNS

_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
_YAML = _FIXTURES / "two_width.yaml"
_CSV = str(_FIXTURES / "two_width_rows.csv")


def _conv(name: str, cin: int, cout: int, kernel: int = 3) -> LayerSpec:
  return LayerSpec(name, "conv", kernel, 1, cin, cout, (8, 8), (8, 8))


# The fixture's w8 3x3 rows (lines 3, 4) and the layers around them, by MACs.
_ROW3 = _conv("row3", 8, 8)  # M1 = 36,864 MACs: 0.08 ms, 0.2 uJ
_ROW4 = _conv("row4", 16, 16)  # M2 = 147,456 MACs: 0.2 ms, 0.5 uJ
_MID = _conv("mid", 8, 16)  # sqrt(M1 * M2) = 73,728 MACs
_HALF = _conv("half", 8, 4)  # M1 / 2
_DOUBLE = _conv("double", 32, 16)  # 2 * M2: at the extrapolation bound
_QUAD = _conv("quad", 32, 32)  # 4 * M2: beyond it
_PW_W4 = _conv("pw", 16, 16, kernel=1)  # the w4 1x1 row (line 5): 0.02 ms, no energy
_FC = LayerSpec("fc", "linear", 1, 1, 64, 10, (1, 1), (1, 1))


@pytest.fixture
def lut() -> LutCostModel:
  return load_target(_YAML)


def _power_law(m: float, m0: float, t0: float, m1: float, t1: float) -> float:
  """The oracle: the line through (log m0, log t0), (log m1, log t1) at log m."""
  slope = math.log(t1 / t0) / math.log(m1 / m0)
  return t0 * (m / m0) ** slope


def _median_ratio(lut: LutCostModel, specs, measured, metric="latency_ms", w_bits=8) -> float:
  analytic = [lut.fallback.cost(s, w_bits, 8).values[metric] for s in specs]
  return float(np.median(np.divide(measured, analytic)))


def test_measured_field_loads_a_lut_model(lut):
  assert isinstance(lut, LutCostModel) and isinstance(lut, CostModel)
  assert isinstance(lut.fallback, RooflineModel)
  assert lut.name == "two_width" and lut.metrics == METRICS
  assert lut.max_extrapolation == 2.0
  assert lut.rows.path == _CSV and [r.lines for r in lut.rows.rows] == [(3,), (4,), (5,)]
  assert lut.supports(4, 8) and lut.supports(2, 4) and not lut.supports(8, 16)


def test_exact_match_returns_the_row_and_its_line(lut):
  cost = lut.cost(_ROW4, 8, 8)
  assert cost.values["latency_ms"] == 0.2 and cost.values["energy_uj"] == 0.5
  assert cost.provenance == f"measured:exact ({_CSV}:4)"
  analytic = lut.fallback.cost(_ROW4, 8, 8).values
  for metric in ("bops", "flash_bytes", "act_bytes"):
    assert cost.values[metric] == analytic[metric]


def test_interpolation_is_geometric_between_two_rows(lut):
  assert _MID.macs**2 == _ROW3.macs * _ROW4.macs
  cost = lut.cost(_MID, 8, 8)
  assert cost.values["latency_ms"] == pytest.approx(math.sqrt(0.08 * 0.2), rel=1e-12)
  assert cost.values["energy_uj"] == pytest.approx(math.sqrt(0.2 * 0.5), rel=1e-12)
  assert cost.provenance == "measured:interpolated (2 rows)"


def test_bits_are_never_interpolated(lut):
  # w4 3x3: the w8 3x3 rows bracket its MACs, but only the w4 1x1 row shares its bits, so
  # latency is analytic calibrated by that row; no w4 row measures energy, so energy is analytic.
  cost = lut.cost(_MID, 4, 8)
  analytic = lut.fallback.cost(_MID, 4, 8)
  ratio = _median_ratio(lut, [_PW_W4], [0.02], w_bits=4)
  assert cost.values["latency_ms"] == pytest.approx(analytic.values["latency_ms"] * ratio)
  assert cost.values["energy_uj"] == analytic.values["energy_uj"]
  assert cost.provenance == (
    f"latency_ms: analytic calibrated to 1 rows (ratio {ratio:.4g}); {analytic.provenance}; "
    f"energy_uj: {analytic.provenance}"
  )


def test_no_row_at_these_bits_gives_the_plain_analytic_value(tmp_path, lut):
  path = tmp_path / "w8_only.csv"
  path.write_text(_csv("conv,3,1,1,8,8,8,8,8,8,8,8,0.08,0.2"))
  only_w8 = LutCostModel(read_measured_csv(path), lut.fallback, name="w8 only")
  assert only_w8.cost(_ROW3, 4, 8) == lut.fallback.cost(_ROW3, 4, 8)


@pytest.mark.parametrize("spec, near", [(_DOUBLE, (_ROW3, _ROW4)), (_HALF, (_ROW3, _ROW4))])
def test_bounded_extrapolation_warns_once(lut, spec, near):
  with pytest.warns(UserWarning, match=rf"layer '{spec.name}' .*latency_ms, energy_uj extrapol"):
    cost = lut.cost(spec, 8, 8)
  m0, m1 = (s.macs for s in near)
  assert cost.values["latency_ms"] == pytest.approx(_power_law(spec.macs, m0, 0.08, m1, 0.2))
  assert cost.values["energy_uj"] == pytest.approx(_power_law(spec.macs, m0, 0.2, m1, 0.5))
  assert cost.provenance == "measured:extrapolated"
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert lut.cost(spec, 8, 8) == cost


def test_beyond_the_bound_is_analytic_times_the_slice_median_ratio(lut):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    cost = lut.cost(_QUAD, 8, 8)
  analytic = lut.fallback.cost(_QUAD, 8, 8)
  for metric, measured in (("latency_ms", [0.08, 0.2]), ("energy_uj", [0.2, 0.5])):
    ratio = _median_ratio(lut, [_ROW3, _ROW4], measured, metric)
    assert cost.values[metric] == pytest.approx(analytic.values[metric] * ratio)
  assert cost.provenance.startswith("latency_ms: analytic calibrated to 2 rows (ratio ")


def test_layer_without_rows_gets_the_fallback_cost(lut):
  assert lut.cost(_FC, 8, 8) == lut.fallback.cost(_FC, 8, 8)
  assert lut.cost(_FC, 8, 8).provenance == f"analytic:two_width ({_YAML})"


def test_promoted_pair_uses_the_rows_of_its_promotion(lut):
  cost = lut.cost(_PW_W4, 2, 8)  # w2 runs as w4 on this target
  assert cost.values["latency_ms"] == 0.02
  assert cost.values["bops"] == lut.fallback.cost(_PW_W4, 4, 8).values["bops"]
  assert cost.provenance.startswith(f"latency_ms: measured:exact ({_CSV}:5); promoted a8w2 -> a8w4")


def test_share_measured(lut):
  costs = [lut.cost(_ROW3, 8, 8), lut.cost(_FC, 8, 8), lut.cost(_PW_W4, 4, 8), lut.cost(_MID, 4, 8)]
  latency = [c.values["latency_ms"] for c in costs]
  assert share_measured(costs) == pytest.approx((latency[0] + latency[2]) / sum(latency))
  assert share_measured([]) == 0.0
  with pytest.raises(ValueError, match="without latency_ms"):
    share_measured([Cost({"bops": 1.0}, "bops")])


def test_build_cost_tables_takes_a_lut_model(lut):
  ops_layers = [[[_ROW3, _FC], [], [_MID]], [[_PW_W4], None]]
  tables = build_cost_tables(ops_layers, lut, [4, 8], [8], ["latency_ms", "energy_uj"])
  for l, ops in enumerate(ops_layers):
    for o, layers in enumerate(ops):
      for i, w in enumerate((4, 8)):
        expected = layers_cost(layers or [], lut, w, 8) if layers is not None else None
        for m, metric in enumerate(tables.metrics):
          got = tables.values[m, l, o, i, 0]
          assert got == (pytest.approx(expected[metric]) if expected else 0.0)


def test_agreeing_duplicates_merge_by_mean_and_energy_column_may_be_absent(tmp_path, lut):
  header = ",".join(COLUMNS[:-1])
  path = tmp_path / "dups.csv"
  path.write_text(_csv("conv,3,1,1,8,8,8,8,8,8,8,8,0.100", "conv,3,1,1,8,8,8,8,8,8,8,8,0.1008",
                       header=header))  # fmt: skip
  rows = read_measured_csv(path)
  assert len(rows.rows) == 1 and rows.rows[0].lines == (3, 4)
  assert rows.rows[0].values == {"latency_ms": pytest.approx(0.1004)}
  model = LutCostModel(rows, lut.fallback, name="dups")
  cost = model.cost(_ROW3, 8, 8)
  assert cost.values["latency_ms"] == pytest.approx(0.1004)
  assert cost.values["energy_uj"] == lut.fallback.cost(_ROW3, 8, 8).values["energy_uj"]


# ---- load-time errors -------------------------------------------------------------------------

_HEADER = ",".join(COLUMNS)
_GOOD = "conv,3,1,1,8,8,8,8,8,8,8,8,0.08,0.2"


def _csv(*rows: str, header: str = _HEADER) -> str:
  """A comment on line 1, the header on line 2, rows from line 3."""
  return "\n".join(["# test rows", header, *rows]) + "\n"


def _row(**changes) -> str:
  fields = dict(zip(COLUMNS, _GOOD.split(","), strict=True))
  fields.update({k: str(v) for k, v in changes.items()})
  return ",".join(fields.values())


# (case id, CSV text, row, field, message text)
_CSV_CASES = [
  ("missing column", _csv(header=_HEADER.replace(",latency_ms", "")), 2, "latency_ms",
   "missing column; expected op, kernel"),
  ("unknown column", _csv(_GOOD, header=_HEADER.replace("latency_ms", "latency")), 2, "latency",
   "unknown column; expected op, kernel, stride"),
  ("column twice", _csv(header=_HEADER + ",cin"), 2, "cin", "column given twice"),
  ("non-integer shape", _csv(_row(cin="8.5")), 3, "cin", "expected a positive int, got '8.5'"),
  ("zero shape", _csv(_row(cout=0)), 3, "cout", "expected a positive int, got '0'"),
  ("zero latency", _csv(_row(latency_ms=0)), 3, "latency_ms",
   "expected a positive number, got '0'"),
  ("text latency", _csv(_row(latency_ms="fast")), 3, "latency_ms",
   "expected a positive number, got 'fast'"),
  ("negative energy", _csv(_row(energy_uj=-1)), 3, "energy_uj",
   "expected a positive number, got '-1'"),
  ("unknown op", _csv(_row(op="conv2d")), 3, "op", "expected one of conv, linear, got 'conv2d'"),
  ("bits too wide", _csv(_row(w_bits=32)), 3, "w_bits",
   "expected an int bit-width in 1..16, got '32'"),
  ("zero bits", _csv(_row(a_bits=0)), 3, "a_bits", "expected an int bit-width in 1..16, got '0'"),
  ("out size", _csv(_row(stride=2)), 3, "out_h", "expected ceil(8/2) = 4 ('SAME' padding), got 8"),
  ("linear kernel", _csv(_row(op="linear")), 3, "kernel", "expected 1 for a linear row, got 3"),
  ("linear spatial", _csv(_row(op="linear", kernel=1)), 3, "in_h",
   "expected 1 for a linear row, got 8"),
  ("groups", _csv(_row(groups=3)), 3, "groups", "expected a divisor of cin=8 and cout=8, got 3"),
  ("field count", _csv(_GOOD + ",1"), 3, "(row)", "expected 14 fields"),
  ("duplicate disagrees", _csv(_GOOD, "# a comment", _row(latency_ms=0.0809)), 5, "latency_ms",
   "expected within 1% of row 3 (same key), which has 0.08, got 0.0809"),
  ("no rows", _csv(), 2, "(file)", "expected a header line and at least one row, got none"),
  ("empty file", "", 1, "(file)", "expected a header line and at least one row, got none"),
]  # fmt: skip


@pytest.mark.parametrize(
  "text, row, field, message", [c[1:] for c in _CSV_CASES], ids=[c[0] for c in _CSV_CASES]
)
def test_bad_csv_names_file_row_and_field(tmp_path, text, row, field, message):
  path = tmp_path / "bad_rows.csv"
  path.write_text(text)
  with pytest.raises(CostTableError) as info:
    read_measured_csv(path)
  assert str(info.value).startswith(f"{path}:{row}: {field}: "), str(info.value)
  assert message in str(info.value)


def test_duplicates_within_one_percent_merge(tmp_path):
  path = tmp_path / "ok.csv"
  path.write_text(_csv(_GOOD, _row(latency_ms=0.0807, energy_uj="")))
  (row,) = read_measured_csv(path).rows
  assert row.values == {"latency_ms": pytest.approx(0.08035), "energy_uj": 0.2}


def test_missing_csv(tmp_path):
  with pytest.raises(CostTableError, match=r"nowhere\.csv: no such measured-rows file"):
    read_measured_csv(tmp_path / "nowhere.csv")


def _target_with_rows(tmp_path, rows_text: str, **measured) -> pathlib.Path:
  """The fixture target, copied to tmp_path with the given CSV and measured fields."""
  doc = yaml.safe_load(_YAML.read_text())
  doc["measured"] = {"file": "rows.csv", **measured}
  (tmp_path / "rows.csv").write_text(rows_text)
  path = tmp_path / "target.yaml"
  path.write_text(yaml.safe_dump(doc))
  return path


def test_row_above_peak_throughput_is_a_unit_slip(tmp_path):
  # 147,456 MACs in 8e-5 "ms" is 1.8e9 MACs/ms: the peak is 1e6 (seconds written as ms).
  path = _target_with_rows(tmp_path, _csv(_GOOD, _row(cin=16, cout=16, latency_ms=8e-5)))
  with pytest.raises(CostTableError) as info:
    load_target(path)
  assert str(info.value).startswith(f"{tmp_path / 'rows.csv'}:4: latency_ms: expected at least")
  assert "peak 1e+06 MACs/ms" in str(info.value)


def test_row_at_bits_the_target_promotes_is_an_error(tmp_path):
  path = _target_with_rows(tmp_path, _csv(_GOOD, _row(w_bits=2)))
  with pytest.raises(
    CostTableError, match=r"rows\.csv:4: w_bits: .*got a8w2 \(it promotes it to a8w4\)"
  ):
    load_target(path)


def test_row_of_an_op_class_the_target_lacks_is_an_error(tmp_path):
  path = _target_with_rows(tmp_path, _csv(_row(groups=8)))  # depthwise
  with pytest.raises(CostTableError, match=r"rows\.csv:3: op: .*no compute\.depthwise entry"):
    load_target(path)


@pytest.mark.parametrize(
  "measured, field, message",
  [
    ({"file": "missing.csv"}, "measured.file",
     "expected a readable CSV of measured rows (relative to this file), got 'missing.csv'"),
    ({"file": "."}, "measured.file", "Is a directory"),
    ({"file": ""}, "measured.file", "expected a non-empty string"),
    ({"file": "rows.csv", "max_extrapolation": 0.5}, "measured.max_extrapolation",
     "expected a number >= 1, got 0.5"),
    ({"file": "rows.csv", "extrapolation": 2}, "measured.extrapolation",
     "unknown key (allowed: file, max_extrapolation)"),
    ({}, "measured.file", "missing required key"),
  ],
  ids=["missing", "directory", "empty", "small factor", "unknown key", "no file"],
)  # fmt: skip
def test_bad_measured_field_names_it(tmp_path, measured, field, message):
  path = _target_with_rows(tmp_path, _csv(_GOOD))
  doc = yaml.safe_load(path.read_text())
  doc["measured"] = measured
  path.write_text(yaml.safe_dump(doc))
  with pytest.raises(CostTableError) as info:
    load_target(path)
  assert str(info.value).startswith(f"{path}: {field}: "), str(info.value)
  assert message in str(info.value)


def test_measured_file_is_relative_to_the_yaml(tmp_path):
  (tmp_path / "sub").mkdir()
  shutil.copy(_YAML, tmp_path / "sub" / "t.yaml")
  shutil.copy(_CSV, tmp_path / "sub" / "two_width_rows.csv")
  model = load_target(tmp_path / "sub" / "t.yaml")
  assert model.rows.path == str(tmp_path / "sub" / "two_width_rows.csv")


def test_bad_model_arguments_are_value_errors(lut):
  with pytest.raises(ValueError, match="max_extrapolation must be >= 1"):
    LutCostModel(lut.rows, lut.fallback, name="x", max_extrapolation=0.5)
  with pytest.raises(ValueError, match="does not provide latency_ms, energy_uj"):
    LutCostModel(lut.rows, BopsModel(), name="x")
