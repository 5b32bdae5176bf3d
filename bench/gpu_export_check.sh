#!/usr/bin/env bash
# The device machine's check of the export path (bash bench/gpu_export_check.sh, carry
# device_data/wheels: pytest, setuptools, tensorboardX, ai-edge-litert and their pure-Python
# dependencies as Python 3.12 wheels). It runs
# the export tests — the integer model's "ort" and "litert" forms against that machine's own
# CPU, ONNX Runtime and LiteRT — and the digits quickstart on the GPU with the newer jax.
# Writes $OUT/versions.txt, export_tests.txt, quickstart.txt and quickstart/result.json.
set -uo pipefail
OUT=${OUT:-/tmp/qdarts_gpu_check}
mkdir -p "$OUT"
# No network there: the wheels as they are, then the project itself (its package data too).
# `python -m pip`: the machine's `pip` and `qdarts` scripts belong to another interpreter.
{ python -m pip install --no-index --no-deps device_data/wheels/*.whl \
    && python -m pip install --no-index --no-deps --no-build-isolation . ; } >"$OUT/pip.txt" 2>&1 \
  || echo "pip install failed (see pip.txt)"
REPO=$PWD
{
  nvidia-smi -L
  lscpu | grep "Model name"
  python - <<'PY'
import importlib.metadata as md
import jax
for name in ("jax", "jaxlib", "flax", "optax", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    print(name, "missing")
print("devices", jax.devices())
PY
} >"$OUT/versions.txt" 2>&1
timeout 270 python -m pytest -q -p no:cacheprovider tests/export >"$OUT/export_tests.txt" 2>&1
echo "export tests exit $?" >>"$OUT/export_tests.txt"
# From $OUT: in the checkout, ./qdarts (without its installed configs/) would shadow the install.
(cd "$OUT" && timeout 300 python -c "import sys; from qdarts.cli import main; sys.exit(main())" \
  search --out quickstart "$REPO/configs/quickstart.yaml" >quickstart.txt 2>&1
  echo "quickstart exit $?" >>quickstart.txt)
tail -n 3 "$OUT/export_tests.txt" "$OUT/quickstart.txt"
