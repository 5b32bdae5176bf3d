"""Compile time, step time and peak memory of the DARTS space's search steps.

Builds the PC-DARTS search network (``search_spaces.darts``) at the ∇QDARTS reference's
CIFAR-10 settings (8 cells, 16 channels, 4 nodes, K=4, bits (2, 4)), wraps it in a
``qdarts.supernet.Supernet`` with the op logits shared per cell type (``op_logit_rows``), splits
it into parameter groups, and times the two first-order steps the search runs: a weight step
(forward + backward w.r.t. weights and LSQ steps, SGD-momentum) and an architecture step
(forward + backward w.r.t. op, edge and bit logits, Adam), on random CIFAR-shaped batches.

    python bench/darts_probe.py --batch 64
    python bench/darts_probe.py --batch 16 --iters 5

Prints one JSON line: ``compile_s`` (trace + compile of both steps), ``step_s`` (one weight
step + one architecture step, the median over ``--iters``), ``images_per_s`` (batch / step_s,
counting the weight-step batch as the reference does), ``peak_rss_gb``, and the details. The
persistent compilation cache is off unless ``--cache DIR`` is given, so ``compile_s`` is what a
first run pays. The reference (PyTorch, this 2-core CPU, batch 64): 2.3 images/s, 10.6 GB.
"""

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from qdarts.relaxation import sample_probs
from qdarts.supernet import Groups, Supernet, masked_logits, merge_supernet, split_supernet
from search_spaces.darts import DartsSpace


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_steps(graphdef, sampler: str):
  """Jitted ``weight_step`` and ``arch_step`` in the shape of ``qdarts.steps``."""
  w_tx = optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(0.025, momentum=0.9))
  a_tx = optax.adamw(6e-4, b1=0.5, b2=0.999, weight_decay=1e-3)

  def forward(weights, scales, arch, prec, x, key, tau, frozen_probs):
    model = merge_supernet(graphdef, Groups(weights, scales, arch, prec))
    probs = sample_probs(masked_logits(model), key, tau, sampler)
    if frozen_probs:
      probs = jax.tree.map(jax.lax.stop_gradient, probs)
    return model.net(x, probs)

  def weight_step(params, opt_state, frozen, x, y, key, tau):
    def loss_fn(p):
      return cross_entropy(forward(*p, *frozen, x, key, tau, True), y)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = w_tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def arch_step(params, opt_state, frozen, x, y, key, tau):
    def loss_fn(p):
      return cross_entropy(forward(*frozen, *p, x, key, tau, False), y)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = a_tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return (jax.jit(weight_step), w_tx), (jax.jit(arch_step), a_tx)


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss: KiB on Linux


def timed(fn):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--cells", type=int, default=8)
  ap.add_argument("--channels", type=int, default=16)
  ap.add_argument("--hw", type=int, default=32)
  ap.add_argument("--bits", default="2,4", help="candidate bits, weights = activations")
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--sampler", default="gumbel", choices=("softmax", "gumbel", "gumbel_hard"))
  ap.add_argument("--cache", default=None, help="persistent compilation cache directory")
  args = ap.parse_args()
  if args.cache:
    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  bits = tuple(int(b) for b in args.bits.split(","))

  space = DartsSpace((args.hw, args.hw, 3), 10, cells=args.cells, init_channels=args.channels)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1, (args.batch, args.hw, args.hw, 3)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, args.batch).astype(np.int32))
  (net, build_s) = timed(lambda: space.build(bits, bits, nnx.Rngs(0)))
  _, calibrate_s = timed(lambda: net.calibrate(x))
  supernet = Supernet(net, np.asarray(space.op_mask()), len(bits), len(bits), space.op_logit_rows())
  graphdef, groups = split_supernet(supernet)
  (w_step, w_tx), (a_step, a_tx) = make_steps(graphdef, args.sampler)
  w_params, a_params = (groups.weights, groups.scales), (groups.arch, groups.prec)
  w_opt, a_opt = w_tx.init(w_params), a_tx.init(a_params)
  key, tau = jax.random.key(0), jnp.float32(1.0)

  w_args = (w_params, w_opt, a_params, x, y, key, tau)
  a_args = (a_params, a_opt, w_params, x, y, key, tau)
  w_exec, w_compile_s = timed(lambda: w_step.lower(*w_args).compile())
  a_exec, a_compile_s = timed(lambda: a_step.lower(*a_args).compile())
  rss_compile_gb = peak_rss_gb()

  times = []
  for i in range(args.iters + 1):
    k_a, k_w = jax.random.split(jax.random.fold_in(key, i))
    t0 = time.perf_counter()
    a_params, a_opt, a_loss = a_exec(a_params, a_opt, w_params, x, y, k_a, tau)
    w_params, w_opt, w_loss = w_exec(w_params, w_opt, a_params, x, y, k_w, tau)
    jax.block_until_ready((a_params, w_params))
    if i:  # the first run pays for allocation
      times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  n_weights = sum(v.size for v in jax.tree.leaves(groups.weights))
  print(
    json.dumps(
      {
        "compile_s": round(w_compile_s + a_compile_s, 1),
        "step_s": round(step_s, 3),
        "images_per_s": round(args.batch / step_s, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_rss_after_compile_gb": round(rss_compile_gb, 2),
        "weight_compile_s": round(w_compile_s, 1),
        "arch_compile_s": round(a_compile_s, 1),
        "build_s": round(build_s, 1),
        "calibrate_s": round(calibrate_s, 1),
        "batch": args.batch,
        "cells": args.cells,
        "channels": args.channels,
        "bits": list(bits),
        "weights": n_weights,
        "losses": [round(float(a_loss), 4), round(float(w_loss), 4)],
        "step_times_s": [round(t, 3) for t in times],
        "device": jax.devices()[0].device_kind,
      }
    )
  )


if __name__ == "__main__":
  main()
