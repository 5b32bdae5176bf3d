"""`qdarts profile`: one-layer ORT timings written as a measured-rows CSV (tiny space)."""

from importlib import resources

import pytest

from hwcost import LutCostModel, load_target, read_measured_csv
from hwcost.measured_rows import layer_key
from qdarts.cli import main
from qdarts.config import load_config
from qdarts.profile import layer_model, profile_config, space_items, space_layers

OVERRIDES = [
  "data.dataset=synthetic",
  "space.stem_channels=4",
  "space.channels=[4,8]",
  "space.strides=[1,2]",
  "space.ops=[conv3x3,dwsep3x3,skip]",
  "quant.w_bits=[4,8]",
  "quant.a_bits=[8]",
]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, quickstart_path):
  """``(cfg, csv_path, measured)`` of one profile of the tiny space."""
  cfg = load_config(quickstart_path, OVERRIDES)
  path = tmp_path_factory.mktemp("profile") / "rows.csv"
  measured = profile_config(cfg, path, repeats=3, warmup=1, progress=False)
  return cfg, path, measured


def _expected_keys(cfg):
  _, _, _, candidates, fixed = space_layers(cfg)
  keys = {layer_key(spec, (8, 8)) for spec in fixed}
  for row in candidates:
    for specs in row:
      for spec in specs or ():
        keys |= {layer_key(spec, (w, a)) for w in cfg.quant.w_bits for a in cfg.quant.a_bits}
  return keys, candidates, fixed


def test_csv_has_one_positive_row_per_distinct_layer(profiled):
  cfg, path, measured = profiled
  rows = read_measured_csv(path)
  keys, _, fixed = _expected_keys(cfg)
  assert [row.key for row in rows.rows] == [item.key for item, _ in measured]
  assert {row.key for row in rows.rows} == keys
  assert len(rows.rows) == len(keys)  # no duplicates merged
  assert all(len(row.lines) == 1 for row in rows.rows)
  assert all(row.values["latency_ms"] > 0 for row in rows.rows)
  assert all("energy_uj" not in row.values for row in rows.rows)
  assert {layer_key(spec, (8, 8)) for spec in fixed} <= keys  # stem and head
  assert {row.spec.op for row in rows.rows} == {"conv", "linear"}


def test_lut_prices_the_profiled_layers_exactly(profiled):
  cfg, path, _ = profiled
  rows = read_measured_csv(path)
  by_key = {row.key: row.values["latency_ms"] for row in rows.rows}
  fallback = load_target(str(resources.files("qdarts.configs.targets") / "bitfusion45.yaml"))
  lut = LutCostModel(rows, fallback, name="ort")
  _, candidates, fixed = _expected_keys(cfg)
  layers = [(spec, 8, 8) for spec in fixed]
  for row in candidates:
    for specs in row:
      layers += [(spec, w, 8) for spec in specs or () for w in cfg.quant.w_bits]
  for spec, w, a in layers:
    cost = lut.cost(spec, w, a)
    assert cost.provenance.startswith("latency_ms: measured:exact"), cost.provenance
    assert cost.values["latency_ms"] == by_key[layer_key(spec, (w, a))]


def test_layer_models_are_opset_21_qdq(profiled):
  cfg, _, _ = profiled
  _, _, _, candidates, fixed = space_layers(cfg)
  items = space_items(candidates, fixed, [4], [2])
  for item in items:
    model = layer_model(item)
    assert model.opset_import[0].version == 21 and model.ir_version == 10
    ops = [node.op_type for node in model.graph.node]
    assert ops[0] == "QuantizeLinear" and "DequantizeLinear" in ops
    assert ("Conv" in ops) == (item.spec.op == "conv") and ("Gemm" in ops) != ("Conv" in ops)
    assert ("Clip" in ops) == (item.a_bits < 8)


def test_cli_writes_the_csv(quickstart_path, tmp_path, capsys):
  out = tmp_path / "rows.csv"
  args = [str(quickstart_path), *OVERRIDES, "--out", str(out), "--repeats", "3", "--warmup", "1"]
  assert main(["profile", *args]) == 0
  assert len(read_measured_csv(out).rows) > 0
  assert "rows" in capsys.readouterr().out


@pytest.mark.parametrize(
  ("extra", "expected"),
  [
    (["--out", "{tmp}/missing/rows.csv"], "does not exist"),
    (["--out", "{tmp}/rows.csv", "--runtime", "tflite"], "unknown runtime 'tflite'"),
  ],
)
def test_cli_rejects_bad_arguments_in_one_line(quickstart_path, tmp_path, capsys, extra, expected):
  extra = [e.format(tmp=tmp_path) for e in extra]
  assert main(["profile", str(quickstart_path), *OVERRIDES, *extra]) == 2
  err = capsys.readouterr().err.strip()
  assert expected in err and len(err.splitlines()) == 1
  assert not (tmp_path / "rows.csv").exists()
