"""bench/quality.py: the search-quality benchmark's machinery on its tiny ``test`` preset.

One cell (8×8 digits, BOPs, one budget, one seed): every method must appear in results.json
and results.md, the Pareto plot is written, a rerun skips every finished unit, and bad input
ends in one error line with exit code 2 and nothing written.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quality.py"
METHODS = ("joint", "fp_w8a8", "fp_w4a4", "fp_bits", "random")  # issue 7, methods 1-4


def _bench(args, cwd, cache):
  env = {**os.environ, "QDARTS_CACHE_DIR": cache}
  return subprocess.run(
    [sys.executable, str(BENCH), *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_quality_bench_table_has_every_method_and_resumes(tmp_path, compilation_cache_dir):
  proc = _bench(["--preset", "test", "--out", "out"], tmp_path, compilation_cache_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "out"
  doc = json.loads((out / "results.json").read_text())
  assert {r["method"] for r in doc["records"]} == set(METHODS)
  for r in doc["records"]:
    assert r["accuracy_kind"] == "onnx_runtime"  # every SubNet of the space is exported
    assert 0.0 <= r["accuracy"] <= 1.0 and r["cost"] > 0 and r["search_s"] > 0
  assert {s["method"] for s in doc["summary"]} == set(METHODS)
  (verdict,) = doc["front"]
  assert verdict["target"] == "bops" and isinstance(verdict["on_front"], bool)
  table = (out / "results.md").read_text()
  for label in ("joint search", "uniform 8-bit", "uniform 4-bit", "bits-only", "random search"):
    assert label in table, label
  assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
  for method in ("joint", "fp_bits"):  # a searched SubNet is retrained from scratch, like all
    row = next(r for r in doc["records"] if r["method"] == method)
    assert 0.0 <= row["pipeline_accuracy"] <= 1.0  # what `qdarts search` delivered
    key = "-".join(f"{op}.w{w or 8}a{a or 8}" for op, w, a in row["subnet"])
    retrained = json.loads((out / "runs" / f"fixed-s0-{key}" / "result.json").read_text())
    assert row["accuracy"] == retrained["accuracy"]["onnx_runtime"]
  random_row = next(r for r in doc["records"] if r["method"] == "random")
  assert random_row["random_n"] == 2 and random_row["cost"] <= random_row["budget"]

  again = _bench(["--preset", "test", "--out", "out"], tmp_path, compilation_cache_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "(0 units run" in again.stdout
  assert json.loads((out / "results.json").read_text())["records"] == doc["records"]


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--seeds", "a,b"], "--seeds: expected comma-separated integers"),
    (["--data-dir", "missing"], "--data-dir: missing is not a folder"),
  ],
)
def test_quality_bench_bad_input_is_one_line(tmp_path, compilation_cache_dir, args, message):
  proc = _bench(["--preset", "test", "--out", "out", *args], tmp_path, compilation_cache_dir)
  assert proc.returncode == 2
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith(f"error: {message}")
  assert not (tmp_path / "out").exists()


def test_quality_bench_refuses_units_of_another_preset(tmp_path, compilation_cache_dir):
  out = tmp_path / "out"
  out.mkdir()
  (out / "preset.json").write_text('{"schedule": {"search_epochs": 99}}')
  proc = _bench(["--preset", "test", "--out", "out"], tmp_path, compilation_cache_dir)
  assert proc.returncode == 2
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith("error: --out:") and "another preset" in line
  assert sorted(p.name for p in out.iterdir()) == ["preset.json"]


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--cells", "bops"], "--cells: expected target:fraction"),
    (["--variants", "nope"], "--variants: unknown ['nope']"),
  ],
)
def test_quality_variants_bad_input_is_one_line(tmp_path, args, message):
  script = BENCH.parent / "quality_variants.py"
  proc = subprocess.run(
    [sys.executable, str(script), "--out", "out", *args],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith(f"error: {message}")
  assert not (tmp_path / "out").exists()
