"""The supernet: a space's network plus the architecture and precision logits, as NNX params.

Parameter groups are ``nnx.Param`` subclasses, so one ``nnx.split`` separates them:
``ArchParam`` (op logits α), ``PrecParam`` (bit logits β, γ), ``quant.QScale`` (LSQ steps) and
plain ``nnx.Param`` (weights). Filters list the most specific type first.
"""

from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qdarts.relaxation import MASKED_LOGIT
from quant import QScale
from search_spaces.base import ArchParam, PrecParam


@dataclass(frozen=True)
class ChoiceMasks:
  """Which choices the search may take: the capability mask of a target, factored per logit.

  Attributes:
    op: bool ``(L, O)``: op o exists at choice point l and runs at some supported bit pair.
    w: bool ``(L, O, Bw)``: weight width i is allowed for op o at choice point l.
    a: bool ``(L, O, Ba)``: activation width j is allowed.
  """

  op: np.ndarray
  w: np.ndarray
  a: np.ndarray


def choice_masks(op_mask: np.ndarray, pair_mask: np.ndarray) -> tuple[ChoiceMasks, list]:
  """Factors a pair mask into separate weight-bit and activation-bit masks.

  Weight and activation widths have separate logits (β, γ), so an allowed set of pairs can be
  enforced exactly by masking logits only when it is a product W_{l,o} × A_{l,o}. An op with no
  allowed pair is masked out as an op.

  Args:
    op_mask: bool ``(L, O)``: which candidates exist.
    pair_mask: bool ``(L, O, Bw, Ba)``: which (w, a) pairs the target runs (and fit memory).

  Returns:
    The masks, and the ``(l, o)`` whose allowed pairs are not a product (the caller rejects
    them: no logit mask can express them).
  """
  allowed = op_mask[..., None, None] & pair_mask
  w_mask, a_mask = allowed.any(axis=3), allowed.any(axis=2)
  product = w_mask[..., :, None] & a_mask[..., None, :]
  not_product = [tuple(int(i) for i in la) for la in np.argwhere((product != allowed).any((2, 3)))]
  return ChoiceMasks(op=allowed.any((2, 3)), w=w_mask, a=a_mask), not_product


def _static(mask: np.ndarray) -> tuple:
  return tuple(np.asarray(mask, bool).reshape(-1).tolist()), np.asarray(mask).shape


class Supernet(nnx.Module):
  """Holds the network and its logits; ``__call__`` is the network's forward with given probs.

  Args:
    net: the space's supernet network.
    masks: a :class:`ChoiceMasks`, or a bool ``(L, O)`` op mask (every bit width allowed).
    n_w_bits, n_a_bits: numbers of candidate widths Bw, Ba.
    op_rows: ``L`` row indices into the op-logit table, for spaces whose choice points share
      op logits (DARTS: one row per edge and cell type); ``None``: one row per choice point.
  """

  def __init__(
    self,
    net: nnx.Module,
    masks,
    n_w_bits: int,
    n_a_bits: int,
    op_rows=None,
  ):
    if not isinstance(masks, ChoiceMasks):
      op_mask = np.asarray(masks, bool)
      masks = ChoiceMasks(
        op_mask,
        np.ones((*op_mask.shape, n_w_bits), bool),
        np.ones((*op_mask.shape, n_a_bits), bool),
      )
    num_layers, num_ops = masks.op.shape
    self.op_rows = tuple(range(num_layers)) if op_rows is None else tuple(int(r) for r in op_rows)
    if len(self.op_rows) != num_layers:
      raise ValueError(f"op_rows has {len(self.op_rows)} entries for {num_layers} choice points")
    self.net = net
    self.arch_logits = ArchParam(jnp.zeros((max(self.op_rows) + 1, num_ops)))
    self.w_bit_logits = PrecParam(jnp.zeros((num_layers, num_ops, n_w_bits)))
    self.a_bit_logits = PrecParam(jnp.zeros((num_layers, num_ops, n_a_bits)))
    # static (hashable) copies: they are part of the graph definition, not of the state
    self.op_mask = tuple(map(tuple, masks.op.tolist()))
    self.w_mask, self.a_mask = _static(masks.w), _static(masks.a)


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


def _mask_array(static) -> jnp.ndarray:
  flat, shape = static
  return jnp.asarray(np.asarray(flat, bool).reshape(shape))


def masked_logits(model: Supernet) -> dict:
  """``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}`` logits, masked choices at −1e9.

  Ops that do not fit a choice point or that the target cannot run, and bit widths outside the
  target's capability, get ``MASKED_LOGIT``: their probability is exactly 0 in float32, so they
  are never sampled, never costed and never derived. Shared op-logit rows are expanded to one
  row per choice point.
  """
  op = model.arch_logits[...][jnp.asarray(model.op_rows)]
  return {
    "op": jnp.where(jnp.asarray(model.op_mask), op, MASKED_LOGIT),
    "w": jnp.where(_mask_array(model.w_mask), model.w_bit_logits[...], MASKED_LOGIT),
    "a": jnp.where(_mask_array(model.a_mask), model.a_bit_logits[...], MASKED_LOGIT),
  }
