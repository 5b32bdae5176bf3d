"""`qdarts eval MODEL`: the exported model's accuracy in its runtime, in one command."""

import json
import os
import subprocess
import sys


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
