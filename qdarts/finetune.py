"""QAT fine-tuning of the fixed SubNet, and fake-quant evaluation.

The SubNet inherits the supernet's weights and the LSQ step sizes of its chosen bit-widths,
then trains on the whole training split (both halves) with the weight optimizer.
"""

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from qdarts.checkpoint import Position, latest_checkpoint, load_checkpoint, save_checkpoint
from qdarts.config import TrainConfig
from qdarts.data import Dataset, InputSpec, epoch_batches
from qdarts.datasets import prepare_batch
from qdarts.steps import (
  TrainState,
  all_finite,
  apply_weight_grads,
  cross_entropy,
  make_predict,
  update_if,
  weight_optimizer,
)
from quant import QScale

EpochCallback = Callable[[int, dict], None]


def split_subnet(subnet: nnx.Module) -> tuple[nnx.GraphDef, tuple, nnx.State]:
  """``graphdef, (weights, scales), stats``: stats is every other variable (BatchNorm running
  statistics), empty for the chain spaces."""
  graphdef, scales, weights, stats = nnx.split(subnet, QScale, nnx.Param, ...)
  return graphdef, (weights, scales), stats


def make_subnet_step(
  graphdef: nnx.GraphDef, tx: optax.GradientTransformation, input_spec: InputSpec | None
) -> Callable:
  """Jitted ``step(train, stats, x, y, key) -> (train, stats, metrics)`` of a fixed SubNet.

  ``x`` is a uint8 batch, converted and augmented in the step (key from ``key``); the forward
  pass in training mode updates ``stats`` (running statistics), returned for the next step.
  """

  def step(train: TrainState, stats, x, y, key):
    x = prepare_batch(x, key, input_spec)

    def loss_fn(params):
      weights, scales = params
      # fresh BatchStat variables of this trace: the forward updates them in place
      model = nnx.merge(graphdef, scales, weights, jax.tree.map(jnp.asarray, stats))
      loss, acc = cross_entropy(model(x), y)
      return loss, (acc, split_subnet(model)[2])

    (loss, (acc, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(train.params)
    finite = all_finite(loss, grads)  # a non-finite step changes nothing
    train, stats = update_if(
      finite, lambda state, g, new: (apply_weight_grads(tx, state[0], g), new), (train, stats),
      grads, new_stats,
    )  # fmt: skip
    return train, stats, {"loss": loss, "acc": acc, "skipped": 1.0 - finite.astype(jnp.float32)}

  return jax.jit(step)


def finetune(
  subnet: nnx.Module,
  data: Dataset,
  cfg: TrainConfig,
  batch_size: int,
  seed: int,
  on_epoch: EpochCallback | None = None,
  checkpoint_dir: Path | None = None,
  resume: bool = False,
) -> tuple[nnx.Module, list[dict]]:
  """Trains ``subnet`` (in training mode) for ``cfg.epochs`` epochs; returns the trained module
  and the per-epoch history.

  With ``checkpoint_dir``, the whole training state (weights, LSQ steps, optimizer state,
  running statistics) and the history are saved there at the end of every epoch (npz, no
  pickle; the newest two kept); ``resume`` continues after the newest one's epoch. Keys and
  data order are ``fold_in(seed, epoch, step)``, so a resumed training draws what an
  uninterrupted one would.
  """
  subnet.train()  # BatchNorm: batch statistics, running ones updated
  graphdef, params, stats = split_subnet(subnet)
  x, y = data.x_train, data.y_train
  steps_per_epoch = len(y) // batch_size
  tx = weight_optimizer(
    cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * steps_per_epoch
  )
  step = make_subnet_step(graphdef, tx, data.input_spec)
  train = TrainState(params, tx.init(params))
  root = jax.random.fold_in(jax.random.key(seed), 2)
  key, history, start = jax.random.fold_in(jax.random.key(seed), 3), [], 0
  newest = latest_checkpoint(checkpoint_dir) if resume and checkpoint_dir else None
  if newest is not None:
    (train, stats), position = load_checkpoint(newest, (train, stats))
    start, history = position.epoch, position.history
  for epoch in range(start, cfg.epochs):
    idx = epoch_batches(len(y), batch_size, jax.random.fold_in(root, epoch))
    metrics = []
    for i in range(steps_per_epoch):
      step_key = jax.random.fold_in(key, epoch * steps_per_epoch + i)  # augmentation draws
      train, stats, m = step(train, stats, x[idx[i]], y[idx[i]], step_key)
      metrics.append(m)
    stacked = jax.device_get(metrics)
    row = {"epoch": epoch + 1, **{k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}}
    history.append(row)
    if checkpoint_dir is not None:
      save_checkpoint(checkpoint_dir, (train, stats), Position(epoch + 1, 0, {}, history), keep=2)
    if on_epoch:
      on_epoch(epoch, row)
  weights, scales = train.params
  return nnx.merge(graphdef, scales, weights, stats), history


def predict_logits(
  subnet: nnx.Module, x: jax.Array, batch_size: int = 256, input_spec: InputSpec | None = None
) -> np.ndarray:
  """Fake-quant logits ``(N, K)`` of ``x`` in evaluation mode (BatchNorm: running statistics),
  in fixed-size batches (the last one padded).

  ``x`` is uint8 images converted by ``input_spec`` (never augmented), or, without a spec,
  the float network input. Matmuls and convs run in float32 ("highest"): these are the logits
  the exported integer models are held to, and a GPU's default TF32 moves them by tens of
  accumulator steps.
  """
  with jax.default_matmul_precision("highest"):
    return _predict_logits(subnet, x, batch_size, input_spec)


def _predict_logits(subnet, x, batch_size, input_spec) -> np.ndarray:
  subnet.eval()
  graphdef, params, stats = split_subnet(subnet)

  def apply_fn(params, stats, x, key, tau):
    del key, tau
    weights, scales = params
    return nnx.merge(graphdef, scales, weights, stats)(x)

  predict = make_predict(apply_fn, input_spec)
  n = len(x)
  pad = (-n) % batch_size
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  out = [predict(params, stats, xp[i : i + batch_size]) for i in range(0, n + pad, batch_size)]
  return np.asarray(jnp.concatenate(out))[:n]


def accuracy(logits: np.ndarray, labels) -> float:
  return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())
