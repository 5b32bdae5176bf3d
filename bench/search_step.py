"""Speed, compile time and memory of one search iteration of a space (weight step + arch step).

    python bench/search_step.py --space darts --batch 64 --bits 2,4
    python bench/search_step.py --space tiny --batch 64 --bits 2,4,8 --steps 20

Builds the space's supernet, cost tables and objective exactly as `qdarts search` does (from the
space's shipped config, with random uint8 images of the dataset's shape, so no dataset is
needed), compiles the jitted weight and architecture steps ahead of time (timing lowering +
compilation of each; the persistent compilation cache is off, so this is the cold compile a
user waits for), then times ≥ 10 steady steps of each and of the full iteration (arch step then
weight step, as in the search loop), each synchronised with ``block_until_ready``. Prints one
JSON line: medians in seconds, train images/s of the full iteration (batch / iteration time),
compile seconds, and peak memory: the process's peak RSS on CPU, the device's peak bytes in
use on GPU.
"""

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# space → (shipped config, input (H, W, C), classes)
SPACES = {
  "tiny": ("quickstart.yaml", (8, 8, 1), 10),
  "mbconv": ("fashion_mnist_mbconv.yaml", (28, 28, 1), 10),
  "darts": ("cifar10_darts.yaml", (32, 32, 3), 10),
}


def random_dataset(shape, classes: int, batch: int, augment: bool):
  """A :class:`~qdarts.data.Dataset` of random uint8 images: two batches per training half."""
  from qdarts.data import Dataset
  from qdarts.datasets import InputSpec

  rng = np.random.default_rng(0)
  put = jax.device_put

  def images(n):
    return put(rng.integers(0, 256, (n, *shape), dtype=np.uint8))

  def labels(n):
    return put(rng.integers(0, classes, n).astype(np.int32))

  spec = InputSpec(mean=(0.5,) * shape[2], std=(0.25,) * shape[2], augment=augment)
  n = 2 * batch
  return Dataset(
    name="random",
    x_weight=images(n),
    y_weight=labels(n),
    x_arch=images(n),
    y_arch=labels(n),
    x_test=images(batch),
    y_test=labels(batch),
    num_classes=classes,
    input_spec=spec,
  )


def peak_memory_gb() -> tuple[float, str]:
  device = jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 1e9, "device_peak_bytes_in_use"
  scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9, "peak_rss"


def timed(fn, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--space", choices=sorted(SPACES), default="darts")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--bits", default="2,4", help="weight and activation candidates, e.g. 2,4,8")
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up)")
  parser.add_argument("--sampler", default=None, help="softmax, gumbel or gumbel_hard")
  parser.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE")
  args = parser.parse_args()

  from qdarts import pipeline
  from qdarts.config import load_config
  from qdarts.steps import (
    TrainState,
    arch_optimizer,
    make_arch_step,
    make_supernet_apply,
    make_weight_step,
    weight_optimizer,
  )
  from qdarts.supernet import split_supernet

  config, shape, classes = SPACES[args.space]
  bits = "[" + args.bits + "]"
  overrides = [
    f"quant.w_bits={bits}",
    f"quant.a_bits={bits}",
    f"data.batch_size={args.batch}",
    *([f"search.sampler={args.sampler}"] if args.sampler else []),
    *args.overrides,
  ]
  cfg = load_config(ROOT / "configs" / config, overrides)
  data = random_dataset(shape, classes, args.batch, augment=args.space == "darts")

  t0 = time.perf_counter()
  setup = pipeline.prepare(cfg, data)
  setup.supernet.net.calibrate(data.to_input(data.x_weight[: args.batch]))
  setup_s = time.perf_counter() - t0
  graphdef, groups = split_supernet(setup.supernet)
  se = cfg.search
  w_tx = weight_optimizer(se.weight_optimizer, se.weight_lr, se.weight_momentum, 0.0, 1000)
  a_tx = arch_optimizer(se.arch_lr, se.arch_weight_decay)
  w_params, a_params = (groups.weights, groups.scales), (groups.arch, groups.prec)
  wtrain = TrainState(w_params, w_tx.init(w_params))
  atrain = TrainState(a_params, a_tx.init(a_params))
  weight_step = make_weight_step(make_supernet_apply(graphdef, se.sampler), w_tx, data.input_spec)
  arch_step = make_arch_step(graphdef, se.sampler, a_tx, cfg.cost.dual_lr, data.input_spec)

  xw, yw = data.x_weight[: args.batch], data.y_weight[: args.batch]
  xa, ya = data.x_arch[: args.batch], data.y_arch[: args.batch]
  key, tau = jax.random.key(0), jnp.float32(1.0)
  objective = setup.objective

  t0 = time.perf_counter()
  weight_c = weight_step.lower(wtrain, atrain.params, xw, yw, key, tau).compile()
  compile_weight_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  arch_c = arch_step.lower(atrain, wtrain.params, objective, xa, ya, key, tau).compile()
  compile_arch_s = time.perf_counter() - t0

  def weight_only():
    return weight_c(wtrain, atrain.params, xw, yw, key, tau)

  def arch_only():
    return arch_c(atrain, wtrain.params, objective, xa, ya, key, tau)

  def iteration():
    a, obj, _ = arch_c(atrain, wtrain.params, objective, xa, ya, key, tau)
    return weight_c(wtrain, a.params, xw, yw, key, tau)

  for fn in (weight_only, arch_only, iteration):  # one warm-up each (allocations, autotuning)
    timed(fn)
  weight_s = statistics.median(timed(weight_only) for _ in range(args.steps))
  arch_s = statistics.median(timed(arch_only) for _ in range(args.steps))
  iteration_s = statistics.median(timed(iteration) for _ in range(args.steps))
  memory_gb, memory_kind = peak_memory_gb()
  n_weights = sum(x.size for x in jax.tree.leaves(groups.weights))
  print(
    json.dumps(
      {
        "space": args.space,
        "batch": args.batch,
        "bits": [int(b) for b in args.bits.split(",")],
        "sampler": se.sampler,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "weights": int(n_weights),
        "choice_points": len(setup.space.choice_names),
        "setup_s": round(setup_s, 2),
        "compile_weight_s": round(compile_weight_s, 2),
        "compile_arch_s": round(compile_arch_s, 2),
        "compile_s": round(compile_weight_s + compile_arch_s, 2),
        "weight_step_s": weight_s,
        "arch_step_s": arch_s,
        "iteration_s": iteration_s,
        "images_per_s": args.batch / iteration_s,
        "steps_timed": args.steps,
        "peak_memory_gb": round(memory_gb, 3),
        "memory": memory_kind,
      }
    )
  )


if __name__ == "__main__":
  main()
