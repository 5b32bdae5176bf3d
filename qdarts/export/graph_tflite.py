"""TFLite (LiteRT) export of a :class:`~qdarts.export.graph_ir.QuantizedGraph` (DARTS networks).

The conventions of :mod:`qdarts.export.tflite`: float32 NHWC ``"input"`` → QUANTIZE, every tensor
int8 up to the classifier, float32 ``"logits"`` (dynamic batch), per-channel INT8 (or INT4)
filters, int32 biases with scale ``s_in·s_w[c]``. A tensor on an unsigned grid holds ``u − 128``
(zero point −128; a MINIMUM clamps it below 8 bits), one on a signed grid its code (zero point 0).
Per node::

  GConv:          [STRIDED_SLICE (crop)] → [PAD] → CONV_2D | DEPTHWISE_CONV_2D (dilation)
                  → the output grid [→ MINIMUM]
  GRequant:       DEPTHWISE_CONV_2D 1×1 (INT8 weights 2^6 where M < 1/2, else 1; u ≥ 0 is
                  int8 saturation at −128), not QUANTIZE int8 → int8 (XNNPACK's rounds M
                  to 8 fractional bits)
  GAdd:           ADD (int8, each input its own scale)
  GConcat:        CONCATENATION (axis 3; all inputs on the output's quantization)
  GMaxPool:       MAX_POOL_2D 3×3 stride 1 SAME [→ STRIDED_SLICE stride 2]
  GAvgPool:       AVERAGE_POOL_2D 3×3 stride 1 SAME [→ STRIDED_SLICE stride 2]
  GGlobalAvgPool: DEPTHWISE_CONV_2D over the whole H×W (INT8 weights 2^6) → RESHAPE (N, C)
  GLinear:        BATCH_MATMUL int8 × int8 → int32 → CAST float32 → ADD (bias and zero point)
                  → MUL ``s_in·s_w[c]``: the integer model's logits ``acc·s_in·s_w``

A 3×3 pool with padding 1 and stride 2 takes the windows centred on even pixels; TFLite's SAME
padding at stride 2 pads (0, 1) and would centre them on odd ones. The stride-1 SAME pool (pads
(1, 1), averages over the real pixels only, rounding half away from zero) subsampled by
STRIDED_SLICE is the DARTS pool exactly.

LiteRT's builtin kernels requantize in fixed point, gemmlowp's double rounding with ruy's ties
toward +∞ in the convolutions. The model stores the ``"litert"`` form of the integer graph
(:func:`~qdarts.export.graph_integer.as_litert`): each conv's weight codes × 2^k per channel
(k as large as the INT4 / INT8 container allows) with the weight step ÷ 2^k, the same real
weights, so that the first rounding is 2^k finer; and the global average pool as a depthwise
conv with weights 2^6 rather than MEAN (whose sum of a few codes is double-rounded at half a
code). :func:`~qdarts.export.graph_integer.to_integer_graph` ``(rounding="litert")`` computes
exactly LiteRT's int8 tensors (measured on LiteRT 2.3.0).

The logits are not requantized to int8 (FULLY_CONNECTED's int8 output; LiteRT 2.3 writes zeros
for an int16 one): with the few int8 codes a DARTS head's logits span, two classes often share
the top code and the argmax picks the lower index (measured: 65 of 2,000 Fashion-MNIST test
inputs tied, 28 predictions away from the fake-quant network's, with XNNPACK computing every
int8 tensor exactly). BATCH_MATMUL multiplies the raw int8 codes (it ignores zero points,
measured), so the ADD constant is ``b[c] + 128·Σ_i W[i, c]`` for an unsigned input grid; every
int32 value below 2^24 is exact in float32, and one float32 MUL rounds the logit as
:func:`~qdarts.export.graph_integer.integer_graph_forward` does.
"""

import os
import pathlib

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from qdarts.export.graph_integer import (
  IntegerGraph,
  IntNode,
  as_litert,
  int4_filter,
  to_integer_graph,
)
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
from qdarts.export.tflite import (
  _OP,
  _OPTIONS,
  _TYPE,
  ACT_ZERO_POINT,
  INPUT_NAME,
  INT4_MAX_BITS,
  OUTPUT_NAME,
  _ActQuant,
  _clamp_codes,
  _filter,
  _Graph,
  _serialize_model,
  run_tflite_tensors,
)
from qdarts.run_dir import atomic_write_bytes


def _quant(grid: Grid, where: str) -> _ActQuant:
  if grid.signed and grid.bits != 8:
    raise ValueError(f"node {where!r}: TFLite holds signed grids at 8 bits only")
  return _ActQuant(grid.step, grid.bits, zero_point=0 if grid.signed else ACT_ZERO_POINT)


class _Tensors:
  """The int8 tensor index, shape and quantization of every graph tensor, by name."""

  def __init__(self) -> None:
    self.index: dict[str, int] = {}
    self.shape: dict[str, list[int]] = {}
    self.quant: dict[str, _ActQuant] = {}

  def put(self, name: str, index: int, shape, quant: _ActQuant) -> None:
    self.index[name], self.shape[name], self.quant[name] = index, list(shape), quant


def _strided_slice(g: _Graph, name: str, x: int, shape, offset: int, stride: int, quant):
  """``x[:, offset::stride, offset::stride, :]``."""
  begin = g.tensor(
    f"{name}.begin", [4], _TYPE.INT32, None, np.int32([0, offset, offset, 0]).tobytes()
  )
  end = g.tensor(f"{name}.end", [4], _TYPE.INT32, None, np.int32([0, 0, 0, 0]).tobytes())
  strides = g.tensor(
    f"{name}.strides", [4], _TYPE.INT32, None, np.int32([1, stride, stride, 1]).tobytes()
  )
  options = fb.StridedSliceOptionsT()
  options.beginMask, options.endMask = 0b1001, 0b1111
  out_shape = [shape[0], -(-(shape[1] - offset) // stride), -(-(shape[2] - offset) // stride),
               shape[3]]  # fmt: skip
  y = g.act(name, out_shape, quant)
  g.op(_OP.STRIDED_SLICE, [x, begin, end, strides], [y], _OPTIONS.StridedSliceOptions, options)
  return y, out_shape


def _pad(g: _Graph, name: str, x: int, shape, padding, quant):
  (top, bottom), (left, right) = padding
  if top == bottom == left == right == 0:
    return x, shape
  pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
  paddings = g.tensor(f"{name}.paddings", [4, 2], _TYPE.INT32, None, pads.tobytes())
  out_shape = [shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3]]
  y = g.act(f"{name}.padded", out_shape, quant)
  g.op(_OP.PAD, [x, paddings], [y])  # fills the zero point: real 0
  return y, out_shape


def _bias(g: _Graph, n: IntNode) -> int:
  scale = np.float32(n.in_grid.step) * n.w_step
  q = fb.QuantizationParametersT()
  q.scale, q.zeroPoint = [float(v) for v in scale], [0] * scale.size
  return g.tensor(f"{n.node.name}.b", [scale.size], _TYPE.INT32, q, n.bias.tobytes())


def _conv(g: _Graph, t: _Tensors, n: IntNode, int8_filters: bool) -> None:
  node: GConv = n.node
  src = node.inputs[0]
  x, shape, quant = t.index[src], t.shape[src], t.quant[src]
  if node.offset:
    x, shape = _strided_slice(g, f"{node.name}.crop", x, shape, node.offset, 1, quant)
  x, shape = _pad(g, node.name, x, shape, node.padding, quant)
  codes = n.weight  # OHWI (cout, kh, kw, cin/g)
  if node.groups == 1:
    code, options_type, options, axis = _OP.CONV_2D, _OPTIONS.Conv2DOptions, fb.Conv2DOptionsT(), 0
  elif node.groups == shape[3] == codes.shape[0]:
    code, options_type, axis = _OP.DEPTHWISE_CONV_2D, _OPTIONS.DepthwiseConv2DOptions, 3
    options, codes = fb.DepthwiseConv2DOptionsT(), codes.transpose(3, 1, 2, 0)  # (1, kh, kw, c)
    options.depthMultiplier = 1
  else:
    raise ValueError(f"node {node.name!r}: TFLite has no convolution with groups={node.groups}")
  options.padding, options.strideH, options.strideW = fb.Padding.VALID, node.stride, node.stride
  options.dilationHFactor = options.dilationWFactor = node.dilation
  bits = INT4_MAX_BITS if int4_filter(n, int8_filters) else 8
  weights = _filter(g, node.name, codes, n.w_step, bits, axis)
  out_shape, out_quant = [-1, *n.out_shape], _quant(node.out, node.name)
  y = g.act(f"{node.name}.out", out_shape, out_quant)
  g.op(code, [x, weights, _bias(g, n)], [y], options_type, options)
  t.put(node.name, _clamp_codes(g, y, node.name, out_shape, out_quant), out_shape, out_quant)


def _pool(g: _Graph, t: _Tensors, n: IntNode) -> None:
  node = n.node
  src = node.inputs[0]
  x, shape, quant = t.index[src], t.shape[src], t.quant[src]
  options = fb.Pool2DOptionsT()
  options.padding, options.strideH = fb.Padding.SAME, 1
  options.strideW, options.filterHeight, options.filterWidth = 1, 3, 3
  code = _OP.MAX_POOL_2D if isinstance(node, GMaxPool) else _OP.AVERAGE_POOL_2D
  name = f"{node.name}.s1" if node.stride == 2 else node.name
  y = g.act(name, shape, quant)
  g.op(code, [x], [y], _OPTIONS.Pool2DOptions, options)
  if node.stride == 2:
    y, shape = _strided_slice(g, node.name, y, shape, 0, 2, quant)
  t.put(node.name, y, shape, quant)


def _depthwise(g: _Graph, t: _Tensors, n: IntNode) -> None:
  """A global average pool or requantization of :func:`as_litert`: DEPTHWISE_CONV_2D (VALID,
  kernel H×W or 1×1, INT8 weights 2^k) [→ RESHAPE (N, C) for the pool]."""
  node = n.node
  src = node.inputs[0]
  shape = t.shape[src]
  options = fb.DepthwiseConv2DOptionsT()
  options.padding, options.strideH, options.strideW = fb.Padding.VALID, 1, 1
  options.depthMultiplier = options.dilationHFactor = options.dilationWFactor = 1
  weights = _filter(g, node.name, n.weight.transpose(3, 1, 2, 0), n.w_step, 8, 3)
  out_quant = _quant(node.out, node.name)
  conv_shape = [-1, *n.out_shape] if isinstance(node, GRequant) else [-1, 1, 1, shape[3]]
  y = g.act(f"{node.name}.conv", conv_shape, out_quant)
  g.op(_OP.DEPTHWISE_CONV_2D, [t.index[src], weights, _bias(g, n)], [y],
       _OPTIONS.DepthwiseConv2DOptions, options)  # fmt: skip
  if isinstance(node, GRequant):
    t.put(node.name, _clamp_codes(g, y, node.name, conv_shape, out_quant), conv_shape, out_quant)
    return
  c = shape[3]
  out_shape = [-1, c]
  new_shape = g.tensor(f"{node.name}.shape", [2], _TYPE.INT32, None, np.int32([-1, c]).tobytes())
  reshape = fb.ReshapeOptionsT()
  reshape.newShape = [-1, c]
  out = g.act(f"{node.name}.out", out_shape, out_quant)
  g.op(_OP.RESHAPE, [y, new_shape], [out], _OPTIONS.ReshapeOptions, reshape)
  t.put(node.name, _clamp_codes(g, out, node.name, out_shape, out_quant), out_shape, out_quant)


def _node(g: _Graph, t: _Tensors, n: IntNode, int8_filters: bool) -> None:
  node = n.node
  if isinstance(node, GConv):
    return _conv(g, t, n, int8_filters)
  if isinstance(node, GGlobalAvgPool | GRequant) and n.weight is not None:
    return _depthwise(g, t, n)
  if isinstance(node, GMaxPool | GAvgPool):
    return _pool(g, t, n)
  ins = [t.index[i] for i in node.inputs]
  out_shape = [-1, *n.out_shape]
  out_quant = _quant(node.out, node.name)
  y = g.act(f"{node.name}.out", out_shape, out_quant)
  if isinstance(node, GRequant):
    g.op(_OP.QUANTIZE, ins, [y])
  elif isinstance(node, GAdd):
    options = fb.AddOptionsT()
    g.op(_OP.ADD, ins, [y], _OPTIONS.AddOptions, options)
  elif isinstance(node, GConcat):
    options = fb.ConcatenationOptionsT()
    options.axis = 3
    g.op(_OP.CONCATENATION, ins, [y], _OPTIONS.ConcatenationOptions, options)
  else:  # GGlobalAvgPool
    axes = g.tensor(f"{node.name}.axes", [2], _TYPE.INT32, None, np.int32([1, 2]).tobytes())
    options = fb.ReducerOptionsT()
    options.keepDims = False
    g.op(_OP.MEAN, [ins[0], axes], [y], _OPTIONS.ReducerOptions, options)
  if not isinstance(node, GConcat):
    y = _clamp_codes(g, y, node.name, out_shape, out_quant)
  t.put(node.name, y, out_shape, out_quant)


def _const(g: _Graph, name: str, values: np.ndarray) -> int:
  values = np.ascontiguousarray(values, np.float32)
  return g.tensor(name, list(values.shape), _TYPE.FLOAT32, None, values.tobytes())


def _unit_quant() -> "fb.QuantizationParametersT":
  q = fb.QuantizationParametersT()
  q.scale, q.zeroPoint = [1.0], [0]
  return q


def _linear(g: _Graph, t: _Tensors, n: IntNode) -> int:
  """The float32 logits ``(acc_raw + b + z_corr)·s_in·s_w[c]`` (see the module docstring)."""
  node: GLinear = n.node
  src = node.inputs[0]
  codes = n.weight.astype(np.int64)  # (cout, cin)
  offset = 0 if n.in_grid.signed else -ACT_ZERO_POINT  # u = q + offset
  constant = n.bias.astype(np.int64) + offset * codes.sum(1)
  in_max = max(abs(v) for v in (*n.in_grid.qrange(), ACT_ZERO_POINT))
  if (np.abs(codes).sum(1) * in_max + np.abs(constant)).max() >= 1 << 24:
    raise ValueError(f"node {node.name!r}: logit accumulators beyond float32's exact integers")
  weights = g.tensor(f"{node.name}.w", [codes.shape[1], codes.shape[0]], _TYPE.INT8,
                     _unit_quant(), codes.T.astype(np.int8).tobytes())  # fmt: skip
  out_shape = [-1, codes.shape[0]]
  acc = g.tensor(f"{node.name}.acc", out_shape, _TYPE.INT32, _unit_quant())
  g.op(_OP.BATCH_MATMUL, [t.index[src], weights], [acc], _OPTIONS.BatchMatMulOptions,
       fb.BatchMatMulOptionsT())  # fmt: skip
  real = g.tensor(f"{node.name}.acc_f32", out_shape, _TYPE.FLOAT32)
  g.op(_OP.CAST, [acc], [real])
  biased = g.tensor(f"{node.name}.biased", out_shape, _TYPE.FLOAT32)
  g.op(_OP.ADD, [real, _const(g, f"{node.name}.b", constant)], [biased], _OPTIONS.AddOptions,
       fb.AddOptionsT())  # fmt: skip
  logits = g.tensor(OUTPUT_NAME, out_shape, _TYPE.FLOAT32)
  scale = np.float32(n.in_grid.step) * np.asarray(node.w_step, np.float32)
  g.op(_OP.MUL, [biased, _const(g, f"{node.name}.scale", scale)], [logits], _OPTIONS.MulOptions,
       fb.MulOptionsT())  # fmt: skip
  return logits


def node_codes(
  path: str | os.PathLike, igraph: IntegerGraph, x: np.ndarray, kernels: str = "xnnpack"
) -> dict[str, np.ndarray]:
  """Every node's output codes (all but the linear's) in one LiteRT run of an exported model,
  on the integer model's grids (``u``, not ``u − 128``), by node name: the last tensor the
  export writes for the node (after its MINIMUM clamp, RESHAPE or STRIDED_SLICE)."""
  tensors = run_tflite_tensors(path, x, kernels=kernels)
  codes = {}
  for n in igraph.nodes[:-1]:
    name = n.node.name
    key = next(k for k in (f"{name}.clamp", f"{name}.out", f"{name}.conv", name) if k in tensors)
    values = tensors[key].astype(np.int32)
    codes[name] = values if n.out_grid.signed else values - ACT_ZERO_POINT
  return codes


def build_graph_tflite(graph: QuantizedGraph | IntegerGraph, *, int8_filters: bool = True) -> bytes:
  """The int8/int4 TFLite flatbuffer of a graph (see the module docstring), float32 logits.

  Filters are INT8 (``int8_filters``, the default) or INT4 for ``w_bits <= 4``. XNNPACK,
  LiteRT's default runtime, delegates no INT4 filter: those convs run on the builtin kernels'
  double rounding, the rest in XNNPACK's float32 single rounding, and the mix drifts from the
  trained network. Measured with XNNPACK on the test splits (fake-quant: digits 91.36%,
  Fashion-MNIST 76.20%): with INT8 filters every int8 tensor equals the single-rounding integer
  model's (its ``"ort"`` form) on every test input, and so do the predictions; with INT4
  filters 96.1% and 88.5% of the predictions agree with fake-quant (90.53%, 76.00%). INT8
  costs twice the bytes of the ≤4-bit layers.

  Raises:
    ValueError: the graph is invalid or has no TFLite form (naming the node).
  """
  igraph = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph)
  igraph = as_litert(igraph, int8_filters=int8_filters)
  g, t = _Graph(), _Tensors()
  shape = [-1, *igraph.input_shape]
  x_in = g.tensor(INPUT_NAME, shape, _TYPE.FLOAT32)
  quant = _quant(igraph.input_grid, INPUT)
  q = g.act(f"{INPUT}.q", shape, quant)
  g.op(_OP.QUANTIZE, [x_in], [q])
  t.put(INPUT, _clamp_codes(g, q, INPUT, shape, quant), shape, quant)
  for n in igraph.nodes[:-1]:
    _node(g, t, n, int8_filters)
  logits = _linear(g, t, igraph.nodes[-1])
  layers = [
    {"name": n.node.name, "w_bits": int(n.node.w_bits), "a_bits": int(n.in_grid.bits),
     "weights": "INT4" if isinstance(n.node, GConv) and int4_filter(n, int8_filters) else "INT8",
     "acc_bits": [] if n.acc_bits is None else [int(k) for k in n.acc_bits]}
    for n in igraph.nodes if isinstance(n.node, GConv | GLinear)
  ]  # fmt: skip
  metadata = {**igraph.metadata, "qdarts.layers": layers, "qdarts.graph": "dag",
              "qdarts.logits": {"dtype": "float32", "from": "int32 accumulators"}}  # fmt: skip
  return _serialize_model(g, metadata, x_in, logits, "qdarts quantized DAG")


def export_graph_tflite(
  graph: QuantizedGraph, path: str | os.PathLike, *, int8_filters: bool = True
) -> pathlib.Path:
  """Writes the TFLite model of ``graph`` to ``path`` atomically (built in memory first)."""
  path = pathlib.Path(path)
  data = build_graph_tflite(graph, int8_filters=int8_filters)
  path.parent.mkdir(parents=True, exist_ok=True)
  return atomic_write_bytes(path, data)
