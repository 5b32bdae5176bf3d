#!/usr/bin/env bash
# The GPU figures of the paper-scale search in one call of a few minutes, on a machine with one
# GPU and no network (jax, flax, optax, numpy, pyyaml, onnx preinstalled; qdarts not installed):
#
#   bash bench/gpu_search_step.sh            # JSON lines to $OUT/search_step.jsonl
#
# DARTS space (8 cells, 16 channels, PC-DARTS K=4) at batch 256 with bits (2,4) and (2,4,8), the
# reference's settings (DESIGN.md: 51.9 and 31.8 train images/s, 22 and 26 GB on one H100), then
# batch 64 (the reference: 12.7 images/s, 5.6 GB), then batch 256 (2,4) again with GPU autotuning
# off, to weigh compile time against step time. Each run has its own timeout, so one slow compile
# cannot use the whole call.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/qdarts-gpu}
mkdir -p "$OUT"
# Uninstalled checkout: configs/ is the package qdarts.configs once installed; link it instead.
[ -e qdarts/configs ] || ln -s ../configs qdarts/configs
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c \
  "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } \
  >"$OUT/machine.txt" 2>&1
run() {  # $1 = seconds, then search_step.py arguments
  local limit=$1; shift
  timeout "$limit" python bench/search_step.py "$@" >>"$OUT/search_step.jsonl" 2>>"$OUT/stderr.txt" \
    || echo "{\"failed\": \"$*\", \"limit_s\": $limit}" >>"$OUT/search_step.jsonl"
}
run 150 --space darts --batch 256 --bits 2,4
run 150 --space darts --batch 256 --bits 2,4,8
run 100 --space darts --batch 64 --bits 2,4
XLA_FLAGS=--xla_gpu_autotune_level=0 run 100 --space darts --batch 256 --bits 2,4
cat "$OUT/machine.txt" "$OUT/search_step.jsonl"
