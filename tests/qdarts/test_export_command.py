"""`qdarts export RUN --format ...`: every format rebuilt from the run, verified, recorded."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys


def _export(*args, cache):
  env = {**os.environ, "QDARTS_CACHE_DIR": cache}
  return subprocess.run(
    [sys.executable, "-m", "qdarts.cli", "export", *map(str, args)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_export_onnx_and_c_verified_against_the_integer_model(
  finished_run, tmp_path, compilation_cache_dir
):
  run = tmp_path / "run"
  shutil.copytree(finished_run[0], run)
  litert = importlib.util.find_spec("ai_edge_litert") is not None
  formats = "all" if litert else "onnx,c"
  proc = _export(run, "--format", formats, cache=compilation_cache_dir)
  assert proc.returncode == 0, proc.stderr
  assert "onnx:" in proc.stdout and "c:" in proc.stdout
  result = json.loads((run / "result.json").read_text())
  checks = result["export_verification"]
  assert checks["onnx"]["prediction_agreement"] >= 0.99
  if shutil.which("cc") or shutil.which("gcc"):
    assert checks["c"]["bit_exact"] is True and checks["c"]["prediction_agreement"] == 1.0
  if litert:  # LiteRT's int8 logits within 1 code of the integer model's, same predictions
    assert checks["tflite"]["max_logit_diff_lsb"] <= 1.0
    assert checks["tflite"]["prediction_agreement"] >= 0.99
    assert checks["tflite"]["filters"] == "int8"  # every conv in XNNPACK, LiteRT's default
    assert checks["tflite"]["xnnpack_prediction_agreement"] >= 0.99
  listed = {a["path"]: a for a in result["artifacts"]}
  assert {"c/model.c", "c/model.h", "c/manifest.json", "model.onnx"} <= set(listed)
  assert listed["c/model.c"]["bytes"] == (run / "c" / "model.c").stat().st_size


def test_bad_export_requests_end_in_one_line(finished_run, tmp_path, compilation_cache_dir):
  (tmp_path / "empty").mkdir()
  cases = [
    ((tmp_path / "empty",), "no exportable SubNet"),
    ((tmp_path / "nowhere",), "not a folder"),
    ((finished_run[0], "--format", "onnx,pdf"), "'pdf' is not one of onnx, tflite, c, all"),
    ((finished_run[0], "--tflite-filters", "int3"), "'int3' is not one of int8, int4"),
  ]
  for args, message in cases:
    proc = _export(*args, cache=compilation_cache_dir)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
