"""ONNX QDQ export of a :class:`~qdarts.export.graph_ir.QuantizedGraph` (a DARTS final network).

The conventions of :mod:`qdarts.export.onnx`: opset 21, IR version 10, NCHW float32 ``"input"``
``[N, C, H, W]`` and ``"logits"`` ``[N, num_classes]``; weights as INT8 codes (INT4 where
``w_bits ≤ 4``, packed low nibble first) with a per-channel DequantizeLinear (axis 0), biases
as int32 codes with scale ``s_in·s_w[c]``. Every tensor of the graph exists in the model as its
codes ``<name>.q`` — uint8, zero point 0 on an unsigned grid and 128 on a signed one (code
``c`` stored as ``c + 128``: every tensor is uint8, the type ORT's integer kernels take on both
sides), narrowed by a Clip below 8 bits (QCDQ) — and each op reads its inputs through a
DequantizeLinear and quantizes its output with a QuantizeLinear, the QDQ layout that ONNX
Runtime fuses into integer kernels where it has them::

  GConv:          [Slice] → DQ → Conv(DQ(W), DQ(b); dilations, group) → Q [→ Clip]
  GRequant:       DQ → Q [→ Clip]         (a ReLU before an unsigned grid: its clamp at 0)
  GAdd:           DQ, DQ → Add → Q
  GConcat:        Concat of the codes     (every input on the output grid: exact)
  GMaxPool:       MaxPool of the codes    (uint8 MaxPool, padding ignored: exact)
  GAvgPool:       Cast(codes) [− 128] → AveragePool(count_include_pad=0) → round half away from
                  zero (Sign·Floor(|v| + ½)) [+ 128] → Cast: the integer model's rounding, exactly
  GGlobalAvgPool: DQ → GlobalAveragePool → Q
  GLinear:        DQ → Flatten → Gemm(DQ(W), DQ(b); transB=1) → logits

.. note:: QuantizeLinear rounds half to even where the integer model's fixed point rounds ties
  up, and ORT requantizes in float32: a value within ~1e-7 (relative) of a rounding tie can land
  one code apart, and that code then propagates (a low-bit layer with M > 1 turns one input code
  into several output codes). Measured: on the tests' 3-cell graph (64 inputs) no code differs
  (logits within 5.1e-5 accumulator LSB); on a Fashion-MNIST final network (3 cells, 8
  channels, 2/4/8-bit) 3,752 of 98 million tensor codes differ at ``"extended"`` (26,137 with
  no fusion), the first by one code, the logits by up to 92 accumulator LSB, and predictions
  agree on 256 of 256 verification inputs (ONNX Runtime vs the fake-quant network: 9,999 of
  10,000 test images).
"""

import json
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto

from qdarts.export.graph_integer import IntegerGraph, IntNode, to_integer_graph
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
from qdarts.export.onnx import OUTPUT_NAME, _Graph, _weight_dq, checked_model
from qdarts.run_dir import atomic_write_bytes


def _codes(name: str) -> str:
  return f"{name}.q"


SIGNED_ZERO_POINT = 128


def _zero_point(grid: Grid) -> int:
  return SIGNED_ZERO_POINT if grid.signed else 0


def _grid_arrays(g: _Graph, prefix: str, grid: Grid) -> tuple[str, str]:
  """The scale and the uint8 zero point (0, or 128 on a signed grid) of a grid."""
  scale = g.array(f"{prefix}.scale", np.float32(grid.step))
  zero = g.array(f"{prefix}.zero_point", np.uint8(_zero_point(grid)))
  return scale, zero


def _quantize(g: _Graph, x: str, name: str, grid: Grid) -> str:
  """x (float) → QuantizeLinear [→ Clip to the grid's range]; returns the codes ``name.q``."""
  scale, zero = _grid_arrays(g, name, grid)
  if grid.bits == 8:
    return g.node("QuantizeLinear", [x, scale, zero], _codes(name))
  q = g.node("QuantizeLinear", [x, scale, zero], f"{name}.q8")
  qmin, qmax = (v + _zero_point(grid) for v in grid.qrange())
  lo, hi = g.array(f"{name}.qmin", np.uint8(qmin)), g.array(f"{name}.qmax", np.uint8(qmax))
  return g.node("Clip", [q, lo, hi], _codes(name))


def _dequantize(g: _Graph, tensor: str, grid: Grid, consumer: str) -> str:
  scale, zero = f"{tensor}.scale", f"{tensor}.zero_point"
  return g.node("DequantizeLinear", [_codes(tensor), scale, zero], f"{consumer}.{tensor}.dq")


def _bias(g: _Graph, n: IntNode) -> str:
  scale = np.float32(n.in_grid.step) * np.asarray(n.node.w_step, np.float32)
  b = g.array(f"{n.node.name}.b_codes", n.bias)
  s = g.array(f"{n.node.name}.b_scale", scale)
  zero = g.array(f"{n.node.name}.b_zero_point", np.zeros(n.bias.shape, np.int32))
  return g.node("DequantizeLinear", [b, s, zero], f"{n.node.name}.b", axis=0)


def _conv(g: _Graph, n: IntNode) -> str:
  node: GConv = n.node
  src = node.inputs[0]
  if node.offset:
    starts = g.array(f"{node.name}.crop_starts", np.array([node.offset] * 2, np.int64))
    ends = g.array(f"{node.name}.crop_ends", np.array([2**62] * 2, np.int64))
    axes = g.array(f"{node.name}.crop_axes", np.array([2, 3], np.int64))
    crop = g.node("Slice", [_codes(src), starts, ends, axes], f"{node.name}.crop")
    scale, zero = f"{src}.scale", f"{src}.zero_point"
    x = g.node("DequantizeLinear", [crop, scale, zero], f"{node.name}.in_dq")
  else:
    x = _dequantize(g, src, n.in_grid, node.name)
  w = _weight_dq(g, node.name, n.weight.transpose(0, 3, 1, 2), node.w_step, node.w_bits)
  kh, kw = n.weight.shape[1:3]
  (top, bottom), (left, right) = node.padding
  y = g.node(
    "Conv",
    [x, w, _bias(g, n)],
    f"{node.name}.conv",
    kernel_shape=[kh, kw],
    strides=[node.stride] * 2,
    pads=[top, left, bottom, right],
    dilations=[node.dilation] * 2,
    group=node.groups,
  )
  return _quantize(g, y, node.name, node.out)


def _avg_pool(g: _Graph, n: IntNode) -> str:
  """The integer model's average exactly: float32 sums of small integer codes, ties exact."""
  node: GAvgPool = n.node
  name, zero = node.name, float(_zero_point(n.out_grid))
  x = g.node("Cast", [_codes(node.inputs[0])], f"{name}.codes_f", to=TensorProto.FLOAT)
  if zero:
    x = g.node("Sub", [x, g.array(f"{name}.offset", np.float32(zero))], f"{name}.centred")
  mean = g.node("AveragePool", [x], f"{name}.mean", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                strides=[node.stride] * 2, count_include_pad=0)  # fmt: skip
  half = g.array(f"{name}.half", np.float32(0.5))
  magnitude = g.node("Floor", [g.node("Add", [g.node("Abs", [mean], f"{name}.abs"), half],
                                      f"{name}.abs_half")], f"{name}.floor")  # fmt: skip
  rounded = g.node("Mul", [g.node("Sign", [mean], f"{name}.sign"), magnitude], f"{name}.round")
  if zero:
    rounded = g.node("Add", [rounded, f"{name}.offset"], f"{name}.stored")
  _grid_arrays(g, name, n.out_grid)  # the input's grid, for consumers
  return g.node("Cast", [rounded], _codes(name), to=TensorProto.UINT8)


def _same_grid_aliases(g: _Graph, name: str, grid: Grid) -> None:
  """Scale and zero point under this node's name (its output keeps its input's grid)."""
  _grid_arrays(g, name, grid)


def _node(g: _Graph, n: IntNode) -> str:
  node = n.node
  if isinstance(node, GConv):
    return _conv(g, n)
  if isinstance(node, GRequant):
    return _quantize(g, _dequantize(g, node.inputs[0], n.in_grid, node.name), node.name, node.out)
  if isinstance(node, GAdd):
    a, b = (_dequantize(g, i, None, node.name) for i in node.inputs)
    return _quantize(g, g.node("Add", [a, b], f"{node.name}.add"), node.name, node.out)
  if isinstance(node, GConcat):
    _same_grid_aliases(g, node.name, node.out)
    return g.node("Concat", [_codes(i) for i in node.inputs], _codes(node.name), axis=1)
  if isinstance(node, GMaxPool):
    _same_grid_aliases(g, node.name, n.out_grid)
    return g.node("MaxPool", [_codes(node.inputs[0])], _codes(node.name), kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1], strides=[node.stride] * 2)  # fmt: skip
  if isinstance(node, GAvgPool):
    return _avg_pool(g, n)
  if isinstance(node, GGlobalAvgPool):
    x = _dequantize(g, node.inputs[0], n.in_grid, node.name)
    return _quantize(g, g.node("GlobalAveragePool", [x], f"{node.name}.gap"), node.name, node.out)
  return _linear(g, n)


def _linear(g: _Graph, n: IntNode) -> str:
  node: GLinear = n.node
  x = _dequantize(g, node.inputs[0], n.in_grid, node.name)
  x = g.node("Flatten", [x], f"{node.name}.flatten", axis=1)
  w = _weight_dq(g, node.name, n.weight, node.w_step, node.w_bits)
  return g.node("Gemm", [x, w, _bias(g, n)], OUTPUT_NAME, transB=1)


def build_graph_model(graph: QuantizedGraph | IntegerGraph) -> onnx.ModelProto:
  """The checked QDQ ``ModelProto`` of a graph (see the module docstring).

  ``metadata_props`` hold the graph's metadata, ``"qdarts.layers"`` (JSON: per node with
  weights its name, ``w_bits`` and its input's bits ``a_bits``) and ``"qdarts.graph"``
  (``"dag"``).

  Raises:
    ValueError: the graph is invalid or has no integer form (the message names the node).
  """
  igraph = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph)
  g = _Graph()
  _quantize(g, INPUT, INPUT, igraph.input_grid)
  for n in igraph.nodes:
    _node(g, n)
  layers = [
    {"name": n.node.name, "w_bits": int(n.node.w_bits), "a_bits": int(n.in_grid.bits)}
    for n in igraph.nodes
    if isinstance(n.node, GConv | GLinear)
  ]
  props = {**igraph.metadata, "qdarts.layers": json.dumps(layers), "qdarts.graph": "dag"}
  return checked_model(g, "qdarts_dag", igraph.input_shape, igraph.num_classes, props)


def export_graph_onnx(graph: QuantizedGraph, path: str | os.PathLike) -> pathlib.Path:
  """Writes the QDQ model of ``graph`` to ``path`` atomically (built and checked in memory
  first: a failed export writes nothing); returns the path."""
  path = pathlib.Path(path)
  data = build_graph_model(graph).SerializeToString()
  path.parent.mkdir(parents=True, exist_ok=True)
  return atomic_write_bytes(path, data)
