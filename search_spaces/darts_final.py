"""The network a PC-DARTS genotype describes, for final quantization-aware training.

DARTS's evaluation network (``NetworkCIFAR`` in the reference): a stem, ``cells`` cells of the
genotype's two cell types (reduction cells at ``cells//3`` and ``2·cells//3``), global average
pooling, a classifier. Each node sums its two genes' ops on the full channels (no partial
channels in the final network). Every conv of a gene's op is fake-quantized (LSQ) at the gene's
bits; the stem, the preprocess convs and the classifier at 8 bits. No auxiliary head and no
drop-path (the reference trains with neither by default).

State: besides ``nnx.Param`` (weights, BN scale and bias) and ``quant.QScale`` (LSQ steps),
with ``running_stats=True`` every BatchNorm holds its running mean and variance as
``nnx.BatchStat``: ``net.train()`` (the default) normalizes with the batch statistics and
updates the running ones (so a jitted step must return the updated ``BatchStat`` state),
``net.eval()`` normalizes with the running ones. With ``running_stats=False`` the network holds
only Params and QScales and always normalizes with the batch statistics.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from hwcost import LayerSpec
from search_spaces.darts import (
  DIL_KERNELS,
  SEP_KERNELS,
  CellPlan,
  Stem,
  build_preprocess,
  op_layer_specs,
  plan_cells,
  preprocess_specs,
  run_preprocess,
)
from search_spaces.darts_genotype import Gene, Genotype
from search_spaces.darts_ops import (
  DwPwStack,
  FactorizedReduceStack,
  QuantHead,
  avg_pool_3x3,
  max_pool_3x3,
)


def build_final(
  genotype: Genotype,
  input_shape: Sequence[int],
  num_classes: int,
  rngs: nnx.Rngs,
  *,
  cells: int = 20,
  init_channels: int = 36,
  stem_multiplier: int = 3,
  running_stats: bool = True,
) -> "DartsFinalNet":
  """The standalone final network of ``genotype`` (see the module docstring)."""
  return DartsFinalNet(
    genotype, tuple(input_shape), num_classes, rngs, cells, init_channels, stem_multiplier,
    running_stats,
  )  # fmt: skip


def final_plans(
  genotype: Genotype,
  input_shape: Sequence[int],
  cells: int,
  init_channels: int,
  stem_multiplier: int = 3,
) -> tuple[CellPlan, ...]:
  """The final network's cells: reductions at ``cells//3`` and ``2·cells//3`` (DARTS)."""
  reductions = tuple(sorted({cells // 3, 2 * cells // 3}))
  return plan_cells(
    tuple(input_shape[:2]), cells, init_channels, genotype.nodes, stem_multiplier, reductions
  )  # fmt: skip


@dataclass(frozen=True)
class GeneLayers:
  """The quantized convs one gene puts into the final network, over every cell of its type.

  Attributes:
    name: ``"{normal|reduce}.node{j}.from{src}"`` (states 0, 1: the cell inputs; 2 + k: node k).
    op: the gene's op; w_bits, a_bits: its bits (None for an op without convs).
    specs: one :class:`~hwcost.LayerSpec` per conv, in every cell of the gene's type.
  """

  name: str
  op: str
  w_bits: int | None
  a_bits: int | None
  specs: tuple[LayerSpec, ...]


def final_layer_specs(
  genotype: Genotype,
  input_shape: Sequence[int],
  num_classes: int,
  *,
  cells: int = 20,
  init_channels: int = 36,
  stem_multiplier: int = 3,
) -> tuple[list[GeneLayers], list[LayerSpec]]:
  """The layers of :func:`build_final`'s network, for its exact cost on a target.

  Returns:
    One :class:`GeneLayers` per gene (normal genes, then reduce genes) and the fixed 8-bit
    layers: the stem, every cell's preprocess convs and the classifier.
  """
  plans = final_plans(genotype, input_shape, cells, init_channels, stem_multiplier)
  h, w, cin = input_shape
  c_stem = stem_multiplier * init_channels
  fixed = [LayerSpec("stem", "conv", 3, 1, cin, c_stem, (h, w), (h, w))]
  per_gene: dict[tuple[str, int], list[LayerSpec]] = {}
  for plan in plans:
    fixed += preprocess_specs(f"cell{plan.index}", plan)
    kind = "reduce" if plan.reduction else "normal"
    for k, (op, src, _, _) in enumerate(genotype.reduce if plan.reduction else genotype.normal):
      stride = 2 if plan.reduction and src < 2 else 1
      name = f"cell{plan.index}.node{k // 2}.from{src}.{op}"
      per_gene.setdefault((kind, k), []).extend(
        op_layer_specs(name, op, plan.channels, stride, plan.hw)
      )
  concat = genotype.reduce_concat if plans[-1].reduction else genotype.normal_concat
  fixed.append(
    LayerSpec("head.fc", "linear", 1, 1, len(concat) * plans[-1].channels, num_classes, (1, 1),
              (1, 1))
  )  # fmt: skip
  genes = [
    GeneLayers(f"{kind}.node{k // 2}.from{g[1]}", g[0], g[2], g[3],
               tuple(per_gene.get((kind, k), ())))
    for kind, gs in (("normal", genotype.normal), ("reduce", genotype.reduce))
    for k, g in enumerate(gs)
  ]  # fmt: skip
  return genes, fixed


class GeneOp(nnx.Module):
  """One gene's op on C channels, fixed bits: ``(N, H, W, C)`` → ``(N, ⌈H/s⌉, ⌈W/s⌉, C)``."""

  def __init__(self, gene: Gene, c: int, stride: int, running: bool, *, rngs: nnx.Rngs):
    op, _, w_bits, a_bits = gene
    self.op, self.stride = op, stride
    q = dict(w_bits=(w_bits,), a_bits=(a_bits,), affine=True, running=running, rngs=rngs)
    module = None
    if op in SEP_KERNELS:
      module = DwPwStack(
        1, (SEP_KERNELS[op],), channels=c, stride=stride, dilation=1, repeats=2, **q
      )
    elif op in DIL_KERNELS:
      module = DwPwStack(
        1, (DIL_KERNELS[op],), channels=c, stride=stride, dilation=2, repeats=1, **q
      )
    elif op == "skip_connect" and stride == 2:
      module = FactorizedReduceStack(1, c, c, **q)
    self.module = nnx.data(module)

  def __call__(self, x: jax.Array, calibrate: bool = False) -> jax.Array:
    if self.op == "max_pool_3x3":
      return max_pool_3x3(x, self.stride)
    if self.op == "avg_pool_3x3":
      return avg_pool_3x3(x, self.stride)
    if self.module is None:  # identity skip
      return x
    one = jnp.ones((1, 1) if isinstance(self.module, FactorizedReduceStack) else (1, 1, 1))
    y = self.module(jax.nn.relu(x)[:, :, :, None, :], one, one, calibrate)
    return y.reshape(*y.shape[:3], x.shape[-1])


class FinalCell(nnx.Module):
  """A genotype cell: preprocess, node j = Σ of its two genes' ops, concat."""

  def __init__(self, plan: CellPlan, genotype: Genotype, running: bool, *, rngs: nnx.Rngs):
    self.pre0, self.pre1 = build_preprocess(plan, affine=True, running=running, rngs=rngs)
    genes = genotype.reduce if plan.reduction else genotype.normal
    self.sources = tuple(src for _, src, _, _ in genes)  # static
    self.concat = genotype.reduce_concat if plan.reduction else genotype.normal_concat
    stride = lambda src: 2 if plan.reduction and src < 2 else 1  # noqa: E731
    self.ops = nnx.List([GeneOp(g, plan.channels, stride(g[1]), running, rngs=rngs) for g in genes])
    self.reduction = plan.reduction

  def __call__(self, s0: jax.Array, s1: jax.Array, calibrate: bool = False) -> jax.Array:
    states = list(run_preprocess(self.pre0, self.pre1, s0, s1, calibrate))
    for j in range(len(self.sources) // 2):
      states.append(
        sum(self.ops[k](states[self.sources[k]], calibrate) for k in (2 * j, 2 * j + 1))
      )
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class DartsFinalNet(nnx.Module):
  """``__call__(x)``: ``x`` ``(N, H, W, C)`` float in [0, 1] → logits ``(N, num_classes)``."""

  def __init__(
    self,
    genotype: Genotype,
    input_shape: tuple[int, ...],
    num_classes: int,
    rngs: nnx.Rngs,
    cells: int,
    init_channels: int,
    stem_multiplier: int,
    running: bool,
  ):
    plans = final_plans(genotype, input_shape, cells, init_channels, stem_multiplier)
    self.stem = Stem(input_shape[2], stem_multiplier * init_channels, running=running, rngs=rngs)
    self.cells = nnx.List([FinalCell(p, genotype, running, rngs=rngs) for p in plans])
    c_out = len(genotype.reduce_concat if plans[-1].reduction else genotype.normal_concat)
    self.head = QuantHead(c_out * plans[-1].channels, num_classes, rngs=rngs)
    self.genotype = genotype  # static

  def __call__(self, x: jax.Array, *, calibrate: bool = False) -> jax.Array:
    s0 = s1 = self.stem(x, calibrate)
    for cell in self.cells:
      s0, s1 = s1, cell(s0, s1, calibrate)
    return self.head(s1, calibrate)

  def calibrate(self, x: jax.Array) -> None:
    """LSQ-initialises every activation step from one batch (one jitted forward, batch
    statistics; the running statistics are left as they were)."""
    running = nnx.state(self, nnx.BatchStat)
    nnx.jit(lambda net, x: net(x, calibrate=True))(self, x)
    nnx.update(self, running)
