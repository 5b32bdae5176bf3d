"""QAT fine-tuning of the fixed SubNet, and fake-quant evaluation.

The SubNet inherits the supernet's weights and the LSQ step sizes of its chosen bit-widths,
then trains on the whole training split (both halves) with the weight optimizer.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qdarts.config import TrainConfig
from qdarts.data import Dataset, InputSpec, epoch_batches
from qdarts.steps import TrainState, make_predict, make_weight_step, weight_optimizer
from quant import QScale

EpochCallback = Callable[[int, dict], None]


def subnet_apply(graphdef: nnx.GraphDef) -> Callable:
  """``apply_fn((weights, scales), frozen, x, key, tau)`` of a fixed SubNet (no sampling)."""

  def apply_fn(params, frozen, x, key, tau):
    del frozen, key, tau
    weights, scales = params
    return nnx.merge(graphdef, scales, weights)(x)

  return apply_fn


def split_subnet(subnet: nnx.Module) -> tuple[nnx.GraphDef, tuple]:
  graphdef, scales, weights = nnx.split(subnet, QScale, nnx.Param)
  return graphdef, (weights, scales)


def finetune(
  subnet: nnx.Module,
  data: Dataset,
  cfg: TrainConfig,
  batch_size: int,
  seed: int,
  on_epoch: EpochCallback | None = None,
) -> tuple[nnx.Module, list[dict]]:
  """Trains ``subnet`` for ``cfg.epochs`` epochs; returns the trained module and history."""
  graphdef, params = split_subnet(subnet)
  x, y = data.x_train, data.y_train
  steps_per_epoch = len(y) // batch_size
  tx = weight_optimizer(
    cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * steps_per_epoch
  )
  step = make_weight_step(subnet_apply(graphdef), tx, data.input_spec)
  train = TrainState(params, tx.init(params))
  root = jax.random.fold_in(jax.random.key(seed), 2)
  tau, key, history = jnp.float32(1.0), jax.random.fold_in(jax.random.key(seed), 3), []
  for epoch in range(cfg.epochs):
    idx = epoch_batches(len(y), batch_size, jax.random.fold_in(root, epoch))
    metrics = []
    for i in range(steps_per_epoch):
      step_key = jax.random.fold_in(key, epoch * steps_per_epoch + i)  # augmentation draws
      train, m = step(train, None, x[idx[i]], y[idx[i]], step_key, tau)
      metrics.append(m)
    stacked = jax.device_get(metrics)
    row = {"epoch": epoch + 1, **{k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}}
    history.append(row)
    if on_epoch:
      on_epoch(epoch, row)
  weights, scales = train.params
  return nnx.merge(graphdef, scales, weights), history


def predict_logits(
  subnet: nnx.Module, x: jax.Array, batch_size: int = 256, input_spec: InputSpec | None = None
) -> np.ndarray:
  """Fake-quant logits ``(N, K)`` of ``x``, in fixed-size batches (the last one padded).

  ``x`` is uint8 images converted by ``input_spec`` (never augmented), or, without a spec,
  the float network input.
  """
  graphdef, params = split_subnet(subnet)
  predict = make_predict(subnet_apply(graphdef), input_spec)
  n = len(x)
  pad = (-n) % batch_size
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  out = [predict(params, None, xp[i : i + batch_size]) for i in range(0, n + pad, batch_size)]
  return np.asarray(jnp.concatenate(out))[:n]


def accuracy(logits: np.ndarray, labels) -> float:
  return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())
