"""Wall time of `qdarts search` with no arguments (the packaged quickstart), end to end.

Runs the command N times as a user would (a new process each time, each with an empty XLA
compilation cache unless --warm), and prints each run's wall time, the median, and the
accuracies and cost the run recorded in result.json.

    python bench/quickstart.py --runs 3          # cold compilation cache (first run of a user)
    python bench/quickstart.py --runs 3 --warm   # shared cache (every later run)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(workdir: Path, cache: Path) -> tuple[float, dict]:
  env = {**os.environ, "QDARTS_CACHE_DIR": str(cache)}
  qdarts = shutil.which("qdarts") or sys.exit("qdarts is not on PATH: pip install . first")
  t0 = time.perf_counter()
  proc = subprocess.run(
    [qdarts, "search", "--out", str(workdir / "run")], env=env, capture_output=True, text=True
  )
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    sys.exit(f"qdarts search failed:\n{proc.stderr}")
  run = workdir / "run"
  for name in ("subnet.json", "result.json", "report.md", "model.onnx"):
    assert (run / name).exists(), name
  assert list((run / "events").glob("events.out.tfevents.*")), "no TensorBoard events"
  return wall, json.loads((run / "result.json").read_text())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--warm", action="store_true", help="share one compilation cache")
  args = parser.parse_args()
  shared_cache = Path(tempfile.mkdtemp(prefix="qdarts-bench-cache-"))
  walls = []
  for i in range(args.runs):
    with tempfile.TemporaryDirectory(prefix="qdarts-bench-") as tmp:
      cache = shared_cache if args.warm else Path(tmp) / "cache"
      wall, result = one_run(Path(tmp), cache)
    walls.append(wall)
    acc, t = result["accuracy"], result["timings_s"]
    print(
      f"run {i + 1}: {wall:6.1f} s wall (search {t['search_s']:.1f} s, fine-tune "
      f"{t['finetune_s']:.1f} s, export {t['export_s']:.1f} s); accuracy fake-quant "
      f"{acc['fake_quant']:.4f}, ONNX Runtime {acc['onnx_runtime']:.4f}; "
      f"{result['metric']} {result['cost'][result['metric']]:.4g}",
      flush=True,
    )
  shutil.rmtree(shared_cache, ignore_errors=True)
  cache_kind = "warm" if args.warm else "cold"
  print(
    f"median wall time of `qdarts search` over {args.runs} runs ({cache_kind} compilation "
    f"cache): {statistics.median(walls):.1f} s on {os.cpu_count()} CPU cores"
  )


if __name__ == "__main__":
  main()
