"""The integer reference model of a :class:`~qdarts.export.graph_ir.QuantizedGraph` (numpy).

:func:`to_integer_graph` turns float weights and steps into what an integer runtime stores;
:func:`integer_graph_trace` runs it with integer arithmetic only (codes held in int32, int64
intermediates), from the input codes to the int32 accumulators of the final linear. Every
tensor is a code array on its :class:`~qdarts.export.graph_ir.Grid` (zero point 0; signed grids
are int8 codes, unsigned ones uint8). Requantization is TFLite's ``MultiplyByQuantizedMultiplier``
(:func:`~qdarts.export.integer_model.multiply_by_quantized_multiplier`, single or double
rounding) with real multiplier M, then a clamp to the output grid's range:

- conv: ``acc[c] = b[c] + Σ x·w[c]`` (int32 bias codes ``round(b / (s_in s_w[c]))``),
  ``M[c] = s_in·s_w[c] / s_out``;
- requant: ``M = s_in / s_out`` applied to the codes (a ReLU before an unsigned grid is the
  clamp at 0);
- add: TFLite's int8 ADD with zero points 0 — both inputs shifted left by 20 and scaled by
  ``s_i / (2·max(s_a, s_b))``, summed, then ``M = 2·max(s_a, s_b) / (2^20·s_out)``;
- concat: a copy (all inputs on the output grid); max pool: the largest code of the real
  pixels; average pool: ``(Σc ± n/2) / n`` truncated toward zero over the n real pixels (round
  half away from zero, TFLite's integer AVERAGE_POOL_2D);
- global average pool: ``Σ_{h,w} c`` then ``M = s_in / (H·W·s_out)``;
- linear (last): ``acc[c] = b[c] + Σ x·w[c]``; logits ``acc·s_in·s_w[c]``.

Roundings: ``"single"`` and ``"double"`` as in :mod:`qdarts.export.integer_model` (the C
runtime computes either), and ``"litert"``, what LiteRT's builtin int8 kernels compute: double
rounding everywhere, except that the convolutions' final rounding shift breaks ties toward +∞
(ruy's per-channel requantization) instead of away from zero. ``"litert"`` graphs are in the
TFLite export's form (:func:`as_litert`: accumulators scaled up by 2^k, the global average pool
and requantizations with M < 1/2 as depthwise convs; the same real weights). Measured on LiteRT
2.3.0, fed the same input codes, every node of the tests' and the digits DARTS graphs is exact.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np

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
  TensorInfo,
  conv2d,
  pool3x3,
  validate_graph,
)
from qdarts.export.integer_model import (
  _INT32_MIN,
  ADD_LEFT_SHIFT,
  _saturating_rounding_doubling_high_mul,
  multiply_by_quantized_multiplier,
  quantize_multiplier,
)
from quant.integer import weight_codes

_INT32_MAX = 2**31 - 1
ROUNDINGS = ("single", "double", "litert", "ort")


@dataclasses.dataclass(frozen=True)
class IntRequant:
  """Per-channel fixed point ``M ≈ multiplier·2^(shift − 31)`` and the output clamp.

  Attributes:
    multiplier, shift: int32 ``(c,)`` (or ``(1,)``) from :func:`quantize_multiplier`.
    real: float64, the real M.
    lo, hi: the output grid's code range.
  """

  multiplier: np.ndarray
  shift: np.ndarray
  real: np.ndarray
  lo: int
  hi: int


@dataclasses.dataclass(frozen=True)
class OrtRequant:
  """How the ONNX export requantizes a node in ONNX Runtime (the ``"ort"`` form).

  The node's exact integer value v — a conv's int32 accumulator with its bias, a code, an
  add's ``a·w_a + b·w_b``, a global pool's sum, all below 2^24 so that float32 holds them
  exactly — becomes ``clip(rint(f32(v) × scale))`` where ORT fuses the conv into QLinearConv
  (``scale = f32(f32(s_in·s_w[c]) / s_out)``, ORT's own formula) and ``clip(rint(f32(v) ÷ scale))``
  in a QuantizeLinear elsewhere; ``rint`` rounds half to even (MLAS's ``cvtps2dq``).

  Attributes:
    scale: float32 ``(c,)`` or ``(1,)``.
    divide: True for a QuantizeLinear (÷), False for a fused QLinearConv (×).
    add_weights: an add's integer weights ``(w_a, w_b)`` of its inputs' codes, else None.
  """

  scale: np.ndarray
  divide: bool
  add_weights: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class IntNode:
  """One integer node: the float node it came from and its integer parameters.

  Attributes:
    node: the :class:`~qdarts.export.graph_ir.GNode`.
    in_shape, out_shape: of its (first) input and of its output.
    in_grid, out_grid: the same for grids (``out_grid`` None for the linear).
    weight: int8 codes, OHWI ``(cout, kh, kw, cin/g)`` or ``(cout, cin)``; None without weights.
    bias: int32 codes ``(cout,)`` or None.
    requant: the output requantization, None where there is none (concat, pools, linear).
    add_inputs: for an add, ``((multiplier, shift), (multiplier, shift))`` of both inputs.
    add_grids: for an add, the grids of both inputs.
    acc_bits: int ``(cout,)`` k of the ``"litert"`` form (:func:`as_litert`): the weight codes,
      the bias codes and the accumulators are ``2^k`` × the trained ones, the weight step and M
      ``2^-k`` × (the same real weights); None elsewhere.
    ort: the ``"ort"`` form's requantization (:func:`as_ort`); None elsewhere.
  """

  node: object
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  in_grid: Grid
  out_grid: Grid | None
  weight: np.ndarray | None = None
  bias: np.ndarray | None = None
  requant: IntRequant | None = None
  add_inputs: tuple[tuple[int, int], tuple[int, int]] | None = None
  add_grids: tuple[Grid, Grid] | None = None
  acc_bits: np.ndarray | None = None
  ort: OrtRequant | None = None

  @property
  def w_step(self) -> np.ndarray:
    """float32 ``(cout,)``: the step of ``weight``, the trained step (``f32(1/(H·W))`` for the
    ``"litert"`` global average pool, 1 for a requantization) ÷ ``2^acc_bits``."""
    if isinstance(self.node, GGlobalAvgPool):
      h, w, c = self.in_shape
      step = np.full(c, 1.0 / (h * w), np.float32)
    elif isinstance(self.node, GRequant):
      step = np.ones(self.in_shape[-1], np.float32)
    else:
      step = np.broadcast_to(np.asarray(self.node.w_step, np.float32), (self.weight.shape[0],))
    bits = 0 if self.acc_bits is None else self.acc_bits
    return np.ldexp(step, -np.asarray(bits, np.int32)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class IntegerGraph:
  """What an integer runtime stores for a graph; build it with :func:`to_integer_graph`."""

  nodes: tuple[IntNode, ...]
  input_shape: tuple[int, int, int]
  input_grid: Grid
  num_classes: int
  rounding: str = "single"
  metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def logit_scale(self) -> np.ndarray:
    """float32 ``(num_classes,)``: ``logits = acc · logit_scale``."""
    last = self.nodes[-1]
    return np.float32(last.in_grid.step) * np.asarray(last.node.w_step, np.float32)


def _f64(step) -> np.ndarray:
  return np.asarray(step, np.float32).astype(np.float64)


def _requant(real, out: Grid) -> IntRequant:
  real = np.atleast_1d(np.asarray(real, np.float64))
  pairs = [quantize_multiplier(float(m)) for m in real]
  lo, hi = out.qrange()
  return IntRequant(
    np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32), real,
    lo, hi,
  )  # fmt: skip


def _weights(node: GConv | GLinear, in_grid: Grid) -> tuple[np.ndarray, np.ndarray]:
  """OHWI / (cout, cin) int8 codes and int32 bias codes, refusing int32 overflow."""
  codes = weight_codes(node.weight, node.w_step, node.w_bits)
  codes = np.moveaxis(codes, -1, 0)
  scale = _f64(in_grid.step) * _f64(node.w_step)
  bias = np.round(np.asarray(node.bias, np.float64) / scale)
  in_max = max(abs(q) for q in in_grid.qrange())
  bound = np.abs(codes.reshape(codes.shape[0], -1).astype(np.int64)).sum(1) * in_max
  if np.abs(bias).max(initial=0) > _INT32_MAX or (bound + np.abs(bias)).max() > _INT32_MAX:
    raise ValueError(f"node {node.name!r}: the int32 bias or accumulator can overflow")
  return np.ascontiguousarray(codes), bias.astype(np.int32)


def _int_node(node, ins: list[TensorInfo], out: TensorInfo) -> IntNode:
  base = dict(node=node, in_shape=ins[0].shape, out_shape=out.shape, in_grid=ins[0].grid,
              out_grid=out.grid)  # fmt: skip
  s_in = _f64(ins[0].grid.step)
  if isinstance(node, GConv | GLinear):
    weight, bias = _weights(node, ins[0].grid)
    requant = None
    if isinstance(node, GConv):
      requant = _requant(s_in * _f64(node.w_step) / _f64(node.out.step), node.out)
    return IntNode(**base, weight=weight, bias=bias, requant=requant)
  if isinstance(node, GRequant):
    return IntNode(**base, requant=_requant(s_in / _f64(node.out.step), node.out))
  if isinstance(node, GGlobalAvgPool):
    h, w, _ = ins[0].shape
    return IntNode(**base, requant=_requant(s_in / (h * w * _f64(node.out.step)), node.out))
  if isinstance(node, GAdd):
    s_a, s_b = (float(_f64(t.grid.step)) for t in ins)
    twice_max = 2 * max(s_a, s_b)
    pairs = (quantize_multiplier(s_a / twice_max), quantize_multiplier(s_b / twice_max))
    real = twice_max / ((1 << ADD_LEFT_SHIFT) * float(_f64(node.out.step)))
    grids = (ins[0].grid, ins[1].grid)
    return IntNode(**base, requant=_requant(real, node.out), add_inputs=pairs, add_grids=grids)
  return IntNode(**base)


# --- the "litert" form: accumulators scaled up so that double rounding errs less ------------

INT4_CODE_MAX = 7  # an INT4 filter holds codes in [-7, 7] (symmetric)
INT8_CODE_MAX = 127
INT4_MAX_BITS = 4  # w_bits <= 4: INT4 filters (as qdarts.export.tflite)
GAP_WEIGHT_BITS = 6  # the global average pool as a depthwise conv with weights 2^6


def int4_filter(n: IntNode, int8_filters: bool = False) -> bool:
  """Whether the TFLite export stores the node's filter as INT4 (w_bits <= 4, not forced)."""
  return (
    not int8_filters and n.node.w_bits <= INT4_MAX_BITS and not isinstance(n.node, GGlobalAvgPool)
  )


def _scaled(n: IntNode, int8_filters: bool) -> IntNode:
  """A conv with per-channel ``k`` as large as the filter's container and int32 allow."""
  code_max = INT4_CODE_MAX if int4_filter(n, int8_filters) else INT8_CODE_MAX
  flat = np.abs(n.weight.reshape(n.weight.shape[0], -1).astype(np.int64))
  peak = flat.max(1)
  in_max = max(abs(q) for q in n.in_grid.qrange())
  bound = flat.sum(1) * in_max + np.abs(n.bias.astype(np.int64))
  k = np.zeros(len(peak), np.int64)
  for c in np.flatnonzero(n.requant.shift < 0):  # shift >= 0 rounds once already
    while 0 < peak[c] << (k[c] + 1) <= code_max and bound[c] << (k[c] + 1) <= _INT32_MAX:
      k[c] += 1
  shape = (-1,) + (1,) * (n.weight.ndim - 1)
  weight = (n.weight.astype(np.int64) << k.reshape(shape)).astype(np.int8)
  bias = (n.bias.astype(np.int64) << k).astype(np.int32)
  real = np.broadcast_to(n.requant.real, k.shape) / np.exp2(k)
  requant = _requant(real, n.out_grid)
  return dataclasses.replace(n, weight=weight, bias=bias, requant=requant, acc_bits=k)


def _as_depthwise(n: IntNode) -> IntNode:
  """The global average pool (requantization) as LiteRT's DEPTHWISE_CONV_2D over the whole
  H×W (1×1): weights ``2^k`` with step ``f32(1/(H·W)) ÷ 2^k`` (``2^-k``), bias 0;
  k = ``GAP_WEIGHT_BITS``, or 0 where M ≥ 1/2 (LiteRT then rounds once).

  A requantization with M ≥ 1/2 is a depthwise conv too (weights 1), not QUANTIZE: the builtin
  kernels round it once either way, but XNNPACK's int8 QUANTIZE (``qs8_vcvt``) multiplies by M
  rounded to 8 fractional bits, off by up to half a code on large codes (digits DARTS network:
  2.3% of a stem requantization's codes), where its convolution requantizes in float32."""
  c = n.in_shape[-1]
  h, w = n.in_shape[:2] if isinstance(n.node, GGlobalAvgPool) else (1, 1)
  k = 0 if n.requant.shift[0] >= 0 else GAP_WEIGHT_BITS
  n = dataclasses.replace(n, acc_bits=np.full(c, k, np.int64))
  weight = np.full((c, h, w, 1), 1 << k, np.int8)
  real = _f64(n.in_grid.step) * n.w_step.astype(np.float64) / _f64(n.node.out.step)
  requant = _requant(real, n.out_grid)
  return dataclasses.replace(n, weight=weight, bias=np.zeros(c, np.int32), requant=requant)


def as_litert(igraph: IntegerGraph, *, int8_filters: bool = True) -> IntegerGraph:
  """The ``"litert"`` form of an integer graph: what the TFLite export stores and LiteRT's
  builtin kernels compute, the same real weights and biases as the trained network.

  LiteRT requantizes in two roundings (gemmlowp's rounding doubling high multiply, then a
  rounding shift): with M = s_in·s_w/s_out in [2^-2, 1) the first rounds at a quarter or half
  of an output code, and small accumulators (2-bit weights × 4-bit inputs) land on the wrong
  code far more often than single rounding's ties would. Each convolution's weight codes are
  therefore stored × ``2^k`` per output channel (k the largest that fits the filter's
  container, ±7 for INT4, ±127 for INT8, and keeps the int32 accumulator bound) with the
  weight step ÷ ``2^k``: the first rounding is ``2^k`` finer. The global average pool (LiteRT's
  MEAN rounds the same way on a sum of a few codes) becomes a depthwise conv over the whole
  H×W with weights ``2^GAP_WEIGHT_BITS`` (INT8), and so does every requantization (QUANTIZE,
  the same double rounding on single codes; XNNPACK's rounds M itself) as a 1×1 one. The
  final linear is unchanged.

  ``int8_filters``: INT8 containers for every conv (more headroom for k; the TFLite export's
  default), else INT4 for ``w_bits <= 4`` (see :func:`int4_filter`).
  """
  if igraph.rounding == "litert":
    return igraph
  nodes = []
  for n in igraph.nodes:
    if isinstance(n.node, GConv):
      n = _scaled(n, int8_filters)
    elif isinstance(n.node, GGlobalAvgPool) or (
      isinstance(n.node, GRequant) and len(n.in_shape) == 3
    ):
      n = _as_depthwise(n)
    nodes.append(n)
  return dataclasses.replace(igraph, nodes=tuple(nodes), rounding="litert")


# --- the "ort" form: what ONNX Runtime computes, exactly ------------------------------------

FLOAT32_EXACT = 1 << 24  # every integer of smaller magnitude is exact in float32
ORT_ADD_WEIGHT = 1 << 15  # an add's larger input weight: |a·w_a + b·w_b| < 255·2^16 < 2^24


def float_accumulator_bound(n: IntNode) -> int:
  """The largest ``|Σ x·w| + |b|`` a conv's input grid allows (every partial sum is below it)."""
  in_max = max(abs(q) for q in n.in_grid.qrange())
  per_channel = np.abs(n.weight.reshape(n.weight.shape[0], -1).astype(np.int64)).sum(1) * in_max
  return int((per_channel + np.abs(n.bias.astype(np.int64))).max())


def ort_fused(n: IntNode) -> bool:
  """Whether the ONNX export writes this conv for ORT's QLinearConv (INT8 weights, the
  trained steps) rather than as an exact float32 Conv of integer values (INT4 weights, unit
  steps): 8-bit weights, or an accumulator float32 could not hold exactly."""
  return n.node.w_bits > INT4_MAX_BITS or float_accumulator_bound(n) >= FLOAT32_EXACT


def _reciprocal(real: np.ndarray) -> np.ndarray:
  return np.atleast_1d((1.0 / np.asarray(real, np.float64)).astype(np.float32))


def _ort_node(n: IntNode) -> IntNode:
  node = n.node
  if isinstance(node, GConv) and ort_fused(n):
    product = np.float32(n.in_grid.step) * np.asarray(node.w_step, np.float32)
    scale = np.atleast_1d(product / np.float32(node.out.step)).astype(np.float32)
    return dataclasses.replace(n, ort=OrtRequant(scale, divide=False))
  if isinstance(node, GConv | GRequant | GGlobalAvgPool):
    return dataclasses.replace(n, ort=OrtRequant(_reciprocal(n.requant.real), divide=True))
  if isinstance(node, GAdd):
    s_a, s_b = (float(_f64(g.step)) for g in n.add_grids)
    largest = max(s_a, s_b)
    weights = (round(ORT_ADD_WEIGHT * s_a / largest), round(ORT_ADD_WEIGHT * s_b / largest))
    scale = np.float32(ORT_ADD_WEIGHT * float(_f64(node.out.step)) / largest)
    return dataclasses.replace(n, ort=OrtRequant(np.atleast_1d(scale), True, weights))
  return n


def as_ort(igraph: IntegerGraph) -> IntegerGraph:
  """The ``"ort"`` form: each node requantized as ONNX Runtime does it in the ONNX export
  (:class:`OrtRequant`; :mod:`qdarts.export.graph_onnx` writes exactly these scales).

  ORT requantizes in float32, not in fixed point, so the integer model in single rounding
  and ORT part where a value lies within float32 rounding of a tie — rarely, but a code that
  differs propagates through a deep DAG. The export makes every other float operation exact
  (integer values below 2^24 on unit steps), and this form computes the one rounding left,
  as ORT does: the ONNX model then agrees with it code for code at ``"extended"`` and
  ``"all"`` (at ``"disabled"`` and ``"basic"`` ORT runs the 8-bit convs in float).
  """
  if igraph.rounding == "ort":
    return igraph
  nodes = tuple(_ort_node(n) for n in igraph.nodes)
  return dataclasses.replace(igraph, nodes=nodes, rounding="ort")


def to_integer_graph(graph: QuantizedGraph, *, rounding: str = "single") -> IntegerGraph:
  """The integer form of a graph (see the module docstring).

  Raises:
    ValueError: an unknown rounding, an invalid graph, an int32 overflow or a multiplier
      without fixed point (naming the node).
  """
  if rounding not in ROUNDINGS:
    raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
  info = validate_graph(graph)
  nodes = tuple(
    _int_node(node, [info[i] for i in node.inputs], info[node.name]) for node in graph.nodes
  )
  shape = tuple(int(d) for d in graph.input_shape)
  if rounding in ("litert", "ort"):
    igraph = IntegerGraph(nodes, shape, graph.input_grid, graph.num_classes, "single",
                          dict(graph.metadata))  # fmt: skip
    return as_litert(igraph) if rounding == "litert" else as_ort(igraph)
  return IntegerGraph(
    nodes, shape, graph.input_grid, graph.num_classes, rounding, dict(graph.metadata)
  )


# --- the integer forward pass ---------------------------------------------------------------


def ruy_multiply(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """gemmlowp's doubling high multiply, then a rounding right shift with ties toward +∞."""
  x, multiplier, shift = (np.asarray(v, np.int64) for v in (x, multiplier, shift))
  left = np.left_shift(np.int64(1), np.maximum(shift, 0))
  high = _saturating_rounding_doubling_high_mul(
    np.clip(x * left, _INT32_MIN, _INT32_MAX), multiplier
  )
  right = np.maximum(-shift, 0)
  half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
  return np.clip((high + half) >> right, _INT32_MIN, _INT32_MAX)


def _apply(rq: IntRequant, acc: np.ndarray, rounding: str, conv: bool = False) -> np.ndarray:
  if rounding == "litert" and conv:
    y = ruy_multiply(acc, rq.multiplier, rq.shift)
  else:
    mode = "double" if rounding == "litert" else rounding
    y = multiply_by_quantized_multiplier(acc, rq.multiplier, rq.shift, mode)
  return np.clip(y.astype(np.int64), rq.lo, rq.hi).astype(np.int32)


def quantize_graph_input(igraph: IntegerGraph, x: np.ndarray) -> np.ndarray:
  """int32 codes ``clip(round(x / s), 0, 2^b − 1)`` of ``(N, H, W, C)`` float inputs (in the
  ``"ort"`` form the float32 quotient, as ORT's QuantizeLinear)."""
  x = np.asarray(x, np.float64)
  if x.ndim != 4 or x.shape[1:] != igraph.input_shape:
    raise ValueError(f"expected input (N, *{igraph.input_shape}), got {x.shape}")
  if igraph.rounding == "ort":
    codes = np.rint(x.astype(np.float32) / np.float32(igraph.input_grid.step))
  else:
    codes = np.round(x / _f64(igraph.input_grid.step))
  return np.clip(codes, *igraph.input_grid.qrange()).astype(np.int32)


def add_graph_codes(n: IntNode, a: np.ndarray, b: np.ndarray, rounding: str) -> np.ndarray:
  """TFLite's int8 ADD (zero points 0) on the codes of both inputs."""
  (m_a, s_a), (m_b, s_b) = n.add_inputs
  rounding = "double" if rounding == "litert" else rounding
  scale = np.int64(1) << ADD_LEFT_SHIFT
  total = multiply_by_quantized_multiplier(a.astype(np.int64) * scale, m_a, s_a, rounding)
  total = total.astype(np.int64) + multiply_by_quantized_multiplier(
    b.astype(np.int64) * scale, m_b, s_b, rounding
  )
  return _apply(n.requant, total, rounding)


def avg_pool_codes(x: np.ndarray, stride: int) -> np.ndarray:
  """``(Σc + sign·n//2) / n`` truncated toward zero over the n real pixels of each window."""
  total, count = pool3x3(x, stride, "sum")
  total, count = total.astype(np.int64), count.astype(np.int64)
  return (np.sign(total) * ((np.abs(total) + count // 2) // count)).astype(np.int32)


def _conv_accumulators(n: IntNode, x: np.ndarray) -> np.ndarray:
  """int64 ``b[c] + Σ x·w[c]`` of a conv node (exact)."""
  node, kernel = n.node, np.moveaxis(n.weight, 0, -1).astype(np.int64)
  acc = conv2d(x.astype(np.int64), kernel, node.stride, node.padding, node.dilation,
               node.groups, node.offset)  # fmt: skip
  return acc + n.bias


def _ort_forward(n: IntNode, ins: list[np.ndarray]) -> np.ndarray:
  """A node in the ``"ort"`` form: its exact integer value, then :class:`OrtRequant`."""
  node, ort = n.node, n.ort
  if isinstance(node, GConv):
    value = _conv_accumulators(n, ins[0])
  elif isinstance(node, GAdd):
    (w_a, w_b), (a, b) = ort.add_weights, ins
    value = a.astype(np.int64) * w_a + b.astype(np.int64) * w_b
  elif isinstance(node, GGlobalAvgPool):
    value = ins[0].astype(np.int64).sum(axis=(1, 2))
  else:
    value = ins[0].astype(np.int64)
  if np.abs(value).max(initial=0) >= FLOAT32_EXACT:
    raise ValueError(f"node {node.name!r}: a value beyond float32's exact integers")
  v = value.astype(np.float32)
  y = v / ort.scale if ort.divide else v * ort.scale
  return np.clip(np.rint(y), n.requant.lo, n.requant.hi).astype(np.int32)


def _int_forward(n: IntNode, ins: list[np.ndarray], rounding: str) -> np.ndarray:
  node = n.node
  if rounding == "ort" and n.ort is not None:
    return _ort_forward(n, ins)
  if isinstance(node, GConv):
    return _apply(n.requant, _conv_accumulators(n, ins[0]), rounding, conv=True)
  if isinstance(node, GRequant):
    if n.weight is not None:  # the "litert" form: a 1×1 depthwise conv
      acc = ins[0].astype(np.int64) * n.weight[:, 0, 0, 0].astype(np.int64)
      return _apply(n.requant, acc + n.bias, rounding, conv=True)
    return _apply(n.requant, ins[0], rounding)
  if isinstance(node, GAdd):
    return add_graph_codes(n, ins[0], ins[1], rounding)
  if isinstance(node, GConcat):
    return np.concatenate(ins, axis=-1)
  if isinstance(node, GMaxPool):
    return pool3x3(ins[0], node.stride, "max")[0].astype(np.int32)
  if isinstance(node, GAvgPool):
    return avg_pool_codes(ins[0], node.stride)
  if isinstance(node, GGlobalAvgPool):
    if n.weight is not None:  # the "litert" form: a depthwise conv over the whole H×W
      acc = np.einsum("nhwc,chw->nc", ins[0].astype(np.int64), n.weight[..., 0].astype(np.int64))
      return _apply(n.requant, acc + n.bias, rounding, conv=True)
    return _apply(n.requant, ins[0].astype(np.int64).sum(axis=(1, 2)), rounding)
  return (ins[0].astype(np.int64) @ n.weight.T.astype(np.int64) + n.bias).astype(np.int32)


def integer_graph_trace(graph: QuantizedGraph | IntegerGraph, x: np.ndarray) -> dict:
  """Every tensor's int32 codes by name (``"input"`` first); the last node's entry holds the
  int32 accumulators of the final linear (bias included)."""
  igraph = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph)
  codes = {INPUT: quantize_graph_input(igraph, x)}
  for n in igraph.nodes:
    codes[n.node.name] = _int_forward(n, [codes[i] for i in n.node.inputs], igraph.rounding)
  return codes


def integer_graph_forward(graph: QuantizedGraph | IntegerGraph, x: np.ndarray) -> np.ndarray:
  """float32 logits ``acc · s_in · s_w[c]`` of the integer model."""
  igraph = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph)
  acc = integer_graph_trace(igraph, x)[igraph.nodes[-1].node.name]
  return (acc.astype(np.float64) * igraph.logit_scale.astype(np.float64)).astype(np.float32)


def rounding_differences(graph: QuantizedGraph | IntegerGraph, x: np.ndarray,
                         rounding: str = "litert") -> dict[str, float]:  # fmt: skip
  """Per node kind, the fraction of output codes where ``rounding`` differs from single
  rounding, every node fed the single-rounding model's codes (no propagation): how far a
  runtime's requantization alone moves a trained network (the final linear left out)."""
  single = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph)
  single = dataclasses.replace(single, rounding="single")
  if rounding == "litert":
    other = as_litert(single)
  elif rounding == "ort":
    other = as_ort(single)
  else:
    other = dataclasses.replace(single, rounding=rounding)
  codes = integer_graph_trace(single, x)
  differ: dict[str, int] = {}
  total: dict[str, int] = {}
  for n, m in zip(single.nodes[:-1], other.nodes[:-1], strict=True):
    y = _int_forward(m, [codes[i] for i in n.node.inputs], other.rounding)
    kind = type(n.node).__name__
    differ[kind] = differ.get(kind, 0) + int(np.sum(y != codes[n.node.name]))
    total[kind] = total.get(kind, 0) + y.size
  return {kind: differ[kind] / total[kind] for kind in total}
