"""The PC-DARTS search space (Xu et al. 2020) as the ∇QDARTS reference searches it.

A stem (3×3 conv, ``stem_multiplier``·C channels, BN), ``cells`` cells — reduction cells at
``cells//3`` and ``2·cells//3``, where the channels double and the resolution halves — global
average pooling and a linear classifier. A cell has two inputs (the two previous cells' outputs,
preprocessed by 1×1 convs, or a factorized reduce after a reduction), ``nodes`` intermediate
nodes and one edge from every earlier state to every node (2+3+4+5 = 14 edges for 4 nodes);
its output concatenates the nodes. Every edge is a choice point over ``DARTS_OPS``.

PC-DARTS specifics: *partial channels* — only the first C/K channels of a state go through an
edge's mixed op, the rest bypass it (2×2 max-pooled on stride-2 edges), then the channels are
shuffled (K groups); *edge normalization* — node j = Σ_i β_ij·MixedOp_ij(s_i) with β a
softmax over node j's incoming edges, one logit per edge shared by all cells of a type
(``DartsNet.edge_logits``, an ``ArchParam``). The op logits are shared per cell type too
(:meth:`DartsSpace.op_logit_rows`); the bit logits are per cell, edge and op.

Choice point ``cell{i}.edge{e}`` is row i·E + e of the supernet's ``Probs`` (E edges per cell).
Edge e of node j from state i (0, 1: the cell inputs; 2 + k: node k) has
e = Σ_{t<j}(t + 2) + i, the DARTS order.

References:
  Liu et al., `DARTS: Differentiable Architecture Search <https://arxiv.org/abs/1806.09055>`_,
  ICLR 2019. Xu et al., `PC-DARTS: Partial Channel Connections for Memory-Efficient
  Architecture Search <https://arxiv.org/abs/1907.05737>`_, ICLR 2020.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hwcost import LayerSpec
from quant import QScale
from search_spaces.base import ArchParam, Choice, Probs
from search_spaces.darts_ops import (
  ActQuant,
  BatchNorm,
  DwPwStack,
  FactorizedReduceStack,
  QKernels,
  QuantHead,
  ReLUConvBN,
  avg_pool_3x3,
  batch_norm,
  channel_shuffle,
  max_pool_2x2,
  max_pool_3x3,
  out_size,
)

DARTS_OPS = (
  "none",
  "max_pool_3x3",
  "avg_pool_3x3",
  "skip_connect",
  "sep_conv_3x3",
  "sep_conv_5x5",
  "dil_conv_3x3",
  "dil_conv_5x5",
)
FIXED_BITS = 8
SEP_KERNELS = {"sep_conv_3x3": 3, "sep_conv_5x5": 5}
DIL_KERNELS = {"dil_conv_3x3": 3, "dil_conv_5x5": 5}


class DartsSpaceError(ValueError):
  """Bad DARTS space arguments or genotype (search_spaces never import qdarts; the CLI turns
  this into a one-line ConfigError)."""


def edge_offset(node: int) -> int:
  """Index of node ``node``'s first incoming edge: Σ_{t<node} (t + 2)."""
  return sum(t + 2 for t in range(node))


def edges_per_cell(nodes: int) -> int:
  return edge_offset(nodes)


def edge_softmax(logits: jax.Array, nodes: int) -> jax.Array:
  """PC-DARTS edge normalization: softmax of ``(..., E)`` logits over each node's in-edges."""
  parts = [
    jax.nn.softmax(logits[..., edge_offset(j) : edge_offset(j + 1)], axis=-1) for j in range(nodes)
  ]
  return jnp.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class CellPlan:
  """Shapes of one cell: input channels/sizes of both inputs, its C, and its stages."""

  index: int
  reduction: bool
  reduction_prev: bool
  c_prev_prev: int
  c_prev: int
  channels: int
  hw_prev_prev: tuple[int, int]
  hw: tuple[int, int]  # of s1 (= of both preprocessed inputs)
  out_hw: tuple[int, int]


def plan_cells(
  input_hw: tuple[int, int],
  cells: int,
  init_channels: int,
  nodes: int,
  stem_multiplier: int,
  reduction_cells: Sequence[int],
) -> tuple[CellPlan, ...]:
  """DARTS's channel and resolution bookkeeping (``Network.__init__`` in the reference)."""
  c_stem = stem_multiplier * init_channels
  c_pp, c_p, c = c_stem, c_stem, init_channels
  hw_pp = hw_p = tuple(input_hw)
  plans, reduction_prev = [], False
  for i in range(cells):
    reduction = i in reduction_cells
    if reduction:
      c *= 2
    out_hw = tuple(out_size(s, 2) for s in hw_p) if reduction else hw_p
    plans.append(CellPlan(i, reduction, reduction_prev, c_pp, c_p, c, hw_pp, hw_p, out_hw))
    c_pp, c_p, hw_pp, hw_p = c_p, nodes * c, hw_p, out_hw
    reduction_prev = reduction
  return tuple(plans)


class DartsSpace:
  """PC-DARTS cells with mixed-precision quantized ops.

  Args:
    input_shape: ``(H, W, C)`` of one sample; H and W divisible by 4 (two reductions).
    num_classes: classifier outputs.
    cells: number of cells (the reference searches 8).
    init_channels: C of the first cells (doubles at each reduction).
    nodes: intermediate nodes per cell.
    partial_channels: K; 1/K of a state's channels go through the mixed ops.
    ops: candidate op names, a subset of ``DARTS_OPS`` in any order.
    stem_multiplier: stem output channels = ``stem_multiplier``·C.

  Raises:
    DartsSpaceError: an unknown op, or sizes the cells cannot divide; the message names the field.
  """

  name = "darts"

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    cells: int = 8,
    init_channels: int = 16,
    nodes: int = 4,
    partial_channels: int = 4,
    ops: Sequence[str] = DARTS_OPS,
    stem_multiplier: int = 3,
  ):
    self.input_shape, self.num_classes = tuple(input_shape), num_classes
    self.cells, self.init_channels, self.nodes = cells, init_channels, nodes
    self.partial_channels, self.stem_multiplier = partial_channels, stem_multiplier
    self.op_names = tuple(ops)
    _check_space(self)
    self.reduction_cells = tuple(sorted({cells // 3, 2 * cells // 3}))
    self.edges_per_cell = edges_per_cell(nodes)
    self.plans = plan_cells(
      self.input_shape[:2], cells, init_channels, nodes, stem_multiplier, self.reduction_cells
    )
    self.choice_names = tuple(
      f"cell{i}.edge{e}" for i in range(cells) for e in range(self.edges_per_cell)
    )

  def op_mask(self) -> list[list[bool]]:
    """``(L, O)`` all True: every op fits every edge."""
    return [[True] * len(self.op_names) for _ in self.choice_names]

  def op_logit_rows(self) -> tuple[int, ...]:
    """Row of each choice point in the shared ``(2·E, O)`` op-logit table (normal edges
    0..E−1, reduction edges E..2E−1): DARTS shares α per cell type."""
    e = self.edges_per_cell
    return tuple((e if plan.reduction else 0) + edge for plan in self.plans for edge in range(e))

  def build(
    self,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    rngs: nnx.Rngs,
    choices: Sequence[Choice] | None = None,
  ) -> "DartsNet":
    """The search network (``choices`` None), or the same network with its relaxation fixed
    at ``choices`` (one-hot ops and bits per edge; a "none" choice drops the edge).

    The deployable network of a DARTS search is :func:`search_spaces.darts_final.build_final`
    of :func:`search_spaces.darts_genotype.derive_genotype`, not this.
    """
    return DartsNet(self, tuple(w_bits), tuple(a_bits), rngs, choices)

  def candidate_layers(self, net: "DartsNet") -> list[list[list[LayerSpec]]]:
    """``L × O`` lists of each candidate op's quantized convs ([] for ops without convs)."""
    table = []
    for plan in self.plans:
      c = plan.channels // self.partial_channels
      for e in range(self.edges_per_cell):
        stride = 2 if plan.reduction and _edge_source(e, self.nodes) < 2 else 1
        prefix = f"cell{plan.index}.edge{e}"
        table.append(
          [op_layer_specs(f"{prefix}.{op}", op, c, stride, plan.hw) for op in self.op_names]
        )
    return table

  def fixed_layers(self, net: "DartsNet") -> list[LayerSpec]:
    """Stem, every cell's preprocess convs and the classifier: fixed 8-bit layers."""
    h, w, cin = self.input_shape
    c_stem = self.stem_multiplier * self.init_channels
    specs = [LayerSpec("stem", "conv", 3, 1, cin, c_stem, (h, w), (h, w))]
    for plan in self.plans:
      specs += preprocess_specs(f"cell{plan.index}", plan)
    specs.append(LayerSpec("head.fc", "linear", 1, 1, net.head.cin, net.head.cout, (1, 1), (1, 1)))
    return specs


def _check_space(space: DartsSpace) -> None:
  unknown = [op for op in space.op_names if op not in DARTS_OPS]
  if unknown:
    raise DartsSpaceError(f"space.ops: unknown op {unknown[0]!r}; known: {', '.join(DARTS_OPS)}")
  if not [op for op in space.op_names if op != "none"] or len(set(space.op_names)) != len(
    space.op_names
  ):
    raise DartsSpaceError("space.ops: need distinct ops, at least one of them other than 'none'")
  for field in ("cells", "init_channels", "nodes", "partial_channels", "stem_multiplier"):
    value = getattr(space, field)
    if not isinstance(value, int) or value < 1:
      raise DartsSpaceError(f"space.{field}: expected a positive int, got {value!r}")
  if space.init_channels % space.partial_channels:
    raise DartsSpaceError(
      f"space.init_channels={space.init_channels} must be divisible by "
      f"space.partial_channels={space.partial_channels}"
    )
  if (space.init_channels // space.partial_channels) % 2 and "skip_connect" in space.op_names:
    raise DartsSpaceError(
      "space.init_channels / space.partial_channels must be even: the skip_connect of a "
      "reduction edge (a factorized reduce) splits its channels in two"
    )
  h, w = space.input_shape[:2]
  if h % 4 or w % 4:
    raise DartsSpaceError(
      f"input shape {space.input_shape}: height and width must be divisible by 4 (two "
      "reduction cells halve them)"
    )


def _edge_source(edge: int, nodes: int) -> int:
  """The state index (0, 1 inputs; 2 + k node k) that edge ``edge`` leaves."""
  for j in range(nodes):
    if edge < edge_offset(j + 1):
      return edge - edge_offset(j)
  raise ValueError(f"edge {edge} out of range for {nodes} nodes")


def op_layer_specs(
  name: str, op: str, c: int, stride: int, in_hw: tuple[int, int]
) -> list[LayerSpec]:
  """The quantized convs of one op on ``c`` channels (its partial channels in the search)."""
  out_hw = tuple(out_size(s, stride) for s in in_hw)
  if op in SEP_KERNELS:
    k = SEP_KERNELS[op]
    return [
      LayerSpec(f"{name}.dw1", "conv", k, stride, c, c, in_hw, out_hw, groups=c),
      LayerSpec(f"{name}.pw1", "conv", 1, 1, c, c, out_hw, out_hw),
      LayerSpec(f"{name}.dw2", "conv", k, 1, c, c, out_hw, out_hw, groups=c),
      LayerSpec(f"{name}.pw2", "conv", 1, 1, c, c, out_hw, out_hw),
    ]
  if op in DIL_KERNELS:
    k = DIL_KERNELS[op]
    return [
      LayerSpec(f"{name}.dw", "conv", k, stride, c, c, in_hw, out_hw, groups=c, dilation=2),
      LayerSpec(f"{name}.pw", "conv", 1, 1, c, c, out_hw, out_hw),
    ]
  if op == "skip_connect" and stride == 2:
    return factorized_reduce_specs(name, c, c, in_hw)
  return []


def factorized_reduce_specs(name: str, cin: int, cout: int, in_hw) -> list[LayerSpec]:
  out_hw = tuple(out_size(s, 2) for s in in_hw)
  return [LayerSpec(f"{name}.conv{k}", "conv", 1, 2, cin, cout // 2, in_hw, out_hw) for k in (1, 2)]


def preprocess_specs(prefix: str, plan: CellPlan) -> list[LayerSpec]:
  c = plan.channels
  if plan.reduction_prev:
    pre0 = factorized_reduce_specs(f"{prefix}.pre0", plan.c_prev_prev, c, plan.hw_prev_prev)
  else:
    pre0 = [LayerSpec(f"{prefix}.pre0", "conv", 1, 1, plan.c_prev_prev, c, plan.hw, plan.hw)]
  return [*pre0, LayerSpec(f"{prefix}.pre1", "conv", 1, 1, plan.c_prev, c, plan.hw, plan.hw)]


# --- the search network ---------------------------------------------------------------------


class Stem(nnx.Module):
  """Fixed 8-bit 3×3 conv (no bias) + BN with scale and bias (DARTS's stem)."""

  def __init__(self, cin: int, cout: int, *, running: bool = False, rngs: nnx.Rngs):
    self.conv = QKernels((1, 3, 3, cin, cout), 9 * cin, (FIXED_BITS,), rngs=rngs)
    self.act = ActQuant(1, (FIXED_BITS,))
    self.bn = BatchNorm((cout,), affine=True, running=running)

  def __call__(self, x: jax.Array, calibrate: bool = False) -> jax.Array:
    one = jnp.ones((1, 1))
    xq = self.act(x[:, :, :, None, :], one, calibrate)[:, :, :, 0, :]
    y = jax.lax.conv_general_dilated(
      xq, self.conv(one)[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return self.bn(y, self.act.steps[...][0, 0] * self.conv.steps[...][0, 0])  # one bit-width


def build_preprocess(plan: CellPlan, *, affine: bool, running: bool, rngs: nnx.Rngs):
  """(pre0, pre1) of a cell: fixed 8-bit ReLU-conv1×1-BN, or a factorized reduce after a
  reduction cell."""
  fixed = dict(w_bits=(FIXED_BITS,), a_bits=(FIXED_BITS,), affine=affine, running=running)
  c = plan.channels
  if plan.reduction_prev:
    pre0 = FactorizedReduceStack(1, plan.c_prev_prev, c, rngs=rngs, **fixed)
  else:
    pre0 = ReLUConvBN(plan.c_prev_prev, c, rngs=rngs, **fixed)
  return pre0, ReLUConvBN(plan.c_prev, c, rngs=rngs, **fixed)


def run_preprocess(pre0, pre1, s0, s1, calibrate: bool = False):
  one = jnp.ones((1, 1))
  if isinstance(pre0, FactorizedReduceStack):
    s0 = pre0(jax.nn.relu(s0)[:, :, :, None, :], one, one, calibrate)[:, :, :, 0, :]
  else:
    s0 = pre0(s0, one, one, calibrate)
  return s0, pre1(s1, one, one, calibrate)


class EdgeStage(nnx.Module):
  """The mixed ops of S × T edges (S source states, T target nodes), batched by op kind.

  Sep convs of all edges run as one :class:`DwPwStack` (3×3 kernels zero-embedded in 5×5),
  dilated convs as another, the factorized reduces of stride-2 skips as one
  :class:`FactorizedReduceStack`; pools and identity skips run once per source state. Edge
  (s, t) is group s·T + t of every stack.
  """

  def __init__(
    self,
    n_sources: int,
    n_targets: int,
    stride: int,
    op_names: Sequence[str],
    c: int,
    w_bits,
    a_bits,
    *,
    rngs: nnx.Rngs,
  ):
    e = n_sources * n_targets
    self.n_sources, self.n_targets, self.stride, self.c = n_sources, n_targets, stride, c
    self.cols = {op: op_names.index(op) for op in op_names}  # static
    self.sep_ops = tuple(op for op in SEP_KERNELS if op in op_names)
    self.dil_ops = tuple(op for op in DIL_KERNELS if op in op_names)
    common = dict(channels=c, stride=stride, w_bits=w_bits, a_bits=a_bits, affine=False)
    sep_k, dil_k = [SEP_KERNELS[o] for o in self.sep_ops], [DIL_KERNELS[o] for o in self.dil_ops]
    self.sep = DwPwStack(e, sep_k, dilation=1, repeats=2, rngs=rngs, **common) if sep_k else None
    self.dil = DwPwStack(e, dil_k, dilation=2, repeats=1, rngs=rngs, **common) if dil_k else None
    self.reduce = (
      FactorizedReduceStack(e, c, c, w_bits=w_bits, a_bits=a_bits, affine=False, rngs=rngs)
      if stride == 2 and "skip_connect" in op_names
      else None
    )

  def __call__(self, sources: list[jax.Array], probs: Probs, calibrate: bool = False):
    """``sources``: S × ``(N, H, W, c)`` partial channels; ``probs``: the S·T edges' rows.

    Returns ``(N, ⌈H/s⌉, ⌈W/s⌉, S, T, c)``: Σ_o p_{e,o}·o(x_s) of each edge e = (s, t).
    """
    s_, t_, c = self.n_sources, self.n_targets, self.c
    x = jnp.stack(sources, axis=3)  # (N, H, W, S, c)
    relu = jnp.repeat(jax.nn.relu(x), t_, axis=3)  # (N, H, W, E, c)
    out = 0.0
    for ops, stack in ((self.sep_ops, self.sep), (self.dil_ops, self.dil)):
      if stack is not None:
        cols = [self.cols[op] for op in ops]
        y = stack(relu, probs.w[:, cols], probs.a[:, cols], calibrate)  # (N, h, w, E, O, c)
        out = out + (y * probs.op[:, cols, None]).sum(axis=4)
    if self.reduce is not None:
      col = self.cols["skip_connect"]
      y = self.reduce(relu, probs.w[:, col], probs.a[:, col], calibrate)
      out = out + y * probs.op[:, col, None]
    if not isinstance(out, float):
      out = out.reshape(*out.shape[:3], s_, t_, c)
    for op, y in self._parameter_free(x).items():
      p = probs.op[:, self.cols[op]].reshape(s_, t_, 1)
      out = out + y[:, :, :, :, None, :] * p
    return out

  def _parameter_free(self, x: jax.Array) -> dict[str, jax.Array]:
    """Pools (+ affine-free BN, as PC-DARTS) and the identity skip, once per source state."""
    n, h, w, s_, c = x.shape
    flat = x.reshape(n, h, w, s_ * c)
    ys = {}
    if "max_pool_3x3" in self.cols:
      ys["max_pool_3x3"] = batch_norm(max_pool_3x3(flat, self.stride))
    if "avg_pool_3x3" in self.cols:
      ys["avg_pool_3x3"] = batch_norm(avg_pool_3x3(flat, self.stride))
    ys = {op: y.reshape(*y.shape[:3], s_, c) for op, y in ys.items()}
    if "skip_connect" in self.cols and self.stride == 1:
      ys["skip_connect"] = x
    return ys


def node_slots(nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """The edges between intermediate nodes as a padded ``(nodes−1, nodes−1)`` table.

  Row j − 1 holds node j's in-edges from nodes 0..nodes−2 (slot i: from node i, valid for
  i < j). Returns (``real``: the index of each valid slot among the nodes(nodes−1)/2 real
  edges, −1 where padded; ``edge``: its edge index in the cell, −1 where padded).
  """
  size = max(nodes - 1, 0)
  real, edge = -np.ones((size, size), int), -np.ones((size, size), int)
  r = 0
  for j in range(1, nodes):
    for i in range(j):
      real[j - 1, i], edge[j - 1, i] = r, edge_offset(j) + 2 + i
      r += 1
  return real, edge


def pad_rows(a: jax.Array, table: np.ndarray, fill: float) -> jax.Array:
  """``a`` ``(R·m, ...)`` (R rows of m groups) gathered by ``table`` ``(J, S)`` of row indices
  (−1: a padding row of ``fill``) → ``(J, S·m, ...)``."""
  rows = int(table.max()) + 1
  m = a.shape[0] // rows
  a = a.reshape(rows, m, *a.shape[1:])
  a = jnp.concatenate([a, jnp.full((1, *a.shape[1:]), fill, a.dtype)])
  out = a[np.where(table < 0, rows, table)]
  return out.reshape(*table.shape[:1], table.shape[1] * m, *a.shape[2:])


class SearchCell(nnx.Module):
  """A PC-DARTS search cell: preprocess, then the nodes from two batched edge stages.

  Stage 0 runs the 2·nodes edges that leave the cell's inputs (stride 2 in a reduction cell)
  and completes node 0. The edges between nodes run in a ``lax.scan`` over nodes j = 1..n−1,
  each iteration the same computation: node j's in-edges from nodes 0..n−2, padded to n − 1
  slots (the slots i ≥ j have probability and edge weight 0). The traced program holds two
  stages per cell instead of n (compile time halves), for 3 padded edges in 17 (n = 4).
  """

  def __init__(self, plan: CellPlan, space: DartsSpace, w_bits, a_bits, *, rngs: nnx.Rngs):
    self.pre0, self.pre1 = build_preprocess(plan, affine=False, running=False, rngs=rngs)
    n, ops = space.nodes, space.op_names
    c = plan.channels // space.partial_channels
    stride = 2 if plan.reduction else 1
    self.stage0 = EdgeStage(2, n, stride, ops, c, w_bits, a_bits, rngs=rngs)
    real, _ = node_slots(n)
    self.inner = (
      EdgeStage(int(real.max()) + 1, 1, 1, ops, c, w_bits, a_bits, rngs=rngs) if n > 1 else None
    )
    self.reduction, self.nodes, self.k, self.c = plan.reduction, n, space.partial_channels, c
    self.config = (ops, c, w_bits, a_bits)  # static: rebuilds the padded stage's structure

  def __call__(self, s0, s1, probs: Probs, beta: jax.Array, calibrate: bool = False):
    """``probs``: this cell's E rows; ``beta``: ``(E,)`` normalized edge weights.

    Returns the concatenated nodes ``(N, h, w, nodes·C)``.
    """
    s0, s1 = run_preprocess(self.pre0, self.pre1, s0, s1, calibrate)
    n, c = self.nodes, self.c
    edges0 = np.asarray([edge_offset(t) + s for s in range(2) for t in range(n)])
    y = self.stage0([s0[..., :c], s1[..., :c]], _rows(probs, edges0), calibrate)
    b0 = beta[edges0].reshape(2, n)
    mixed = (y * b0[:, :, None]).sum(axis=3)  # (N, h, w, n, c)
    stride = 2 if self.reduction else 1
    rest = [s[..., c:] if stride == 1 else max_pool_2x2(s[..., c:]) for s in (s0, s1)]
    bypass = sum(b0[s, :, None] * r[:, :, :, None, :] for s, r in enumerate(rest))
    node0 = channel_shuffle(jnp.concatenate([mixed[:, :, :, 0], bypass[:, :, :, 0]], -1), self.k)
    if n == 1:
      return node0
    nodes = self._inner_nodes(
      node0, mixed[:, :, :, 1:], bypass[:, :, :, 1:], probs, beta, calibrate
    )
    return jnp.concatenate([node0, *nodes], axis=-1)

  def _inner_nodes(self, node0, mixed0, bypass0, probs, beta, calibrate):
    """Nodes 1..n−1: ``lax.scan`` of the padded inner stage (see the class docstring)."""
    n, c = self.nodes, self.c
    real, edge = node_slots(n)
    edge = np.where(edge < 0, len(beta), edge)
    pad = lambda a: jnp.concatenate([a, jnp.zeros((1, *a.shape[1:]), a.dtype)])  # noqa: E731
    xs_probs = Probs(*(pad(p)[edge] for p in probs))  # (n−1, n−1, O, ...)
    xs_beta = pad(beta)[edge]  # (n−1, n−1)
    template = nnx.graphdef(
      nnx.eval_shape(lambda: EdgeStage(n - 1, 1, 1, *self.config, rngs=nnx.Rngs(0)))
    )
    scales, weights = nnx.state(self.inner, QScale), nnx.state(self.inner, nnx.Not(QScale))
    xs_scales = jax.tree.map(lambda a: pad_rows(a, real, 1.0), scales)
    xs_weights = jax.tree.map(lambda a: pad_rows(a, real, 0.0), weights)
    buffer = jnp.zeros((*node0.shape[:3], n, node0.shape[-1]), node0.dtype)
    buffer = buffer.at[:, :, :, 0].set(node0)

    def body(buffer, xs):
      j, sc, w, p, b, m0, b0 = xs
      stage = nnx.merge(template, sc, w)
      srcs = [buffer[:, :, :, i] for i in range(n - 1)]
      y = stage([s[..., :c] for s in srcs], p, calibrate)[:, :, :, :, 0]  # (N, h, w, S, c)
      mixed = m0 + (y * b[:, None]).sum(axis=3)
      bypass = b0 + sum(b[i] * s[..., c:] for i, s in enumerate(srcs))
      node = channel_shuffle(jnp.concatenate([mixed, bypass], -1), self.k)
      buffer = jax.lax.dynamic_update_index_in_dim(buffer, node, j, axis=3)
      return buffer, (node, nnx.state(stage, QScale) if calibrate else None)

    xs = (
      jnp.arange(1, n), xs_scales, xs_weights, xs_probs, xs_beta,
      jnp.moveaxis(mixed0, 3, 0), jnp.moveaxis(bypass0, 3, 0),
    )  # fmt: skip
    _, (nodes, calibrated) = jax.lax.scan(body, buffer, xs)
    if calibrate:
      nnx.update(self.inner, jax.tree.map(lambda a: _unpad_rows(a, real), calibrated))
    return list(nodes)


def _unpad_rows(a: jax.Array, table: np.ndarray) -> jax.Array:
  """Inverse of :func:`pad_rows` on the valid slots: ``(J, S·m, ...)`` → ``(R·m, ...)``."""
  j_, s_ = table.shape
  m = a.shape[1] // s_
  flat = a.reshape(j_ * s_, m, *a.shape[2:])
  order = np.argsort(np.where(table < 0, np.iinfo(int).max, table).reshape(-1))
  rows = int(table.max()) + 1
  return flat[order[:rows]].reshape(rows * m, *a.shape[2:])


def _rows(probs: Probs, rows: np.ndarray) -> Probs:
  return Probs(probs.op[rows], probs.w[rows], probs.a[rows])


class DartsNet(nnx.Module):
  """The PC-DARTS search network of a :class:`DartsSpace`.

  ``__call__(x, probs)``: ``x`` ``(N, H, W, C)`` float in [0, 1]; ``probs`` a :class:`Probs`
  with ``op`` ``(L, O)`` (already expanded from the shared per-cell-type table), ``w``
  ``(L, O, Bw)``, ``a`` ``(L, O, Ba)``; None for a network built from choices. Returns logits
  ``(N, num_classes)``. BatchNorm uses batch statistics and holds no state.
  """

  def __init__(self, space: DartsSpace, w_bits, a_bits, rngs: nnx.Rngs, choices=None):
    # static (hashable): the one-hot probabilities of a network built from choices
    self.fixed_probs = None if choices is None else _one_hot_probs(space, choices, w_bits, a_bits)
    self.w_bits, self.a_bits = w_bits, a_bits
    self.nodes, self.edges, self.op_names = space.nodes, space.edges_per_cell, space.op_names
    self.num_ops = len(space.op_names)
    c_stem = space.stem_multiplier * space.init_channels
    self.stem = Stem(space.input_shape[2], c_stem, rngs=rngs)
    self.cells = nnx.List([SearchCell(p, space, w_bits, a_bits, rngs=rngs) for p in space.plans])
    self.edge_logits = ArchParam(jnp.zeros((2, self.edges)))  # β: normal, reduction
    self.head = QuantHead(space.nodes * space.plans[-1].channels, space.num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, probs: Probs | None = None, *, calibrate: bool = False):
    if probs is None:
      if self.fixed_probs is None:
        raise ValueError("the search network needs probs")
      probs = Probs(*(jnp.asarray(np.reshape(flat, shape)) for shape, flat in self.fixed_probs))
    beta = edge_softmax(self.edge_logits[...], self.nodes)  # (2, E)
    s0 = s1 = self.stem(x, calibrate)
    for i, cell in enumerate(self.cells):
      rows = slice(i * self.edges, (i + 1) * self.edges)
      cell_probs = Probs(probs.op[rows], probs.w[rows], probs.a[rows])
      s0, s1 = s1, cell(s0, s1, cell_probs, beta[int(cell.reduction)], calibrate)
    return self.head(s1, calibrate)

  def calibrate(self, x: jax.Array) -> None:
    """LSQ-initialises every activation step from one batch, in one jitted forward with
    uniform op and bit probabilities (or the fixed choices)."""
    probs = None
    if self.fixed_probs is None:
      num_l, num_o = len(self.cells) * self.edges, self.num_ops
      probs = Probs(
        jnp.full((num_l, num_o), 1 / num_o),
        jnp.full((num_l, num_o, len(self.w_bits)), 1 / len(self.w_bits)),
        jnp.full((num_l, num_o, len(self.a_bits)), 1 / len(self.a_bits)),
      )
    nnx.jit(lambda net, x, probs: net(x, probs, calibrate=True))(self, x, probs)


def _one_hot_probs(space: DartsSpace, choices: Sequence[Choice], w_bits, a_bits) -> tuple:
  """``(shape, flat values)`` of the one-hot op, w and a probabilities of ``choices``."""
  if len(choices) != len(space.choice_names):
    raise DartsSpaceError(f"expected {len(space.choice_names)} choices, got {len(choices)}")
  num_l, num_o = len(choices), len(space.op_names)
  op = np.zeros((num_l, num_o), np.float32)
  w = np.zeros((num_l, num_o, len(w_bits)), np.float32)
  a = np.zeros((num_l, num_o, len(a_bits)), np.float32)
  for l, ch in enumerate(choices):
    name = space.choice_names[l]
    if ch.op not in space.op_names:
      raise DartsSpaceError(
        f"choice {name}: unknown op {ch.op!r}; known: {', '.join(space.op_names)}"
      )
    if ch.w_bits not in w_bits or ch.a_bits not in a_bits:
      raise DartsSpaceError(
        f"choice {name}: bits ({ch.w_bits}, {ch.a_bits}) not among the candidates "
        f"w {tuple(w_bits)}, a {tuple(a_bits)}"
      )
    o = space.op_names.index(ch.op)
    op[l, o] = 1.0
    w[l, :, w_bits.index(ch.w_bits)] = 1.0
    a[l, :, a_bits.index(ch.a_bits)] = 1.0
  return tuple((p.shape, tuple(p.reshape(-1).tolist())) for p in (op, w, a))


def structural_counts(space: DartsSpace, w_bits: Sequence[int], a_bits: Sequence[int]) -> dict:
  """Sizes of the search network and its logits, from shapes only (``nnx.eval_shape``).

  Returns:
    ``weights`` (``nnx.Param`` elements: kernels, the stem BN's scale and bias, the classifier;
    no LSQ steps, no logits), ``lsq_steps`` (``QScale`` elements), ``arch_logits`` (the shared
    ``(2E, O)`` op table + the ``(2, E)`` edge logits), ``precision_logits`` (``L·O·(Bw+Ba)``, as
    the supernet holds them) and ``precision_logits_used`` (those of ops with quantized convs),
    ``quantized_convs`` (every candidate op's convs + the preprocess convs: the reference's
    ``MixActivConv2d`` count) and ``fixed_layers`` (stem and classifier, 8-bit here, fp32 in
    the reference).
  """
  net = nnx.eval_shape(lambda: space.build(w_bits, a_bits, nnx.Rngs(0)))
  size = lambda state: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state))  # noqa: E731
  weights = nnx.state(net, nnx.All(nnx.Param, nnx.Not(QScale), nnx.Not(ArchParam)))
  candidates = space.candidate_layers(net)
  with_convs = sum(bool(specs) for row in candidates for specs in row)
  bits = len(w_bits) + len(a_bits)
  fixed = space.fixed_layers(net)
  n_edges, n_ops = space.edges_per_cell, len(space.op_names)
  return {
    "weights": size(weights),
    "lsq_steps": size(nnx.state(net, QScale)),
    "arch_logits": 2 * n_edges * n_ops + 2 * n_edges,
    "precision_logits": len(space.choice_names) * n_ops * bits,
    "precision_logits_used": with_convs * bits,
    "quantized_convs": sum(len(specs) for row in candidates for specs in row) + len(fixed) - 2,
    "fixed_layers": 2,
  }
