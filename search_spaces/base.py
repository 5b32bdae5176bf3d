"""What a search space is: ordered choice points, candidate ops, and their layers for costing.

A space builds one network class for both stages: the supernet (every candidate op, every
candidate bit-width) and a fixed SubNet (one op and one bit pair per choice point), so a SubNet
inherits the supernet's weights by copying, and the search and the fine-tuning share code.
"""

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import jax
from flax import nnx

from hwcost import LayerSpec


class ArchParam(nnx.Param):
  """Architecture logits: op logits α ``(G, O)`` (the supernet's) and any logits a space keeps
  inside its network (e.g. PC-DARTS edge normalization). Trained by the architecture step."""


class PrecParam(nnx.Param):
  """Bit-width logits: weights β ``(L, O, Bw)`` and activations γ ``(L, O, Ba)``."""


class NotAChain(Exception):
  """A SubNet whose graph is not a plain chain (residual adds, cells): the chain exporter
  cannot write it."""


class Probs(NamedTuple):
  """Relaxed choices fed to a supernet's forward pass.

  Attributes:
    op: ``(L, O)`` probabilities of the candidate ops at each choice point.
    w: ``(L, O, Bw)`` probabilities of each weight bit-width, per op.
    a: ``(L, O, Ba)`` probabilities of each activation bit-width, per op.
  """

  op: jax.Array
  w: jax.Array
  a: jax.Array


@dataclass(frozen=True)
class Choice:
  """A discrete choice at one choice point: op name and its weight/activation bits."""

  op: str
  w_bits: int
  a_bits: int


class SearchSpace(Protocol):
  """The interface the search, derivation and export use.

  Attributes:
    name: registry name of the space.
    choice_names: ``L`` names, in forward order.
    op_names: ``O`` candidate op names; ``op_mask()[l, o]`` says which fit choice point l.
  """

  name: str
  choice_names: tuple[str, ...]
  op_names: tuple[str, ...]

  def op_mask(self) -> list[list[bool]]: ...

  def build(self, w_bits, a_bits, rngs: nnx.Rngs, choices=None) -> nnx.Module:
    """The supernet (``choices`` None) or the fixed SubNet of ``choices``."""
    ...

  def candidate_layers(self, net: nnx.Module) -> list[list[list[LayerSpec] | None]]: ...

  def fixed_layers(self, net: nnx.Module) -> list[LayerSpec]: ...
