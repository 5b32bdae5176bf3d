"""The network a PC-DARTS genotype describes, for final quantization-aware training.

DARTS's evaluation network (``NetworkCIFAR`` in the reference): a stem, ``cells`` cells of the
genotype's two cell types (reduction cells at ``cells//3`` and ``2·cells//3``), global average
pooling, a classifier. Each node sums its two genes' ops on the full channels (no partial
channels in the final network). Every conv of a gene's op is fake-quantized (LSQ) at the gene's
bits; the stem, the preprocess convs and the classifier at 8 bits. No auxiliary head and no
drop-path (the reference trains with neither by default).

Quantized as an integer runtime holds it: every tensor that passes between ops is on a grid.

- Conv inputs (after a ReLU) are unsigned, ``s·clip(round(x/s), 0, 2^b − 1)``, at the gene's
  ``a_bits`` (8 for the stem, the preprocess convs and the head). The ReLU that opens every
  DARTS op (ReLU → conv → BN) sits *before* this quantizer, so an integer runtime reads it as
  a requantization of the signed state codes with the lower clamp at 0.
- Cell states, which are signed (BN outputs and their sums), go through a *signed* 8-bit LSQ
  quantizer, ``s·clip(round(x/s), −128, 127)`` (:class:`StateQuant`): the stem output, each
  preprocess output, each conv op's output (after its last BN) and each node's sum of two op
  outputs. The nodes of one cell share one step, so the cell's concat is a plain copy of codes.
- Ops without convs keep their input's grid: ``skip_connect`` (stride 1) is the identity,
  ``max_pool_3x3`` picks codes, and ``avg_pool_3x3`` rounds its average back to the input's
  grid, half away from zero (TFLite's integer AVERAGE_POOL_2D; :func:`avg_pool_on_grid`).

In evaluation mode a BatchNorm is an affine map per channel that folds into the conv before it
(:mod:`qdarts.export.from_darts`), so the exported integer graph computes this network.

State: besides ``nnx.Param`` (weights, BN scale and bias) and ``quant.QScale`` (LSQ steps),
with ``running_stats=True`` every BatchNorm holds its running mean and variance as
``nnx.BatchStat``: ``net.train()`` (the default) normalizes with the batch statistics and
updates the running ones (so a jitted step must return the updated ``BatchStat`` state),
``net.eval()`` normalizes with the running ones. With ``running_stats=False`` the network holds
only Params and QScales and always normalizes with the batch statistics.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from hwcost import LayerSpec
from quant import QScale, lsq_quantize
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

STATE_BITS = 8


def state_qrange(bits: int = STATE_BITS) -> tuple[int, int]:
  """Signed full range ``(−2^(b−1), 2^(b−1) − 1)`` of a cell-state quantizer."""
  return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


class StateQuant(nnx.Module):
  """Signed LSQ quantizer of a cell state: x̂ = s·clip(round(x/s), −128, 127), one step s.

  The gradient scale is LSQ's g = 1/√(N·Q_P), N the elements of one sample; the initial step
  (``calibrate``) is 2·mean|x|/√Q_P. ``x``: ``(N, H, W, C)``, any sign.
  """

  def __init__(self, bits: int = STATE_BITS):
    self.bits = bits
    self.step = QScale(jnp.ones(()))  # shape=(), set by calibration

  def __call__(self, x: jax.Array, calibrate: bool = False) -> jax.Array:
    qn, qp = state_qrange(self.bits)
    if calibrate:
      mean_abs = jnp.abs(jax.lax.stop_gradient(x)).mean()
      self.step[...] = jnp.maximum(2.0 * mean_abs / math.sqrt(qp), 1e-4)
    per_sample = max(1, x.size // x.shape[0])
    return lsq_quantize(x, self.step[...], qn, qp, 1.0 / math.sqrt(per_sample * qp))


def avg_pool_on_grid(x: jax.Array, step: jax.Array, stride: int) -> jax.Array:
  """:func:`avg_pool_3x3` of values on the grid s·ℤ, rounded back to that grid.

  With c = round(x/s) the codes, y = s·rha(Σ_window c / n), n the window's real pixels
  (``count_include_pad=False``) and rha rounding half away from zero: TFLite's integer
  AVERAGE_POOL_2D, ``(Σc ± n/2) / n`` truncated. The codes are summed exactly (small integers
  in float32). Gradient: that of the float average (straight through the rounding).

  Args:
    x: ``(N, H, W, C)`` on the grid of ``step``.
    step: the scalar step s of ``x``'s quantizer.
    stride: 1 or 2.
  """
  y = avg_pool_3x3(x, stride)
  s = jax.lax.stop_gradient(step)
  codes = jnp.round(jax.lax.stop_gradient(x) / s)
  window, strides, pad = (1, 3, 3, 1), (1, stride, stride, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(codes, 0.0, jax.lax.add, window, strides, pad)
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
  mean = total / count
  exact = s * jnp.sign(mean) * jnp.floor(jnp.abs(mean) + 0.5)
  return y + jax.lax.stop_gradient(exact - y)


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
  """One gene's op on C channels, fixed bits: ``(N, H, W, C)`` → ``(N, ⌈H/s⌉, ⌈W/s⌉, C)``.

  An op with convs ends with its own signed 8-bit output quantizer (``out``); the others keep
  their input's grid (see the module docstring).
  """

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
    self.out = StateQuant() if module is not None else None

  def __call__(self, x: jax.Array, step: jax.Array, calibrate: bool = False) -> jax.Array:
    """``x``: a cell state on the grid of its scalar ``step``."""
    if self.op == "max_pool_3x3":
      return max_pool_3x3(x, self.stride)
    if self.op == "avg_pool_3x3":
      return avg_pool_on_grid(x, step, self.stride)
    if self.module is None:  # identity skip
      return x
    one = jnp.ones((1, 1) if isinstance(self.module, FactorizedReduceStack) else (1, 1, 1))
    y = self.module(jax.nn.relu(x)[:, :, :, None, :], one, one, calibrate)
    return self.out(y.reshape(*y.shape[:3], x.shape[-1]), calibrate)


class FinalCell(nnx.Module):
  """A genotype cell: preprocess, node j = Q(Σ of its two genes' ops), concat.

  Quantizers (signed 8-bit): ``pre0_out``, ``pre1_out`` on the preprocessed inputs, and
  ``node_out``, one step shared by every node (calibrated on node 0).
  """

  def __init__(self, plan: CellPlan, genotype: Genotype, running: bool, *, rngs: nnx.Rngs):
    self.pre0, self.pre1 = build_preprocess(plan, affine=True, running=running, rngs=rngs)
    self.pre0_out, self.pre1_out, self.node_out = StateQuant(), StateQuant(), StateQuant()
    genes = genotype.reduce if plan.reduction else genotype.normal
    self.sources = tuple(src for _, src, _, _ in genes)  # static
    self.concat = genotype.reduce_concat if plan.reduction else genotype.normal_concat
    stride = lambda src: 2 if plan.reduction and src < 2 else 1  # noqa: E731
    self.ops = nnx.List([GeneOp(g, plan.channels, stride(g[1]), running, rngs=rngs) for g in genes])
    self.reduction = plan.reduction

  def __call__(self, s0: jax.Array, s1: jax.Array, calibrate: bool = False) -> jax.Array:
    p0, p1 = run_preprocess(self.pre0, self.pre1, s0, s1, calibrate)
    states = [self.pre0_out(p0, calibrate), self.pre1_out(p1, calibrate)]
    steps = [self.pre0_out.step[...], self.pre1_out.step[...]]
    for j in range(len(self.sources) // 2):
      total = sum(
        self.ops[k](states[self.sources[k]], steps[self.sources[k]], calibrate)
        for k in (2 * j, 2 * j + 1)
      )
      states.append(self.node_out(total, calibrate and j == 0))
      steps.append(self.node_out.step[...])
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
    self.stem_out = StateQuant()
    self.cells = nnx.List([FinalCell(p, genotype, running, rngs=rngs) for p in plans])
    c_out = len(genotype.reduce_concat if plans[-1].reduction else genotype.normal_concat)
    self.head = QuantHead(c_out * plans[-1].channels, num_classes, rngs=rngs)
    self.genotype = genotype  # static

  def __call__(self, x: jax.Array, *, calibrate: bool = False) -> jax.Array:
    s0 = s1 = self.stem_out(self.stem(x, calibrate), calibrate)
    for cell in self.cells:
      s0, s1 = s1, cell(s0, s1, calibrate)
    return self.head(s1, calibrate)

  def calibrate(self, x: jax.Array) -> None:
    """LSQ-initialises every activation step from one batch (one jitted forward, batch
    statistics; the running statistics are left as they were)."""
    running = nnx.state(self, nnx.BatchStat)
    nnx.jit(lambda net, x: net(x, calibrate=True))(self, x)
    nnx.update(self, running)
