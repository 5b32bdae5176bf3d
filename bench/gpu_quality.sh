#!/usr/bin/env bash
# The GPU preset of the search-quality benchmark (issue 7) in one call of under 8 minutes on a
# machine with one GPU, 16 CPU cores and no network (jax, flax, optax, numpy, pyyaml, onnx,
# onnxruntime and matplotlib installed; qdarts not installed):
#
#   mkdir -p device_data && cp -r /work/shared/datasets/fashion-mnist device_data/   # here, once
#   bash bench/gpu_quality.sh          # on the GPU machine, with device_data carried
#
# Fashion-MNIST is read from $QDARTS_DATA_DIR (default: device_data/, an ignored folder of the
# repo). The run is compile-bound (small networks, one XLA program per SubNet), so the
# (seed, target) groups run as 6 parallel processes sharing the GPU: compilation runs on the
# host's cores. Each shard has its own time limit; whatever finished is tabulated, and the
# same command on the same (warm) machine continues the rest from $BENCH_DIR. Writes
# results.md, results.json, pareto.png, machine.txt and log.txt to $OUT.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/qdarts-gpu}
BENCH_DIR=${BENCH_DIR:-/tmp/qdarts-quality-gpu}  # every unit's folder (not brought back)
SHARDS=${SHARDS:-6}
LIMIT_S=${LIMIT_S:-400}  # per shard; the report step after it takes under a minute
mkdir -p "$OUT"
# Uninstalled checkout: configs/ is the package qdarts.configs once installed; link it instead.
[ -e qdarts/configs ] || ln -s ../configs qdarts/configs
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.12
export QDARTS_DATA_DIR=${QDARTS_DATA_DIR:-$PWD/device_data}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"  # compile time dominates here
export QDARTS_CACHE_DIR=${QDARTS_CACHE_DIR:-$BENCH_DIR/jax-cache}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c \
  "import jax, flax, onnxruntime, matplotlib; print('jax', jax.__version__, 'flax', \
flax.__version__, 'onnxruntime', onnxruntime.__version__, jax.devices())"; } \
  >"$OUT/machine.txt" 2>&1 || { cat "$OUT/machine.txt"; echo "missing a package"; exit 2; }
ls "$QDARTS_DATA_DIR"/fashion-mnist/*.gz >/dev/null || { echo "no Fashion-MNIST in $QDARTS_DATA_DIR"; exit 2; }
start=$(date +%s)
for ((i = 0; i < SHARDS; i++)); do
  timeout "$LIMIT_S" python bench/quality.py --preset gpu --out "$BENCH_DIR/bench" --shard "$i/$SHARDS" \
    >"$OUT/shard$i.txt" 2>&1 &
done
wait
echo "shards finished in $(($(date +%s) - start)) s" >>"$OUT/machine.txt"
python bench/quality.py --preset gpu --out "$BENCH_DIR/bench" --report-only >"$OUT/log.txt" 2>&1
cat "$OUT"/shard*.txt >>"$OUT/log.txt"
rm -f "$OUT"/shard*.txt
cp "$BENCH_DIR"/bench/results.md "$BENCH_DIR"/bench/results.json "$BENCH_DIR"/bench/pareto.png \
  "$OUT"/ 2>/dev/null
cat "$OUT/machine.txt" "$OUT/results.md"
