"""ONNX QDQ export of a :class:`~qdarts.export.graph_ir.QuantizedGraph` (a DARTS final network).

The conventions of :mod:`qdarts.export.onnx`: opset 21, IR version 10, NCHW float32 ``"input"``
``[N, C, H, W]`` and ``"logits"`` ``[N, num_classes]``; weights as INT8 codes (INT4 where
``w_bits ≤ 4``, packed low nibble first) with a per-channel DequantizeLinear (axis 0), biases
as int32 codes. Every tensor of the graph exists in the model as its codes ``<name>.q`` —
uint8, zero point 0 on an unsigned grid and 128 on a signed one (code ``c`` stored as
``c + 128``: every tensor is uint8, the type ORT's integer kernels take on both sides),
narrowed by a Clip below 8 bits (QCDQ).

ONNX Runtime computes the integer model's ``"ort"`` form
(:func:`~qdarts.export.graph_integer.as_ort`) code for code at ``"extended"`` and ``"all"``
(ORT's default): every float operation but the last rounding of each node is exact, and that
rounding is ORT's own. Two layouts do it:

- *fused*, the QDQ pattern ORT turns into QLinearConv (8-bit weights): DequantizeLinear with
  the trained steps, ORT requantizes ``rint(acc × f32(f32(s_in·s_w) / s_out))``;
- *exact*, everywhere else: the codes as float32 or int32 integers (DequantizeLinear with step 1,
  or Cast), an exact integer op (float32 Conv of INT4 weights with step 1, its sums below
  2^24; int32 Mul/Add; int32 ReduceSum), then one QuantizeLinear ``rint(v ÷ scale)`` with the
  requantization as its scale (per channel on axis 1 for a conv). The adds avoid QLinearAdd,
  which rounds in fixed point on some CPUs and in float on others.

Per node::

  GConv (fused):  [Slice] → DQ(s_in) → Conv(DQ(W int8, s_w), DQ(b)) → Q(s_out) [→ Clip]
  GConv (exact):  [Slice] → DQ(1) → Conv(DQ(W int4, 1), DQ(b, 1)) → Q(1/M, axis 1) [→ Clip]
  GRequant:       DQ(1) → Q(1/M) [→ Clip]  (a ReLU before an unsigned grid: its clamp at 0)
  GAdd:           Cast int32 [− 128] → Mul(w_a), likewise b → Add → Cast float → Q [→ Clip]
  GConcat:        Concat of the codes     (every input on the output grid: exact)
  GMaxPool:       MaxPool of the codes    (uint8 MaxPool, padding ignored: exact)
  GAvgPool:       Cast(codes) [− 128] → AveragePool(count_include_pad=0) → round half away from
                  zero (Sign·Floor(|v| + ½)) [+ 128] → Cast: the integer model's rounding, exactly
  GGlobalAvgPool: Cast int32 [− 128] → ReduceSum(H, W) → Cast float → Q(H·W·s_out / s_in)
  GLinear:        Flatten → DQ(s_in) → Gemm(DQ(W), DQ(b); transB=1) → logits (QGemm at 8 bits)

At ``"disabled"`` and ``"basic"`` ORT runs the fused layout's convs in float on the trained
steps: a value within float32 rounding of a tie can land one code apart (measured on a
Fashion-MNIST network: 10,389 of 1.05e9 tensor codes; 0 at ``"extended"`` and ``"all"``).
"""

import json
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto

from qdarts.export.graph_integer import (
  IntegerGraph,
  IntNode,
  as_ort,
  ort_fused,
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
from qdarts.export.onnx import (
  INPUT_NAME,
  OUTPUT_NAME,
  _Graph,
  _weight_dq,
  checked_model,
  nchw_input,
  ort_session,
)
from qdarts.run_dir import atomic_write_bytes


def _codes(name: str) -> str:
  return f"{name}.q"


SIGNED_ZERO_POINT = 128
UNIT_STEP = "unit_step"  # float32 1: a DequantizeLinear to the exact (centred) code values


def _zero_point(grid: Grid) -> int:
  return SIGNED_ZERO_POINT if grid.signed else 0


def _constant(g: _Graph, name: str, value) -> str:
  """An initializer added once (several consumers may ask for it)."""
  if name not in g.names:
    g.array(name, value)
  return name


def _scale(g: _Graph, tensor: str, grid: Grid) -> str:
  return _constant(g, f"{tensor}.scale", np.float32(grid.step))


def _zero(g: _Graph, tensor: str, grid: Grid) -> str:
  return _constant(g, f"{tensor}.zero_point", np.uint8(_zero_point(grid)))


def _clip(g: _Graph, q: str, name: str, grid: Grid) -> str:
  """uint8 codes → Clip to the grid's range (a grid below 8 bits) → ``name.q``."""
  qmin, qmax = (v + _zero_point(grid) for v in grid.qrange())
  lo, hi = g.array(f"{name}.qmin", np.uint8(qmin)), g.array(f"{name}.qmax", np.uint8(qmax))
  return g.node("Clip", [q, lo, hi], _codes(name))


def _quantize(g: _Graph, x: str, name: str, grid: Grid) -> str:
  """x (float) → QuantizeLinear(the grid's step) [→ Clip]; returns the codes ``name.q``."""
  if grid.bits == 8:
    return g.node("QuantizeLinear", [x, _scale(g, name, grid), _zero(g, name, grid)], _codes(name))
  q = g.node("QuantizeLinear", [x, _scale(g, name, grid), _zero(g, name, grid)], f"{name}.q8")
  return _clip(g, q, name, grid)


def _requantize(g: _Graph, v: str, n: IntNode) -> str:
  """An exact integer value v (float32, NCHW) → QuantizeLinear(÷ the ``"ort"`` scale,
  per channel on axis 1 where it has several) [→ Clip]: :class:`OrtRequant` exactly."""
  name, grid, scale = n.node.name, n.out_grid, n.ort.scale
  zero = np.full(scale.shape, _zero_point(grid), np.uint8)
  attrs = {"axis": 1} if scale.size > 1 else {}
  if scale.size == 1:
    scale, zero = scale.reshape(()), zero.reshape(())
  s, z = g.array(f"{name}.requant_scale", scale), g.array(f"{name}.requant_zero_point", zero)
  if grid.bits == 8:
    return g.node("QuantizeLinear", [v, s, z], _codes(name), **attrs)
  return _clip(g, g.node("QuantizeLinear", [v, s, z], f"{name}.q8", **attrs), name, grid)


def _dequantize(g: _Graph, tensor: str, grid: Grid, consumer: str, codes: str | None = None) -> str:
  """DequantizeLinear with the tensor's step (a fused consumer reads it)."""
  inputs = [codes or _codes(tensor), _scale(g, tensor, grid), _zero(g, tensor, grid)]
  return g.node("DequantizeLinear", inputs, f"{consumer}.{tensor}.dq")


def _exact_values(
  g: _Graph, tensor: str, grid: Grid, consumer: str, codes: str | None = None
) -> str:
  """DequantizeLinear with step 1: the centred codes as float32, exactly."""
  one = _constant(g, UNIT_STEP, np.float32(1.0))
  inputs = [codes or _codes(tensor), one, _zero(g, tensor, grid)]
  return g.node("DequantizeLinear", inputs, f"{consumer}.{tensor}.values")


def _int32_values(g: _Graph, tensor: str, grid: Grid, consumer: str) -> str:
  """The centred codes as int32 (Cast, minus the zero point)."""
  x = g.node("Cast", [_codes(tensor)], f"{consumer}.{tensor}.int32", to=TensorProto.INT32)
  if not grid.signed:
    return x
  offset = _constant(g, "signed_zero_point_int32", np.int32(SIGNED_ZERO_POINT))
  return g.node("Sub", [x, offset], f"{consumer}.{tensor}.centred")


def _bias(g: _Graph, n: IntNode, fused: bool) -> str:
  """int32 codes; step ``s_in·s_w[c]`` for a fused conv, 1 for an exact one."""
  if fused:
    scale = np.float32(n.in_grid.step) * np.asarray(n.node.w_step, np.float32)
  else:
    scale = np.ones(n.bias.shape, np.float32)
  b = g.array(f"{n.node.name}.b_codes", n.bias)
  s = g.array(f"{n.node.name}.b_scale", np.broadcast_to(scale, n.bias.shape).astype(np.float32))
  zero = g.array(f"{n.node.name}.b_zero_point", np.zeros(n.bias.shape, np.int32))
  return g.node("DequantizeLinear", [b, s, zero], f"{n.node.name}.b", axis=0)


def _conv(g: _Graph, n: IntNode) -> str:
  """Fused (8-bit weights): the QDQ pattern ORT turns into QLinearConv, the trained steps.
  Otherwise: a float32 Conv of integer values (unit steps) — exact, its sums below 2^24 —
  then the requantization in one QuantizeLinear."""
  node: GConv = n.node
  src, fused = node.inputs[0], ort_fused(n)
  codes = None
  if node.offset:
    starts = g.array(f"{node.name}.crop_starts", np.array([node.offset] * 2, np.int64))
    ends = g.array(f"{node.name}.crop_ends", np.array([2**62] * 2, np.int64))
    axes = g.array(f"{node.name}.crop_axes", np.array([2, 3], np.int64))
    codes = g.node("Slice", [_codes(src), starts, ends, axes], f"{node.name}.crop")
  read = _dequantize if fused else _exact_values
  x = read(g, src, n.in_grid, node.name, codes)
  cout = n.weight.shape[0]
  step = node.w_step if fused else np.ones(cout, np.float32)
  bits = 8 if fused else node.w_bits
  w = _weight_dq(g, node.name, n.weight.transpose(0, 3, 1, 2), step, bits)
  kh, kw = n.weight.shape[1:3]
  (top, bottom), (left, right) = node.padding
  y = g.node(
    "Conv",
    [x, w, _bias(g, n, fused)],
    f"{node.name}.conv",
    kernel_shape=[kh, kw],
    strides=[node.stride] * 2,
    pads=[top, left, bottom, right],
    dilations=[node.dilation] * 2,
    group=node.groups,
  )
  return _quantize(g, y, node.name, node.out) if fused else _requantize(g, y, n)


def _add(g: _Graph, n: IntNode) -> str:
  """``a·w_a + b·w_b`` in int32 (exact; no QDQ pattern, so no QLinearAdd with its own float
  arithmetic), then the requantization."""
  node: GAdd = n.node
  terms = []
  inputs = zip(node.inputs, n.add_grids, n.ort.add_weights, strict=True)
  for i, (tensor, grid, weight) in enumerate(inputs):
    x = _int32_values(g, tensor, grid, f"{node.name}.in{i}")
    w = g.array(f"{node.name}.in{i}_weight", np.int32(weight))
    terms.append(g.node("Mul", [x, w], f"{node.name}.in{i}_weighted"))
  total = g.node("Add", terms, f"{node.name}.sum")
  return _requantize(g, g.node("Cast", [total], f"{node.name}.sum_f", to=TensorProto.FLOAT), n)


def _global_avg_pool(g: _Graph, n: IntNode) -> str:
  """The int32 sum over H×W (exact), then the requantization ``÷ H·W·s_out / s_in``."""
  node: GGlobalAvgPool = n.node
  x = _int32_values(g, node.inputs[0], n.in_grid, node.name)
  axes = g.array(f"{node.name}.axes", np.array([2, 3], np.int64))
  total = g.node("ReduceSum", [x, axes], f"{node.name}.sum", keepdims=1)
  return _requantize(g, g.node("Cast", [total], f"{node.name}.sum_f", to=TensorProto.FLOAT), n)


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
  return g.node("Cast", [rounded], _codes(name), to=TensorProto.UINT8)


def _node(g: _Graph, n: IntNode) -> str:
  node = n.node
  if isinstance(node, GConv):
    return _conv(g, n)
  if isinstance(node, GRequant):
    return _requantize(g, _exact_values(g, node.inputs[0], n.in_grid, node.name), n)
  if isinstance(node, GAdd):
    return _add(g, n)
  if isinstance(node, GConcat):
    return g.node("Concat", [_codes(i) for i in node.inputs], _codes(node.name), axis=1)
  if isinstance(node, GMaxPool):
    return g.node("MaxPool", [_codes(node.inputs[0])], _codes(node.name), kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1], strides=[node.stride] * 2)  # fmt: skip
  if isinstance(node, GAvgPool):
    return _avg_pool(g, n)
  if isinstance(node, GGlobalAvgPool):
    return _global_avg_pool(g, n)
  return _linear(g, n)


def _linear(g: _Graph, n: IntNode) -> str:
  """Flatten of the codes, then DQ → Gemm: ORT fuses 8-bit weights into QGemm."""
  node: GLinear = n.node
  flat = g.node("Flatten", [_codes(node.inputs[0])], f"{node.name}.flatten", axis=1)
  x = _dequantize(g, node.inputs[0], n.in_grid, node.name, codes=flat)
  w = _weight_dq(g, node.name, n.weight, node.w_step, node.w_bits)
  return g.node("Gemm", [x, w, _bias(g, n, fused=True)], OUTPUT_NAME, transB=1)


def build_graph_model(
  graph: QuantizedGraph | IntegerGraph, props: dict[str, str] | None = None
) -> onnx.ModelProto:
  """The checked QDQ ``ModelProto`` of a graph (see the module docstring).

  ``metadata_props`` hold ``props`` if given, else the graph's metadata, ``"qdarts.layers"``
  (JSON: per node with weights its name, ``w_bits`` and its input's bits ``a_bits``) and
  ``"qdarts.graph"`` (``"dag"``).

  Raises:
    ValueError: the graph is invalid or has no integer form (the message names the node).
  """
  igraph = as_ort(graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph))
  g = _Graph()
  _quantize(g, INPUT, INPUT, igraph.input_grid)
  for n in igraph.nodes:
    _node(g, n)
  layers = [
    {"name": n.node.name, "w_bits": int(n.node.w_bits), "a_bits": int(n.in_grid.bits)}
    for n in igraph.nodes
    if isinstance(n.node, GConv | GLinear)
  ]
  if props is None:
    props = {**igraph.metadata, "qdarts.layers": json.dumps(layers), "qdarts.graph": "dag"}
  return checked_model(g, "qdarts_dag", igraph.input_shape, igraph.num_classes, props)


def export_graph_onnx(graph: QuantizedGraph, path: str | os.PathLike) -> pathlib.Path:
  """Writes the QDQ model of ``graph`` to ``path`` atomically (built and checked in memory
  first: a failed export writes nothing); returns the path."""
  path = pathlib.Path(path)
  data = build_graph_model(graph).SerializeToString()
  path.parent.mkdir(parents=True, exist_ok=True)
  return atomic_write_bytes(path, data)


def run_graph_onnx_codes(
  model: onnx.ModelProto | str | os.PathLike,
  igraph: IntegerGraph,
  x_nhwc: np.ndarray,
  optimization: str = "extended",
) -> dict[str, np.ndarray]:
  """Every tensor's codes as ONNX Runtime computes them: ``{name: int32 (N, H, W, C) or
  (N, C)}``, centred as :func:`~qdarts.export.graph_integer.integer_graph_trace` holds them
  (``"input"`` and each node but the final linear), and ``"logits"``.

  The model is run with each ``<name>.q`` added as a graph output (in memory; ORT fuses the
  same nodes: a fused node still produces its codes)."""
  model = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
  model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy
  grids = {INPUT: igraph.input_grid, **{n.node.name: n.out_grid for n in igraph.nodes[:-1]}}
  flat = {n.node.name for n in igraph.nodes[:-1] if len(n.out_shape) == 1}
  for name in grids:
    output = onnx.helper.make_tensor_value_info(_codes(name), TensorProto.UINT8, None)
    model.graph.output.append(output)
  session = ort_session(model, optimization)
  names = [OUTPUT_NAME, *(_codes(name) for name in grids)]
  outputs = dict(zip(names, session.run(names, {INPUT_NAME: nchw_input(x_nhwc)}), strict=True))
  codes = {OUTPUT_NAME: outputs.pop(OUTPUT_NAME)}
  for name, grid in grids.items():
    c = outputs[_codes(name)].astype(np.int32) - _zero_point(grid)
    codes[name] = c.reshape(c.shape[:2]) if name in flat else c.transpose(0, 2, 3, 1)
  return codes
