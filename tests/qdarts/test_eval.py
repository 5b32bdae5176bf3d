"""`qdarts eval MODEL`: the exported model's accuracy in its runtime, in one command."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _eval(*args, cache):
  env = {**os.environ, "QDARTS_CACHE_DIR": cache}
  return subprocess.run(
    [sys.executable, "-m", "qdarts.cli", "eval", *map(str, args)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_eval_reproduces_the_runs_onnx_accuracy(finished_run, compilation_cache_dir):
  run_dir, result = finished_run
  proc = _eval(run_dir / "model.onnx", cache=compilation_cache_dir)
  assert proc.returncode == 0, proc.stderr
  line = next(x for x in proc.stdout.splitlines() if x.startswith("accuracy: "))
  assert float(line.split()[1]) == round(result["accuracy"]["onnx_runtime"], 4)
  assert "ms per sample" in proc.stdout
  as_json = json.loads(_eval(run_dir / "model.onnx", "--json", cache=compilation_cache_dir).stdout)
  assert as_json["accuracy"] == result["accuracy"]["onnx_runtime"]
  assert as_json["samples"] == result["test_samples"] and as_json["latency_ms_median"] > 0


def test_bad_models_end_in_one_line(tmp_path, compilation_cache_dir):
  (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
  (tmp_path / "model.pt").write_bytes(b"x")
  cases = {
    tmp_path / "missing.onnx": "model file not found",
    tmp_path / "junk.onnx": "not an ONNX model",
    tmp_path / "model.pt": "unknown model kind",
  }
  for path, message in cases.items():
    proc = _eval(path, cache=compilation_cache_dir)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_runs_tflite_in_litert_and_the_c_export_built_with_cc(
  finished_run, tmp_path, compilation_cache_dir
):
  from qdarts.data import load_dataset  # noqa: PLC0415
  from qdarts.evaluate import data_config_of  # noqa: PLC0415
  from qdarts.export import integer_forward  # noqa: PLC0415
  from qdarts.export.c_export import find_c_compiler  # noqa: PLC0415
  from qdarts.export.chain_file import load_chain  # noqa: PLC0415

  run_dir, result = finished_run
  chain = load_chain(run_dir / "subnet.npz")
  cfg, seed = data_config_of(dict(chain.metadata), run_dir)
  data = load_dataset(cfg, seed)
  x = np.asarray(data.to_input(data.x_test), np.float32)
  y = np.asarray(data.y_test)
  integer_logits = integer_forward(chain, x)
  integer_accuracy = float((integer_logits.argmax(-1) == y).mean())
  models = {}
  if find_c_compiler() is not None:
    models["c"] = run_dir / "c"
  if importlib.util.find_spec("ai_edge_litert") is not None:
    from qdarts.export.tflite import export_tflite, logit_quantization  # noqa: PLC0415

    models["litert"] = export_tflite(chain, tmp_path / "model.tflite")
    # LiteRT's logits are int8 codes (coarse: ties are frequent), so its reference is the
    # integer model's logits on the same grid, first maximum on ties as argmax takes it.
    scale, zero_point = logit_quantization(chain.layers[-1])
    codes = np.clip(np.round(integer_logits / scale) + zero_point, -128, 127)
    litert_reference = float((codes.argmax(-1) == y).mean())
  if not models:
    pytest.skip("neither a C compiler nor ai-edge-litert is available")
  for runtime, path in models.items():
    proc = _eval(path, cache=compilation_cache_dir)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("accuracy: "))
    as_json = json.loads(_eval(path, "--json", cache=compilation_cache_dir).stdout)
    assert as_json["runtime"].startswith(runtime) and float(line.split()[1]) == round(
      as_json["accuracy"], 4
    )
    assert as_json["samples"] == result["test_samples"] and as_json["latency_ms_median"] > 0
    if runtime == "c":  # bit-exact with the integer model: the same accuracy, exactly
      assert as_json["accuracy"] == integer_accuracy
    else:  # LiteRT is within one code of it: predictions may flip on near ties only
      assert abs(as_json["accuracy"] - litert_reference) <= 0.01


def test_bad_tflite_and_c_exports_end_in_one_line(tmp_path, compilation_cache_dir):
  (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
  (tmp_path / "fake.tflite").write_bytes(b"\x00\x00\x00\x00TFL3" + b"\xff" * 40)
  (tmp_path / "no_manifest").mkdir()
  (tmp_path / "foreign").mkdir()
  (tmp_path / "foreign" / "manifest.json").write_text('{"format": "something/else"}')
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "manifest.json").write_text("{not json")
  cases = {
    tmp_path / "junk.tflite": "not a TFLite model",
    tmp_path / "fake.tflite": "not a readable qdarts TFLite model",
    tmp_path / "no_manifest": "not a C export (no manifest.json)",
    tmp_path / "foreign": "not a qdarts C export",
    tmp_path / "broken": "manifest.json: not JSON",
  }
  for path, message in cases.items():
    proc = _eval(path, cache=compilation_cache_dir)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
