"""The supernet: a space's network plus the architecture and precision logits, as NNX params.

Parameter groups are ``nnx.Param`` subclasses, so one ``nnx.split`` separates them:
``ArchParam`` (op logits α), ``PrecParam`` (bit logits β, γ), ``quant.QScale`` (LSQ steps) and
plain ``nnx.Param`` (weights). Filters list the most specific type first.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qdarts.relaxation import MASKED_LOGIT
from quant import QScale
from search_spaces.base import ArchParam, PrecParam


class Supernet(nnx.Module):
  """Holds the network and its logits; ``__call__`` is the network's forward with given probs."""

  def __init__(self, net: nnx.Module, op_mask: np.ndarray, n_w_bits: int, n_a_bits: int):
    num_layers, num_ops = op_mask.shape
    self.net = net
    self.arch_logits = ArchParam(jnp.zeros((num_layers, num_ops)))
    self.w_bit_logits = PrecParam(jnp.zeros((num_layers, num_ops, n_w_bits)))
    self.a_bit_logits = PrecParam(jnp.zeros((num_layers, num_ops, n_a_bits)))
    self.op_mask = tuple(map(tuple, op_mask.tolist()))  # static


class Groups(NamedTuple):
  """The supernet's state split into its parameter groups (pytrees of arrays)."""

  weights: nnx.State
  scales: nnx.State
  arch: nnx.State
  prec: nnx.State


def split_supernet(model: Supernet) -> tuple[nnx.GraphDef, Groups]:
  """Splits once; afterwards the steps work on the returned pytrees only."""
  graphdef, arch, prec, scales, weights = nnx.split(model, ArchParam, PrecParam, QScale, nnx.Param)
  return graphdef, Groups(weights=weights, scales=scales, arch=arch, prec=prec)


def merge_supernet(graphdef: nnx.GraphDef, groups: Groups) -> Supernet:
  return nnx.merge(graphdef, groups.arch, groups.prec, groups.scales, groups.weights)


def masked_logits(model: Supernet) -> dict:
  """``{"op", "w", "a"}`` logits with ops that do not fit a choice point at −1e9."""
  mask = jnp.asarray(model.op_mask)
  return {
    "op": jnp.where(mask, model.arch_logits[...], MASKED_LOGIT),
    "w": model.w_bit_logits[...],
    "a": model.a_bit_logits[...],
  }
