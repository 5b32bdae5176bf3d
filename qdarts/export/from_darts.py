"""Reads a trained DARTS final network into a :class:`~qdarts.export.graph_ir.QuantizedGraph`.

The network (:class:`search_spaces.darts_final.DartsFinalNet`) is read as it computes in
evaluation mode: each BatchNorm normalizes with its running statistics, an affine map per
channel, ``y = f·(z − μ) + β`` with ``f = γ / √(σ² + ε)``, which folds into the conv ``z``
before it:

.. math::
  Ŵ' = Ŵ·f, \\quad s_w' = s_w·|f|, \\quad b' = β − μ·f,

so the folded codes are ``sign(f)·codes`` (the narrow weight range is symmetric) and the folded
kernel is stored as exactly ``codes'·s_w'``. Node and tensor names follow
:func:`search_spaces.darts_final.final_layer_specs` (``cell{i}.node{j}.from{src}.{op}``).
"""

from collections.abc import Mapping

import numpy as np
from flax import nnx

from qdarts.export.graph_ir import (
  INPUT,
  GAdd,
  GAvgPool,
  GConcat,
  GConv,
  GGlobalAvgPool,
  GLinear,
  GMaxPool,
  GRequant,
  Grid,
  QuantizedGraph,
)
from quant.integer import weight_codes
from search_spaces.darts import DIL_KERNELS, SEP_KERNELS
from search_spaces.darts_final import DartsFinalNet, FinalCell, GeneOp, StateQuant
from search_spaces.darts_ops import BN_EPS, FactorizedReduceStack, ReLUConvBN
from search_spaces.ops import fixed_bias


def _arr(v: nnx.Variable) -> np.ndarray:
  return np.asarray(v[...], np.float32)


def _state_grid(q: StateQuant) -> Grid:
  return Grid(float(_arr(q.step)), q.bits, signed=True)


def _act_grid(steps: nnx.Variable, bits: int, group: int = 0) -> Grid:
  return Grid(float(_arr(steps)[group, 0]), int(bits), signed=False)


def fold_batch_norm(
  kernel: np.ndarray, w_step: np.ndarray, w_bits: int, bn, channels: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The conv ``kernel`` (HWIO, output channels last, quantized with ``w_step``) followed by
  the eval-mode BatchNorm ``bn`` (channels ``channels`` of it), as one conv.

  Returns:
    float32 ``(kernel', w_step', bias')``: ``kernel' = sign(f)·codes·s_w'`` with
    ``s_w' = s_w·|f|``, ``bias' = β − μ·f`` (see the module docstring).
  """
  scale = _arr(bn.scale).reshape(-1)[channels].astype(np.float64)
  shift = _arr(bn.bias).reshape(-1)[channels].astype(np.float64)
  mean = _arr(bn.mean).reshape(-1)[channels].astype(np.float64)
  var = _arr(bn.var).reshape(-1)[channels].astype(np.float64)
  f = scale / np.sqrt(var + BN_EPS)
  step = (w_step.astype(np.float64) * np.abs(f)).astype(np.float32)
  codes = weight_codes(kernel, w_step, w_bits).astype(np.float32) * np.sign(f).astype(np.float32)
  return codes * step, step, (shift - mean * f).astype(np.float32)


def _plain_conv(name, src, kernel, w_step, w_bits, out: Grid, **geometry) -> GConv:
  """A conv without BN after it (depthwise): its fake-quantized kernel, bias 0."""
  codes = weight_codes(kernel, w_step, w_bits).astype(np.float32)
  zero = np.zeros(kernel.shape[-1], np.float32)
  return GConv(name, (src,), codes * w_step, zero, w_step, w_bits, out, **geometry)


def _bn_conv(name, src, kernel, w_step, w_bits, bn, out: Grid, channels=slice(None), **geometry):
  weight, step, bias = fold_batch_norm(kernel, w_step, w_bits, bn, channels)
  return GConv(name, (src,), weight, bias, step, w_bits, out, **geometry)


class _Builder:
  """Appends nodes; ``self.grids`` maps tensor names to grids."""

  def __init__(self, input_grid: Grid):
    self.nodes: list = []
    self.grids = {INPUT: input_grid}

  def add(self, node) -> str:
    self.nodes.append(node)
    self.grids[node.name] = getattr(node, "out", None) or self.grids[node.inputs[0]]
    return node.name

  def requant(self, name: str, src: str, grid: Grid) -> str:
    return self.add(GRequant(name, (src,), grid))


def _stem(b: _Builder, net: DartsFinalNet) -> str:
  stem = net.stem
  w_step = _arr(stem.conv.steps)[0, 0]
  return b.add(_bn_conv("stem", INPUT, _arr(stem.conv.kernel)[0], w_step, stem.conv.w_bits[0],
                        stem.bn, _state_grid(net.stem_out), padding=((1, 1), (1, 1))))  # fmt: skip


def _factorized_reduce(b: _Builder, name: str, src: str, m: FactorizedReduceStack, out: Grid):
  """ReLU → two 1×1 stride-2 convs on ``x`` and ``x[1:, 1:]`` (own input quantizers) → concat;
  the BN's halves fold into the two convs, which share the output grid."""
  half, bits = m.cout // 2, m.conv.w_bits[0]
  parts = []
  for k in (0, 1):
    x = b.requant(f"{name}.in{k}", src, _act_grid(m.act.steps, m.act.a_bits[0], k))
    kernel = _arr(m.conv.kernel)[k][None, None]
    parts.append(b.add(_bn_conv(f"{name}.conv{k + 1}", x, kernel, _arr(m.conv.steps)[k, 0], bits,
                                m.bn, out, slice(k * half, (k + 1) * half), stride=2,
                                offset=k)))  # fmt: skip
  return b.add(GConcat(name, tuple(parts), out))


def _relu_conv_bn(b: _Builder, name: str, src: str, m: ReLUConvBN, out: Grid) -> str:
  x = b.requant(f"{name}.in", src, _act_grid(m.act.steps, m.act.a_bits[0]))
  return b.add(_bn_conv(name, x, _arr(m.conv.kernel)[0][None, None], _arr(m.conv.steps)[0, 0],
                        m.conv.w_bits[0], m.bn, out))  # fmt: skip


def _dw_pw(b: _Builder, name: str, src: str, op: GeneOp) -> str:
  """sep_conv (two repeats) or dil_conv (one): [ReLU → dw → pw → BN] × r, per the stack."""
  m = op.module
  k, bits, a_bits = m.kernels[0], m.dw[0][0].w_bits[0], m.dw_act[0].a_bits[0]
  x = b.requant(f"{name}.in", src, _act_grid(m.dw_act[0].steps, a_bits))
  pad = m.dilation * (k - 1) // 2
  for r in range(m.repeats):
    last = r == m.repeats - 1
    dw = m.dw[r][0]
    x = b.add(_plain_conv(f"{name}.dw{r + 1}", x, _arr(dw.kernel)[0][:, :, None, :],
                          _arr(dw.steps)[0, 0], bits, _act_grid(m.pw_act[r].steps, a_bits),
                          stride=m.stride if r == 0 else 1, padding=((pad, pad), (pad, pad)),
                          dilation=m.dilation, groups=m.channels))  # fmt: skip
    out = _state_grid(op.out) if last else _act_grid(m.dw_act[r + 1].steps, a_bits)
    x = b.add(_bn_conv(f"{name}.pw{r + 1}", x, _arr(m.pw[r].kernel)[0][None, None],
                       _arr(m.pw[r].steps)[0, 0], bits, m.bn[r], out))  # fmt: skip
  return x


def _gene_op(b: _Builder, name: str, src: str, op: GeneOp) -> str:
  if op.op == "max_pool_3x3":
    return b.add(GMaxPool(name, (src,), op.stride))
  if op.op == "avg_pool_3x3":
    return b.add(GAvgPool(name, (src,), op.stride))
  if op.module is None:
    return src  # identity: the consumer reads the state itself
  if op.op in SEP_KERNELS or op.op in DIL_KERNELS:
    return _dw_pw(b, name, src, op)
  return _factorized_reduce(b, name, src, op.module, _state_grid(op.out))


def _cell(b: _Builder, i: int, cell: FinalCell, s0: str, s1: str) -> str:
  p = f"cell{i}"
  pre = []
  for k, (m, q, src) in enumerate(((cell.pre0, cell.pre0_out, s0), (cell.pre1, cell.pre1_out, s1))):
    build = _factorized_reduce if isinstance(m, FactorizedReduceStack) else _relu_conv_bn
    pre.append(build(b, f"{p}.pre{k}", src, m, _state_grid(q)))
  states, node_grid = pre, _state_grid(cell.node_out)
  for j in range(len(cell.sources) // 2):
    names = [f"{p}.node{j}.from{cell.sources[k]}.{cell.ops[k].op}" for k in (2 * j, 2 * j + 1)]
    if names[0] == names[1]:  # the same op twice on one state (a hand-written genotype)
      names[1] += ".b"
    outs = [
      _gene_op(b, name, states[cell.sources[k]], cell.ops[k])
      for name, k in zip(names, (2 * j, 2 * j + 1), strict=True)
    ]
    states.append(b.add(GAdd(f"{p}.node{j}", tuple(outs), node_grid)))
  return b.add(GConcat(f"{p}.out", tuple(states[i] for i in cell.concat), node_grid))


def _head(b: _Builder, net: DartsFinalNet, src: str) -> str:
  head = net.head
  x = b.requant("head.in", src, _act_grid(head.pool_act.steps, head.pool_act.a_bits[0]))
  x = b.add(GGlobalAvgPool("head.gap", (x,), _act_grid(head.fc_act.steps, head.fc_act.a_bits[0])))
  w_step = _arr(head.fc.steps)[0, 0]
  bias = fixed_bias(head.bias[...], head.fc.steps[...][0], head.fc_act.steps[...][0], 1, 1)
  codes = weight_codes(_arr(head.fc.kernel)[0], w_step, head.fc.w_bits[0]).astype(np.float32)
  return b.add(GLinear("head.fc", (x,), codes * w_step, np.asarray(bias, np.float32), w_step,
                       head.fc.w_bits[0]))  # fmt: skip


def graph_from_darts(
  net: DartsFinalNet,
  input_shape: tuple[int, int, int],
  num_classes: int,
  metadata: Mapping[str, str],
) -> QuantizedGraph:
  """The :class:`QuantizedGraph` of a trained final network, as it computes in ``eval()``.

  Args:
    net: the network (running BatchNorm statistics, calibrated or trained steps).
    input_shape: ``(H, W, C)`` of one sample.
    num_classes: the classifier's outputs.
    metadata: string pairs recorded into exported models (dataset, seed, …).
  """
  b = _Builder(_act_grid(net.stem.act.steps, net.stem.act.a_bits[0]))
  s0 = s1 = _stem(b, net)
  for i, cell in enumerate(net.cells):
    s0, s1 = s1, _cell(b, i, cell, s0, s1)
  _head(b, net, s1)
  return QuantizedGraph(
    tuple(b.nodes), tuple(int(d) for d in input_shape), b.grids[INPUT], int(num_classes),
    dict(metadata),
  )  # fmt: skip
