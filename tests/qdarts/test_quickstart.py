"""The packaged quickstart, as a user runs it: digits, full schedule, exported and verified."""

from importlib import resources
from pathlib import Path

from qdarts import pipeline
from qdarts.config import load_config


def test_quickstart_reaches_93_percent_in_onnx_runtime(tmp_path):
  cfg = load_config(Path(str(resources.files("qdarts.configs") / "quickstart.yaml")))
  result = pipeline.run(pipeline.prepare(cfg), tmp_path)
  acc = result["accuracy"]
  assert acc["onnx_runtime"] >= 0.93, acc
  assert abs(acc["onnx_runtime"] - acc["fake_quant"]) <= 0.01, acc
