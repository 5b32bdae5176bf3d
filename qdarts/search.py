"""The first-order bilevel search loop (DARTS), around the jitted steps of ``qdarts.steps``.

Per iteration: one architecture step on a batch of the architecture half (after the warm-up
epochs), then one weight step on a batch of the weight half. Keys are ``fold_in(root, step)``
so the draws depend only on the seed and the step. Metrics stay on the device within an epoch
and are averaged once per epoch.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from qdarts.checkpoint import (
  NonFiniteSearch,
  Position,
  SearchInterrupted,
  StopRequest,
  latest_checkpoint,
  load_checkpoint,
  save_checkpoint,
)
from qdarts.config import Config
from qdarts.data import Dataset, epoch_batches
from qdarts.derive import argmax_selection, selection_costs
from qdarts.objective import CostObjective
from qdarts.parallel import check_batch_divides, data_mesh, replicate, shard_batch
from qdarts.relaxation import expected_probs, temperature
from qdarts.steps import (
  TrainState,
  arch_optimizer,
  make_arch_step,
  make_supernet_apply,
  make_weight_step,
  weight_optimizer,
)
from qdarts.supernet import Groups, masked_logits, merge_supernet

EpochCallback = Callable[[int, dict, dict], None]
"""``on_epoch(epoch, row, logits)`` after each epoch: the 0-based epoch, its metrics row, and the
masked logits ``{"op", "w", "a"}`` as numpy arrays (what ``qdarts.monitor`` plots and costs)."""


@dataclass
class SearchOutcome:
  """Final parameter groups, one metrics dict per epoch, and the final objective."""

  groups: Groups
  history: list[dict]
  objective: CostObjective  # with the final λ of budget terms


def argmax_cost(objective: CostObjective, logits: dict, term: int = 0) -> float:
  """Exact cost (of one term's metric) of the SubNet the logits would derive now."""
  k = [term]
  tables = np.asarray(objective.tables, np.float64)[k]
  fixed = np.asarray(objective.fixed, np.float64)[k]
  peak = np.asarray(objective.peak)[k]
  return float(selection_costs(tables, fixed, peak, argmax_selection(logits))[0])


def run_search(
  cfg: Config,
  data: Dataset,
  graphdef: nnx.GraphDef,
  groups: Groups,
  objective: CostObjective,
  on_epoch: EpochCallback | None = None,
  mesh: Mesh | None = None,
  checkpoint_dir: Path | None = None,
  resume_from: Path | None = None,
) -> SearchOutcome:
  """Runs ``cfg.search.epochs`` epochs and returns the final groups and the history.

  With ``checkpoint_dir``, the whole search state is saved every ``search.checkpoint_every``
  steps and at the end of every epoch (:mod:`qdarts.checkpoint`); ``resume_from`` continues
  from such a checkpoint and ends exactly as the uninterrupted search would. SIGINT stops at
  the next step boundary with a checkpoint (:class:`~qdarts.checkpoint.SearchInterrupted`). A
  step with a non-finite loss or gradient changes nothing; ``search.max_skipped_steps`` of them
  in a row stop the search (:class:`~qdarts.checkpoint.NonFiniteSearch`).

  With several devices (or an explicit ``mesh``), each batch is split over the mesh's ``data``
  axis and the parameter groups, optimizer states and objective are replicated: data
  parallelism, with the gradient all-reduce inserted by ``jax.jit``.
  """
  if mesh is None and jax.device_count() > 1:
    mesh = data_mesh()
  se, bs = cfg.search, cfg.data.batch_size
  steps_per_epoch = min(len(data.y_weight), len(data.y_arch)) // bs
  w_tx = weight_optimizer(
    se.weight_optimizer,
    se.weight_lr,
    se.weight_momentum,
    se.weight_decay,
    se.epochs * steps_per_epoch,
  )
  a_tx = arch_optimizer(se.arch_lr, se.arch_weight_decay)
  w_params, a_params = (groups.weights, groups.scales), (groups.arch, groups.prec)
  wtrain, atrain = (
    TrainState(w_params, w_tx.init(w_params)),
    TrainState(a_params, a_tx.init(a_params)),
  )
  if mesh is not None:
    check_batch_divides(bs, mesh)
    wtrain, atrain, objective = replicate((wtrain, atrain, objective), mesh)
  place = (lambda x: x) if mesh is None else (lambda x: shard_batch(x, mesh))
  weight_step = make_weight_step(make_supernet_apply(graphdef, se.sampler), w_tx, data.input_spec)
  arch_step = make_arch_step(graphdef, se.sampler, a_tx, cfg.cost.dual_lr, data.input_spec)
  logits_of = jax.jit(lambda w, a: masked_logits(merge_supernet(graphdef, Groups(*w, *a))))
  cost_of = jax.jit(lambda obj, logits: obj.costs(expected_probs(logits))[0])

  root = jax.random.key(cfg.seed)
  data_key, step_key = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
  position = Position()
  if resume_from is not None:
    (wtrain, atrain, objective), position = load_checkpoint(
      resume_from, (wtrain, atrain, objective)
    )
    if mesh is not None:
      wtrain, atrain, objective = replicate((wtrain, atrain, objective), mesh)
  history = list(position.history)

  def checkpoint(epoch: int, step: int, w_metrics: list, a_metrics: list) -> Path | None:
    if checkpoint_dir is None:
      return None
    partial = {"weight": jax.device_get(w_metrics), "arch": jax.device_get(a_metrics)}
    partial = jax.tree.map(float, partial)
    pos = Position(epoch, step, partial, history)
    return save_checkpoint(checkpoint_dir, (wtrain, atrain, objective), pos, se.keep_checkpoints)

  # (steps skipped in a row now, longest such run since the last look), kept on the device:
  # reading a step's metrics on the host every step would stall the dispatch queue
  runs = jnp.zeros((2,), jnp.int32)
  with StopRequest() as stop:
    for epoch in range(position.epoch, se.epochs):
      tau = jnp.float32(temperature(epoch, se.warmup_epochs, se.epochs, se.tau_start, se.tau_end))
      ek = jax.random.fold_in(data_key, epoch)
      w_idx = epoch_batches(len(data.y_weight), bs, jax.random.fold_in(ek, 0))
      a_idx = epoch_batches(len(data.y_arch), bs, jax.random.fold_in(ek, 1))
      resumed = epoch == position.epoch
      w_metrics = list(position.partial_metrics["weight"]) if resumed else []
      a_metrics = list(position.partial_metrics["arch"]) if resumed else []
      for i in range(position.step if resumed else 0, steps_per_epoch):
        k_w, k_a = jax.random.split(jax.random.fold_in(step_key, epoch * steps_per_epoch + i))
        arch_skipped = jnp.float32(0.0)
        if epoch >= se.warmup_epochs:
          x, y = place(data.x_arch[a_idx[i]]), place(data.y_arch[a_idx[i]])
          atrain, objective, m = arch_step(atrain, wtrain.params, objective, x, y, k_a, tau)
          a_metrics.append(m)
          arch_skipped = m["arch_skipped"]
        x, y = place(data.x_weight[w_idx[i]]), place(data.y_weight[w_idx[i]])
        wtrain, m = weight_step(wtrain, atrain.params, x, y, k_w, tau)
        w_metrics.append(m)
        runs = _count_skipped(runs, arch_skipped + m["skipped"])
        if (i + 1) % se.max_skipped_steps == 0 or i + 1 == steps_per_epoch:
          longest = int(runs[1])  # one host read per max_skipped_steps steps
          if longest >= se.max_skipped_steps:
            last = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
            raise NonFiniteSearch(
              f"search: the loss or its gradients were not finite in {longest} consecutive "
              f"steps (by epoch {epoch + 1}, step {i + 1}); stopped with the parameters of the "
              f"last finite step. Last checkpoint: {last or 'none'}. Lower "
              "search.weight_lr / search.arch_lr, or check the data"
            )
          runs = runs.at[1].set(runs[0])
        done = i + 1
        if stop.requested:
          path = checkpoint(epoch, done, w_metrics, a_metrics)
          raise SearchInterrupted(
            f"interrupted at epoch {epoch + 1}, step {done}; checkpoint {path}"
            + (f"; resume with: qdarts search --resume {checkpoint_dir.parent}" if path else "")
          )
        if se.checkpoint_every and done % se.checkpoint_every == 0 and done < steps_per_epoch:
          checkpoint(epoch, done, w_metrics, a_metrics)
      logits = logits_of(wtrain.params, atrain.params)
      row = {
        "epoch": epoch + 1,
        "tau": float(tau),
        **_mean(w_metrics),
        **_mean(a_metrics),
        "expected_cost": float(cost_of(objective, logits)),
        "argmax_cost": argmax_cost(objective, logits),
      }
      history.append(row)
      checkpoint(epoch + 1, 0, [], [])
      if on_epoch:
        on_epoch(epoch, row, jax.device_get(logits))
  return SearchOutcome(Groups(*wtrain.params, *atrain.params), history, objective)


@jax.jit
def _count_skipped(runs: jax.Array, skipped: jax.Array) -> jax.Array:
  """``(in a row, longest)`` after one more step, ``skipped`` > 0 when it changed nothing."""
  now = jnp.where(skipped > 0, runs[0] + 1, 0)
  return jnp.stack([now, jnp.maximum(runs[1], now)])


def _mean(metrics: list[dict]) -> dict:
  if not metrics:
    return {}
  stacked = jax.device_get(metrics)  # float64 means: restored metrics are Python floats
  return {k: float(np.mean([float(m[k]) for m in stacked])) for k in stacked[0]}
