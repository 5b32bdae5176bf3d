"""The MBConv and user-declared chain spaces run the whole pipeline: search, derive, fine-tune,
and export, residual adds included."""

import onnx
import pytest

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.errors import ConfigError

FAST = [
  "data.dataset=synthetic",
  "data.batch_size=32",
  "search.epochs=2",
  "search.warmup_epochs=1",
  "train.epochs=1",
]


def test_mbconv_residual_subnet_runs_and_exports_its_adds(quickstart_path, tmp_path):
  overrides = [
    *FAST,
    "space.name=mbconv",
    "space.stem_channels=4",
    "space.channels=[4,8]",
    "space.strides=[1,2]",
    "space.repeats=[1,1]",
    "space.kernels=[3]",
    "space.expansions=[1,3]",
    "space.allow_skip=false",  # stage0's block keeps 4 channels at stride 1: always residual
  ]
  setup = pipeline.prepare(load_config(quickstart_path, overrides))
  assert setup.space.name == "mbconv"
  assert setup.space.op_names == ("mb3x3_e1", "mb3x3_e3")
  result = pipeline.run(setup, tmp_path)
  assert result["export_skipped"] is None and (tmp_path / "model.onnx").exists()
  model = onnx.load(tmp_path / "model.onnx")
  assert "Add" in {n.op_type for n in model.graph.node}  # the residual add, between Q/DQ pairs
  # the fake-quant network adds what the integer model adds: predictions agree
  assert result["accuracy"]["prediction_agreement"] >= 0.99
  checks = result["export_verification"]
  assert checks["onnx"]["prediction_agreement"] >= 0.99
  assert checks["c"]["bit_exact"] is True  # quickstart's formats: onnx and c


def test_shipped_example_chain_space_runs_end_to_end(quickstart_path, tmp_path):
  overrides = [*FAST, "space.name=chain", "space.file=example_chain.yaml"]
  cfg = load_config(quickstart_path, overrides)
  setup = pipeline.prepare(cfg)
  assert setup.space.name == "chain" and len(setup.space.choice_names) == 6
  result = pipeline.run(setup, tmp_path)
  assert len(result["subnet"]) == 6
  if result["export_skipped"] is None:
    assert result["accuracy"]["prediction_agreement"] >= 0.99
  else:
    assert "residual" in result["export_skipped"]


def test_a_missing_chain_file_is_a_config_error(quickstart_path, tmp_path):
  cfg = load_config(quickstart_path, [*FAST, "space.name=chain", f"space.file={tmp_path}/no.yaml"])
  with pytest.raises(ConfigError, match="space.file: .*no.yaml"):
    pipeline.prepare(cfg)
