"""A quantized DAG (a DARTS final network) and its fake-quant reference forward (numpy only).

A chain (:mod:`qdarts.export.ir`) quantizes each layer's *input*. A DAG quantizes each node's
*output* instead: every tensor between ops carries a :class:`Grid` — a step s, bits b and a
sign — and holds values s·c with integer codes c,

.. math::
  c = \\operatorname{clip}(\\operatorname{round}(v / s), Q_n, Q_p), \\quad
  (Q_n, Q_p) = (0, 2^b - 1) \\text{ unsigned}, \\; (-2^{b-1}, 2^{b-1} - 1) \\text{ signed},

round half to even (``np.round``, as ``jnp.round`` and ONNX QuantizeLinear). A ReLU before an
unsigned grid is implicit in its clamp at 0: the nodes have no ReLU flag. Weights are signed,
narrow range, per output channel, as in :mod:`qdarts.export.ir`; a BatchNorm is folded into
the conv before it (weights, per-channel steps and bias; :mod:`qdarts.export.from_darts`).

Nodes, each reading named tensors (``"input"`` is the quantized network input):

- :class:`GConv` — conv (stride, explicit padding, dilation, groups; optional crop of the first
  ``offset`` rows and columns) + bias, quantized to its output grid;
- :class:`GRequant` — the input's values put on another grid (ReLU → requantization);
- :class:`GAdd` — the sum of two tensors on their own grids, quantized to the output grid;
- :class:`GConcat` — channel concat; every input must be on the output's grid (no
  requantization: a copy of codes in every runtime);
- :class:`GMaxPool`, :class:`GAvgPool` — 3×3, padding 1, stride 1 or 2, on the input's grid;
  the average counts only real pixels (``count_include_pad=False``) and rounds half away
  from zero (TFLite's integer AVERAGE_POOL_2D);
- :class:`GGlobalAvgPool` — the mean over H and W, quantized to the output grid;
- :class:`GLinear` — the last node, float logits ``x̂ @ Ŵ + b`` (no output grid).

Identity ops are not nodes: a consumer reads the tensor itself.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np

from qdarts.export.ir import _fake_quant_weight

INPUT = "input"
_W_BITS = range(2, 9)


@dataclasses.dataclass(frozen=True)
class Grid:
  """The quantizer of one tensor: values ``step·c`` with codes ``c`` in :meth:`qrange`."""

  step: float
  bits: int
  signed: bool

  def qrange(self) -> tuple[int, int]:
    if self.signed:
      return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
    return 0, 2**self.bits - 1


@dataclasses.dataclass(frozen=True)
class GConv:
  """``Q_out(conv(x̂[offset:, offset:], Ŵ) + b)``; ``weight`` HWIO ``(kh, kw, cin/g, cout)``,
  ``bias``/``w_step`` ``(cout,)``, ``padding`` ``((top, bottom), (left, right))``."""

  name: str
  inputs: tuple[str]
  weight: np.ndarray
  bias: np.ndarray
  w_step: np.ndarray
  w_bits: int
  out: Grid
  stride: int = 1
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  dilation: int = 1
  groups: int = 1
  offset: int = 0


@dataclasses.dataclass(frozen=True)
class GRequant:
  """``Q_out(x)``: ReLU → requantization when ``out`` is unsigned and ``x`` signed."""

  name: str
  inputs: tuple[str]
  out: Grid


@dataclasses.dataclass(frozen=True)
class GAdd:
  """``Q_out(â + b̂)`` of two tensors of one shape."""

  name: str
  inputs: tuple[str, str]
  out: Grid


@dataclasses.dataclass(frozen=True)
class GConcat:
  """Channel concat of tensors that all lie on ``out``."""

  name: str
  inputs: tuple[str, ...]
  out: Grid


@dataclasses.dataclass(frozen=True)
class GMaxPool:
  """3×3 max pool, padding 1 (−∞), on the input's grid."""

  name: str
  inputs: tuple[str]
  stride: int


@dataclasses.dataclass(frozen=True)
class GAvgPool:
  """3×3 average pool, padding 1 not counted, rounded half away from zero on the input's grid."""

  name: str
  inputs: tuple[str]
  stride: int


@dataclasses.dataclass(frozen=True)
class GGlobalAvgPool:
  """``Q_out(mean_{H,W} x̂)``: ``(N, H, W, C) → (N, C)``."""

  name: str
  inputs: tuple[str]
  out: Grid


@dataclasses.dataclass(frozen=True)
class GLinear:
  """The logits ``x̂ @ Ŵ + b``; ``weight`` ``(cin, cout)``, ``bias``/``w_step`` ``(cout,)``."""

  name: str
  inputs: tuple[str]
  weight: np.ndarray
  bias: np.ndarray
  w_step: np.ndarray
  w_bits: int


GNode = GConv | GRequant | GAdd | GConcat | GMaxPool | GAvgPool | GGlobalAvgPool | GLinear


@dataclasses.dataclass(frozen=True)
class QuantizedGraph:
  """A quantized DAG in topological order; the last node is the one :class:`GLinear`.

  Attributes:
    nodes: the nodes; each reads ``"input"`` or earlier nodes' outputs.
    input_shape: ``(H, W, C)`` of one NHWC sample.
    input_grid: the quantizer of the network input (unsigned).
    num_classes: the logits' length.
    metadata: string key/value pairs recorded into exported models.
  """

  nodes: tuple[GNode, ...]
  input_shape: tuple[int, int, int]
  input_grid: Grid
  num_classes: int
  metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """Shape ``(H, W, C)`` (or ``(C,)`` after the global pool) and grid of a named tensor."""

  shape: tuple[int, ...]
  grid: Grid | None


def pool_out_size(size: int, stride: int) -> int:
  """3×3, padding 1: ``(size + 2 − 3) // stride + 1``."""
  return (size - 1) // stride + 1


def conv_out_shape(node: GConv, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
  h, w = in_shape[0] - node.offset, in_shape[1] - node.offset
  kh, kw, _, cout = np.shape(node.weight)
  (top, bottom), (left, right) = node.padding
  span_h, span_w = node.dilation * (kh - 1) + 1, node.dilation * (kw - 1) + 1
  return (
    (h + top + bottom - span_h) // node.stride + 1,
    (w + left + right - span_w) // node.stride + 1,
    cout,
  )


def validate_graph(graph: QuantizedGraph) -> dict[str, TensorInfo]:
  """Checks names, inputs, grids, bits and shapes; returns every tensor's :class:`TensorInfo`.

  Raises:
    ValueError: naming the first offending node (``node 'cell0.node1': …``).
  """
  _check_grid("input", graph.input_grid)
  if graph.input_grid.signed:
    raise ValueError("the input grid must be unsigned")
  info = {INPUT: TensorInfo(tuple(int(d) for d in graph.input_shape), graph.input_grid)}
  if not graph.nodes or not isinstance(graph.nodes[-1], GLinear):
    raise ValueError("the graph must end with a GLinear producing the logits")
  for index, node in enumerate(graph.nodes):
    where = f"node {getattr(node, 'name', index)!r}"
    if not isinstance(node, GNode):
      raise ValueError(f"{where}: unsupported node type {type(node).__name__}")
    if not node.name or node.name in info:
      raise ValueError(f"{where}: node names must be unique, non-empty and not 'input'")
    missing = [i for i in node.inputs if i not in info]
    if missing:
      raise ValueError(f"{where}: reads {missing[0]!r}, which no earlier node produces")
    if isinstance(node, GLinear) and index != len(graph.nodes) - 1:
      raise ValueError(f"{where}: the GLinear must be the last node")
    ins = [info[i] for i in node.inputs]
    info[node.name] = _node_info(where, node, ins)
  if info[graph.nodes[-1].name].shape != (graph.num_classes,):
    raise ValueError(f"the logits have shape {info[graph.nodes[-1].name].shape}, not "
                     f"({graph.num_classes},)")  # fmt: skip
  return info


def _node_info(where: str, node: GNode, ins: list[TensorInfo]) -> TensorInfo:
  arity = {GAdd: 2, GConcat: len(ins) or -1}.get(type(node), 1)
  if len(ins) != arity:
    raise ValueError(f"{where}: expects {arity} input(s), got {len(ins)}")
  spatial = all(len(t.shape) == 3 for t in ins)
  if not spatial and not isinstance(node, GLinear):
    raise ValueError(f"{where}: needs (H, W, C) inputs")
  if hasattr(node, "out"):
    _check_grid(where, node.out)
  if isinstance(node, GConv):
    return TensorInfo(_check_conv(where, node, ins[0].shape), node.out)
  if isinstance(node, GRequant):
    return TensorInfo(ins[0].shape, node.out)
  if isinstance(node, GAdd):
    if ins[0].shape != ins[1].shape:
      raise ValueError(f"{where}: adds shapes {ins[0].shape} and {ins[1].shape}")
    return TensorInfo(ins[0].shape, node.out)
  if isinstance(node, GConcat):
    if any(t.grid != node.out for t in ins) or len({t.shape[:2] for t in ins}) != 1:
      raise ValueError(f"{where}: every input must have the output's grid and H, W")
    return TensorInfo((*ins[0].shape[:2], sum(t.shape[2] for t in ins)), node.out)
  if isinstance(node, GMaxPool | GAvgPool):
    if node.stride not in (1, 2):
      raise ValueError(f"{where}: stride must be 1 or 2")
    h, w, c = ins[0].shape
    return TensorInfo((pool_out_size(h, node.stride), pool_out_size(w, node.stride), c),
                      ins[0].grid)  # fmt: skip
  if isinstance(node, GGlobalAvgPool):
    return TensorInfo((ins[0].shape[2],), node.out)
  if ins[0].shape != (np.shape(node.weight)[0],) or np.ndim(node.weight) != 2:
    raise ValueError(f"{where}: weight {np.shape(node.weight)} does not fit input {ins[0].shape}")
  _check_weights(where, node, np.shape(node.weight)[1])
  return TensorInfo((np.shape(node.weight)[1],), None)


def _check_grid(where: str, grid: Grid) -> None:
  if not isinstance(grid, Grid) or grid.bits not in range(1, 9):
    raise ValueError(f"{where}: a grid needs bits in 1..8, got {grid!r}")
  if not (np.isfinite(grid.step) and grid.step > 0):
    raise ValueError(f"{where}: a grid step must be finite and positive, got {grid.step!r}")


def _check_weights(where: str, node: GConv | GLinear, cout: int) -> None:
  if node.w_bits not in _W_BITS:
    raise ValueError(f"{where}: w_bits must be an int in 2..8, got {node.w_bits!r}")
  for field in ("w_step", "bias"):
    value = np.asarray(getattr(node, field))
    if value.shape != (cout,) or not np.all(np.isfinite(value)):
      raise ValueError(f"{where}: {field} must be finite with shape ({cout},)")
  if not np.all(np.asarray(node.w_step) > 0) or not np.all(np.isfinite(node.weight)):
    raise ValueError(f"{where}: w_step must be positive and weight finite")


def _check_conv(where: str, node: GConv, shape: tuple[int, ...]) -> tuple[int, int, int]:
  if np.ndim(node.weight) != 4:
    raise ValueError(f"{where}: weight must be HWIO (kh, kw, cin // groups, cout)")
  _, _, cg, cout = np.shape(node.weight)
  g = node.groups
  if g < 1 or shape[2] % g or cout % g or cg * g != shape[2]:
    raise ValueError(f"{where}: weight {np.shape(node.weight)} with groups={g} does not fit "
                     f"{shape[2]} input channels")  # fmt: skip
  _check_weights(where, node, cout)
  pads = [p for side in node.padding for p in side]
  if node.stride < 1 or node.dilation < 1 or node.offset < 0 or min(pads) < 0:
    raise ValueError(f"{where}: stride and dilation must be >= 1, offset and padding >= 0")
  out = conv_out_shape(node, shape)
  if min(out[:2]) < 1:
    raise ValueError(f"{where}: the kernel does not fit the padded input {shape}")
  return out


# --- numpy kernels, shared with the integer model ------------------------------------------


def conv2d(
  x: np.ndarray, w: np.ndarray, stride: int, padding, dilation: int, groups: int, offset: int
) -> np.ndarray:
  """Grouped, dilated 2-D cross-correlation, one einsum per kernel tap (tiny shapes).

  Args:
    x: ``(N, H, W, cin)``; the first ``offset`` rows and columns are dropped first.
    w: ``(kh, kw, cin // groups, cout)``.
    stride, dilation, groups: as ONNX Conv; padding ``((top, bottom), (left, right))`` zeros.

  Returns:
    ``(N, Ho, Wo, cout)`` in ``x``'s and ``w``'s result type.
  """
  x = x[:, offset:, offset:]
  kh, kw, cg, cout = w.shape
  xp = np.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  n, hp, wp, _ = xp.shape
  ho = (hp - dilation * (kh - 1) - 1) // stride + 1
  wo = (wp - dilation * (kw - 1) - 1) // stride + 1
  wg = w.reshape(kh, kw, cg, groups, cout // groups)
  y = np.zeros((n, ho, wo, groups, cout // groups), np.result_type(x, w))
  for i in range(kh):
    for j in range(kw):
      r, c = i * dilation, j * dilation
      patch = xp[:, r : r + stride * (ho - 1) + 1 : stride, c : c + stride * (wo - 1) + 1 : stride]
      y += np.einsum("nhwgc,cgo->nhwgo", patch.reshape(n, ho, wo, groups, cg), wg[i, j])
  return y.reshape(n, ho, wo, cout)


def pool3x3(x: np.ndarray, stride: int, op: str) -> tuple[np.ndarray, np.ndarray]:
  """3×3 windows with padding 1: ``("max", ·)`` → (max, None) with −∞ padding;
  ``("sum", ·)`` → (sum of real pixels, their count ``(1, Ho, Wo, 1)``)."""
  n, h, w, c = x.shape
  ho, wo = pool_out_size(h, stride), pool_out_size(w, stride)
  fill = -np.inf if op == "max" else 0
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
  ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [
    (xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride],
     ones[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride])
    for i in range(3) for j in range(3)
  ]  # fmt: skip
  if op == "max":
    return np.max([t for t, _ in taps], axis=0), None
  return np.sum([t for t, _ in taps], axis=0), np.sum([o for _, o in taps], axis=0)


def round_half_away(v: np.ndarray) -> np.ndarray:
  return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --- the fake-quant reference ------------------------------------------------------------


def fake_quant(v: np.ndarray, grid: Grid) -> np.ndarray:
  """``s·clip(round(v/s), Q_n, Q_p)`` in float64 with the exported float32 step."""
  step = float(np.float32(grid.step))
  return step * np.clip(np.round(np.asarray(v, np.float64) / step), *grid.qrange())


def node_bias(node: GConv | GLinear, in_step: float, int32_bias: bool) -> np.ndarray:
  """The float bias, or (``int32_bias``) its value on the accumulator grid s_in·s_w[c]."""
  if not int32_bias:
    return np.asarray(node.bias, np.float64)
  scale = (np.float32(in_step) * np.asarray(node.w_step, np.float32)).astype(np.float64)
  return np.round(np.asarray(node.bias, np.float64) / scale) * scale


def reference_forward(
  graph: QuantizedGraph, x_nhwc: np.ndarray, *, int32_bias: bool = False, trace: bool = False
):
  """Float64 fake-quant forward pass of the DAG: the semantics every integer export reproduces.

  Args:
    graph: a valid graph.
    x_nhwc: ``(N, H, W, C)`` float inputs.
    int32_bias: round biases to the int32 accumulator grid, as the integer exports do.
    trace: also return every tensor's values, by name.

  Returns:
    ``(N, num_classes)`` float32 logits, or ``(logits, {name: float64 values})``.
  """
  info = validate_graph(graph)
  x = np.asarray(x_nhwc, np.float64)
  if x.ndim != 4 or x.shape[1:] != info[INPUT].shape:
    raise ValueError(f"expected input (N, *{info[INPUT].shape}), got {x.shape}")
  values = {INPUT: fake_quant(x, graph.input_grid)}
  for node in graph.nodes:
    ins = [values[i] for i in node.inputs]
    in_grid = info[node.inputs[0]].grid
    values[node.name] = _reference_node(node, ins, in_grid, int32_bias)
  logits = values[graph.nodes[-1].name].astype(np.float32)
  return (logits, values) if trace else logits


def _reference_node(node: GNode, ins: list[np.ndarray], in_grid: Grid, int32_bias: bool):
  if isinstance(node, GConv):
    wq = _fake_quant_weight(node.weight, node.w_step, node.w_bits)
    acc = conv2d(ins[0], wq, node.stride, node.padding, node.dilation, node.groups, node.offset)
    return fake_quant(acc + node_bias(node, in_grid.step, int32_bias), node.out)
  if isinstance(node, GRequant):
    return fake_quant(ins[0], node.out)
  if isinstance(node, GAdd):
    return fake_quant(ins[0] + ins[1], node.out)
  if isinstance(node, GConcat):
    return np.concatenate(ins, axis=-1)
  if isinstance(node, GMaxPool):
    return pool3x3(ins[0], node.stride, "max")[0]
  if isinstance(node, GAvgPool):
    step = float(np.float32(in_grid.step))
    total, count = pool3x3(np.round(ins[0] / step), node.stride, "sum")
    return step * round_half_away(total / count)
  if isinstance(node, GGlobalAvgPool):
    return fake_quant(ins[0].mean(axis=(1, 2)), node.out)
  wq = _fake_quant_weight(node.weight, node.w_step, node.w_bits)
  return ins[0] @ wq + node_bias(node, in_grid.step, int32_bias)
