"""TFLite (LiteRT) export of a :class:`~qdarts.export.ir.QuantizedChain`, and a LiteRT runner.

The flatbuffer is written with the object API of ``ai_edge_litert.schema_py_generated`` (no
TensorFlow). It is NHWC, like the project: the input ``"input"`` is float32 ``[N, H, W, C]`` and
the output ``"logits"`` float32 ``[N, num_classes]``, both with a dynamic batch
(``shape_signature`` ``-1``). Between the two every tensor is int8 and every op integer::

  input → QUANTIZE [→ MINIMUM] → ([PAD →] CONV_2D | DEPTHWISE_CONV_2D | ADD [→ MINIMUM])*
        → MEAN [→ MINIMUM] → FULLY_CONNECTED → DEQUANTIZE → logits

Float I/O, so a caller feeds the inputs it gives :func:`~qdarts.export.ir.reference_forward`
and the first layer's quantizer is part of the model (as in the ONNX export).

Activations. The project's activation quantizers are unsigned, ``x̂ = s_a·u`` with codes
``u ∈ [0, 2^b_a − 1]``; a TFLite int8 tensor means ``x̂ = s·(q − z)``. Every activation tensor
stores ``q = u − 128`` with scale ``s_a`` and zero point ``z = −128``: the same real values in
one int8 container for any ``b_a ≤ 8``. The tensor an op writes carries the quantization of the
*next* layer's input quantizer, so TFLite's requantization of the int32 accumulator is that
quantizer's ``round(·/s_a)``, and int8 saturation at ``q = −128`` is its clip at ``u = 0``
(which is also the ReLU: a convolution's fused ``RELU`` is recorded, the clamp is the zero
point's). Below 8 bits the upper clip ``u ≤ 2^b_a − 1`` is a MINIMUM with an int8 constant
``2^b_a − 1 − 128`` of the same quantization (TFLite's int8 MINIMUM compares raw codes). A fused
RELU6 / RELU_N1_TO_1 cannot express it: their bounds are ``6/s`` and ``1/s`` codes, set by the
learned step, not by the bits.

Weights and biases. Convolution filters are OHWI with per-channel scales ``s_w``
(``quantized_dimension`` 0); depthwise filters are ``[1, kh, kw, cout]`` with
``quantized_dimension`` 3 (DEPTHWISE_CONV_2D's output-channel axis); the classifier's weights
are ``[cout, cin]``, per channel along axis 0. Zero points are 0 (symmetric, narrow range
``±(2^(b_w−1) − 1)``). Filters are INT8 by default; with ``int8_filters=False`` a filter with
``w_bits ≤ 4`` is stored as TFLite INT4 (tensor type 17, two codes per byte, low nibble first,
in the tensor's C order); LiteRT 2.3's builtin CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
all take an INT4 filter (opcode versions 7, 7 and 10), XNNPACK none.
Biases are int32 codes ``round(b / (s_a·s_w[c]))`` with per-channel scale ``s_a·s_w[c]``.

Residual adds. A convolution feeding a :class:`~qdarts.export.ir.QAdd` writes a signed int8
tensor (scale ``s_h``, zero point 0; a fused RELU clamps at its zero point); ADD takes the skip
layer's input tensor and that one and writes the next quantizer's tensor. LiteRT's int8 ADD is
the integer model's :func:`~qdarts.export.integer_model.add_codes` (left shift 20, double
rounding in the builtin kernels).

Pool and logits. The global average pool is MEAN over H and W (int8 in at the pool's step, int8
out at the classifier's input step; MEAN requantizes between them). The classifier's int8
output needs a scale the chain does not have: :func:`logit_quantization` maps the interval the
logits can reach onto the 256 codes, so nothing saturates; DEQUANTIZE gives float logits.

Metadata. ``model.metadata`` has one entry :data:`METADATA_NAME` whose buffer is a UTF-8 JSON
object: ``chain.metadata`` plus ``"qdarts.layers"`` (per layer ``name``, ``w_bits``, ``a_bits``
and the stored filter type ``"INT4"``/``"INT8"``) and ``"qdarts.logits"`` (``scale``,
``zero_point``). Tensor names are ``<layer>.in`` (the quantized input), ``<layer>.out`` (what a
layer writes, at the next quantizer), ``<layer>.clamp`` (after a MINIMUM), ``<layer>.w``,
``<layer>.b``.

.. note:: Rounding (measured on LiteRT 2.3.0; see ``tests/export/test_tflite_export.py``).
  The reference rounds ``acc·M`` once, half to even, with ``M = s_in·s_w/s_out``. LiteRT's
  builtin int8 kernels requantize in fixed point and round twice whenever ``M < 1/2``:
  ``round(acc·m)`` with ``m = M·2^e ∈ [1/2, 1)``, then a rounding shift by ``e`` (gemmlowp; in
  FULLY_CONNECTED the shift breaks ties toward +∞, which shows on negative logits). The first
  rounding moves a result by up to ``min(M, 1/4)`` of an output code, so given the same input
  codes a layer is within one code of the reference, and the project's integer model
  (:mod:`qdarts.export.integer_model`, ``rounding="double"``) reproduces every int8 activation
  of the builtin kernels exactly. With low-bit outputs (coarse steps, ``M`` near 1/2) one-code
  differences are frequent, and a one-code step of a 1- or 2-bit activation moves the next layer
  by many codes: end to end such chains differ from the reference on a few percent of the logit
  codes. The XNNPACK delegate (LiteRT's default) requantizes once, in float32, and reproduces
  the all-8-bit chain exactly, but it takes neither INT4 convolutions nor int8 MINIMUM, which
  then run on the builtin kernels. Filters are therefore INT8 by default (``int8_filters``):
  every conv then runs in XNNPACK (the MINIMUMs are exact either way).
"""

import dataclasses
import json
import os
import pathlib

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from qdarts.export.ir import (
  QAdd,
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  bias_codes,
  bias_scale,
  validate_chain,
)
from qdarts.run_dir import atomic_write_bytes
from quant.integer import pack_int4, weight_codes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_NAME = "qdarts"
ACT_ZERO_POINT = -128
INT4_MAX_BITS = 4
"""Filters of at most this many bits are stored as INT4 (unless INT8 is asked for), wider ones
as INT8."""


def filter_bits(w_bits: int, int8_filters: bool) -> int:
  """The container of a ``w_bits`` filter: 8, or 4 (INT4) where allowed and ``w_bits`` fits."""
  return 8 if int8_filters or w_bits > INT4_MAX_BITS else INT4_MAX_BITS


KERNELS = ("xnnpack", "builtin")
""":func:`run_tflite`'s kernel choices: LiteRT's default (XNNPACK delegate where it applies) or
the builtin kernels only (fixed-point requantization, rounding twice)."""

_SCHEMA_VERSION = 3
_FILE_IDENTIFIER = b"TFL3"
_INT32 = np.iinfo(np.int32)
_OP = fb.BuiltinOperator
_OPTIONS = fb.BuiltinOptions
_TYPE = fb.TensorType


@dataclasses.dataclass(frozen=True)
class _ActQuant:
  """An activation quantizer: step ``s_a`` and bits ``b_a``; unsigned (codes ``[0, 2^b − 1]``,
  int8 zero point −128) or, with ``zero_point=0``, a :class:`QAdd`'s signed int8 input."""

  step: float
  bits: int
  zero_point: int = ACT_ZERO_POINT

  def params(self) -> "fb.QuantizationParametersT":
    return _quantization([self.step], [self.zero_point])

  @property
  def qmax(self) -> int:
    """The int8 code of the largest unsigned code ``2^b − 1``."""
    return 2**self.bits - 1 + ACT_ZERO_POINT


def _quantization(scale, zero_point, axis: int = 0) -> "fb.QuantizationParametersT":
  q = fb.QuantizationParametersT()
  q.scale = [float(np.float32(s)) for s in scale]
  q.zeroPoint = [int(z) for z in zero_point]
  q.quantizedDimension = axis
  return q


class _Graph:
  """Accumulates the tensors, buffers and operators of one subgraph (buffer 0 is empty)."""

  def __init__(self) -> None:
    self.tensors: list[fb.TensorT] = []
    self.buffers: list[fb.BufferT] = [fb.BufferT()]
    self.operators: list[fb.OperatorT] = []
    self.opcodes: list[tuple[int, int]] = []  # (builtin code, version)

  def buffer(self, data: bytes) -> int:
    buf = fb.BufferT()
    buf.data = np.frombuffer(data, np.uint8)
    self.buffers.append(buf)
    return len(self.buffers) - 1

  def tensor(self, name: str, shape, dtype: int, quant=None, data: bytes | None = None) -> int:
    """Adds a tensor; ``shape[0] == -1`` marks the dynamic batch (stored as 1)."""
    t = fb.TensorT()
    t.name, t.type, t.quantization = name, dtype, quant
    t.shape = [max(int(d), 1) for d in shape]
    if len(shape) and shape[0] == -1:
      t.shapeSignature = [int(d) for d in shape]
    t.buffer = 0 if data is None else self.buffer(data)
    self.tensors.append(t)
    return len(self.tensors) - 1

  def act(self, name: str, shape, quant: _ActQuant) -> int:
    return self.tensor(name, shape, _TYPE.INT8, quant.params())

  def op(self, code: int, inputs, outputs, options_type=_OPTIONS.NONE, options=None) -> None:
    """Appends an operator; its opcode version follows from the type of its second input."""
    second = self.tensors[inputs[1]].type if len(inputs) > 1 else None
    key = (code, _op_version(code, second))
    if key not in self.opcodes:
      self.opcodes.append(key)
    op = fb.OperatorT()
    op.opcodeIndex = self.opcodes.index(key)
    op.inputs, op.outputs = list(inputs), list(outputs)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    self.operators.append(op)


def _op_version(code: int, filter_type: int | None) -> int:
  """The opcode version TFLite's converter writes for these ops on int8 activations.

  Per ``tensorflow/lite/tools/versioning/op_version.cc``: an INT4 filter needs CONV_2D and
  DEPTHWISE_CONV_2D version 7 and FULLY_CONNECTED version 10 (int8 filters: 3, 3 and 4); int8
  MEAN, MINIMUM, PAD and DEQUANTIZE are version 2; QUANTIZE from float32 and int8 RESHAPE are
  version 1.
  """
  if code in (_OP.CONV_2D, _OP.DEPTHWISE_CONV_2D):
    return 7 if filter_type == _TYPE.INT4 else 3
  if code == _OP.FULLY_CONNECTED:
    return 10 if filter_type == _TYPE.INT4 else 4
  return 1 if code in (_OP.QUANTIZE, _OP.RESHAPE) else 2


def _clamp_codes(g: _Graph, x: int, name: str, shape, quant: _ActQuant) -> int:
  """Enforces ``u ≤ 2^b − 1`` below 8 bits: MINIMUM with an int8 constant, same quantization."""
  if quant.bits >= 8:
    return x
  bound = g.tensor(f"{name}.qmax", [], _TYPE.INT8, quant.params(), np.int8(quant.qmax).tobytes())
  out = g.act(f"{name}.clamp", shape, quant)
  g.op(_OP.MINIMUM, [x, bound], [out])
  return out


def _filter(g: _Graph, name: str, codes: np.ndarray, step, bits: int, axis: int) -> int:
  """The integer filter tensor, INT4 (packed low nibble first) for ``bits ≤ 4``, else INT8."""
  step = np.asarray(step, np.float32)
  quant = _quantization(step, np.zeros(step.size, np.int64), axis)
  if bits <= INT4_MAX_BITS:
    dtype, data = _TYPE.INT4, pack_int4(codes).tobytes()
  else:
    dtype, data = _TYPE.INT8, codes.astype(np.int8).tobytes()
  return g.tensor(f"{name}.w", codes.shape, dtype, quant, data)


def _bias(g: _Graph, layer: QConv | QLinear) -> int:
  """int32 codes ``round(b / (s_a·s_w[c]))`` with per-channel scale ``s_a·s_w[c]``."""
  codes = bias_codes(layer)
  if codes.min(initial=0) < _INT32.min or codes.max(initial=0) > _INT32.max:
    raise ValueError(f"layer {layer.name!r}: bias / (in_step * w_step) overflows int32")
  quant = _quantization(bias_scale(layer), np.zeros(codes.size, np.int64))
  data = codes.astype(np.int32).tobytes()
  return g.tensor(f"{layer.name}.b", codes.shape, _TYPE.INT32, quant, data)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TFLite's SAME padding: ``out = ceil(size/stride)``, an odd pixel at the end."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _padding(g: _Graph, layer: QConv, x: int, shape, quant: _ActQuant):
  """``(padding, x, shape)``: VALID or SAME when they equal the explicit padding, else a PAD.

  PAD fills int8 tensors with their zero point −128, i.e. real 0, as the reference pads.
  """
  (top, bottom), (left, right) = layer.padding
  if top == bottom == left == right == 0:
    return fb.Padding.VALID, x, shape
  kh, kw = np.shape(layer.weight)[:2]
  same = [_same_pads(shape[1], kh, layer.stride), _same_pads(shape[2], kw, layer.stride)]
  if same == [(top, bottom), (left, right)]:
    return fb.Padding.SAME, x, shape
  pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
  paddings = g.tensor(f"{layer.name}.paddings", [4, 2], _TYPE.INT32, None, pads.tobytes())
  padded_shape = [shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3]]
  padded = g.act(f"{layer.name}.padded", padded_shape, quant)
  g.op(_OP.PAD, [x, paddings], [padded])
  return fb.Padding.VALID, padded, padded_shape


def _conv_op(layer: QConv, cin: int, codes: np.ndarray):
  """``(opcode, options_type, options, filter codes, quantized axis)`` for a convolution.

  ``codes`` are HWIO; CONV_2D wants OHWI, DEPTHWISE_CONV_2D ``[1, kh, kw, cout]``.
  """
  if layer.groups == 1:
    return _OP.CONV_2D, _OPTIONS.Conv2DOptions, fb.Conv2DOptionsT(), codes.transpose(3, 0, 1, 2), 0
  if layer.groups == cin:
    options = fb.DepthwiseConv2DOptionsT()
    options.depthMultiplier = codes.shape[3] // cin
    depthwise = codes.transpose(2, 0, 1, 3)
    return _OP.DEPTHWISE_CONV_2D, _OPTIONS.DepthwiseConv2DOptions, options, depthwise, 3
  raise ValueError(
    f"layer {layer.name!r}: TFLite has no convolution with groups={layer.groups} "
    f"(only 1 or groups == cin == {cin}, depthwise)"
  )


def _conv(g: _Graph, layer: QConv, x: int, shape, quant: _ActQuant, out_quant: _ActQuant,
          int8_filters: bool):  # fmt: skip
  """[PAD →] CONV_2D or DEPTHWISE_CONV_2D → the next quantizer [→ MINIMUM]."""
  codes = weight_codes(layer.weight, layer.w_step, layer.w_bits)  # HWIO
  code, options_type, options, codes, axis = _conv_op(layer, shape[3], codes)
  padding, x, shape = _padding(g, layer, x, shape, quant)
  kh, kw = codes.shape[1:3]
  if padding == fb.Padding.SAME:
    ho, wo = -(-shape[1] // layer.stride), -(-shape[2] // layer.stride)
  else:
    ho, wo = (shape[1] - kh) // layer.stride + 1, (shape[2] - kw) // layer.stride + 1
  options.padding, options.strideH, options.strideW = padding, layer.stride, layer.stride
  relu, none = fb.ActivationFunctionType.RELU, fb.ActivationFunctionType.NONE
  options.fusedActivationFunction = relu if layer.relu else none
  bits = filter_bits(layer.w_bits, int8_filters)
  weights = _filter(g, layer.name, codes, layer.w_step, bits, axis)
  out_shape = [-1, ho, wo, np.shape(layer.weight)[3]]
  y = g.act(f"{layer.name}.out", out_shape, out_quant)
  g.op(code, [x, weights, _bias(g, layer)], [y], options_type, options)
  return _clamp_codes(g, y, layer.name, out_shape, out_quant), out_shape


def _mean(g: _Graph, layer: QGlobalAvgPool, x: int, shape, out_quant: _ActQuant):
  """MEAN over H and W: ``(N, H, W, C) → (N, C)`` at the next quantizer [→ MINIMUM]."""
  axes = g.tensor(f"{layer.name}.axes", [2], _TYPE.INT32, None, np.int32([1, 2]).tobytes())
  out_shape = [-1, shape[3]]
  y = g.act(f"{layer.name}.out", out_shape, out_quant)
  options = fb.ReducerOptionsT()
  options.keepDims = False
  g.op(_OP.MEAN, [x, axes], [y], _OPTIONS.ReducerOptions, options)
  return _clamp_codes(g, y, layer.name, out_shape, out_quant), out_shape


def _add(g: _Graph, layer: QAdd, x: int, skip: int, shape, out_quant: _ActQuant):
  """ADD of the skip layer's int8 input tensor and ``x`` (int8, zero point 0) → the next
  quantizer [→ MINIMUM]. TFLite's int8 ADD rescales both inputs and requantizes the sum."""
  y = g.act(f"{layer.name}.out", shape, out_quant)
  options = fb.AddOptionsT()
  options.fusedActivationFunction = fb.ActivationFunctionType.NONE
  g.op(_OP.ADD, [skip, x], [y], _OPTIONS.AddOptions, options)
  return _clamp_codes(g, y, layer.name, shape, out_quant), shape


def _in_quant(layer) -> _ActQuant:
  """The quantization of a layer's input tensor."""
  if isinstance(layer, QAdd):
    return _ActQuant(layer.in_step, 8, zero_point=0)
  return _ActQuant(layer.in_step, layer.a_bits)


def logit_quantization(layer: QLinear) -> tuple[float, int]:
  """The int8 ``(scale, zero_point)`` of the logits: their reachable interval over 255 steps.

  With inputs ``x̂_i ∈ [0, x_max]``, ``x_max = s_a·(2^b_a − 1)``, logit ``c`` lies in
  ``[b_c + x_max·Σ_i min(Ŵ_ic, 0), b_c + x_max·Σ_i max(Ŵ_ic, 0)]`` (``b`` on its int32 grid).
  The union ``[lo, hi]`` of these intervals, widened to contain 0, is spread over 254 steps
  (one spare for the rounded zero point), so no logit saturates.

  Args:
    layer: the classifier.

  Returns:
    ``(scale, zero_point)``: a float32-representable scale and a zero point in ``[−128, 127]``.
  """
  codes = weight_codes(layer.weight, layer.w_step, layer.w_bits).astype(np.float64)
  w_hat = codes * np.asarray(layer.w_step, np.float32).astype(np.float64)  # (cin, cout)
  x_max = float(np.float32(layer.in_step)) * (2**layer.a_bits - 1)
  bias = bias_codes(layer) * bias_scale(layer).astype(np.float64)
  lo = min(float(np.min(bias + x_max * np.minimum(w_hat, 0).sum(0))), 0.0)
  hi = max(float(np.max(bias + x_max * np.maximum(w_hat, 0).sum(0))), 0.0)
  scale = float(np.float32(max(hi - lo, float(np.finfo(np.float32).tiny)) / 254))
  zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
  return scale, zero_point


def _linear(g: _Graph, layer: QLinear, x: int, int8_filters: bool) -> int:
  """FULLY_CONNECTED ``(N, cin) → (N, cout)`` int8 logits, then DEQUANTIZE to float32."""
  codes = weight_codes(layer.weight, layer.w_step, layer.w_bits).T  # (cout, cin)
  weights = _filter(g, layer.name, codes, layer.w_step, filter_bits(layer.w_bits, int8_filters), 0)
  scale, zero_point = logit_quantization(layer)
  out_shape = [-1, codes.shape[0]]
  y = g.tensor(f"{layer.name}.out", out_shape, _TYPE.INT8, _quantization([scale], [zero_point]))
  options = fb.FullyConnectedOptionsT()
  g.op(
    _OP.FULLY_CONNECTED, [x, weights, _bias(g, layer)], [y], _OPTIONS.FullyConnectedOptions, options
  )
  logits = g.tensor(OUTPUT_NAME, out_shape, _TYPE.FLOAT32)
  g.op(_OP.DEQUANTIZE, [y], [logits])
  return logits


def _input(g: _Graph, chain: QuantizedChain) -> tuple[int, int, list[int]]:
  """``(float input, its int8 codes, shape)``: QUANTIZE to the first layer's quantizer."""
  shape = [-1, *chain.input_shape]
  x = g.tensor(INPUT_NAME, shape, _TYPE.FLOAT32)
  first = chain.layers[0]
  quant = _ActQuant(first.in_step, first.a_bits)
  q = g.act(f"{first.name}.in", shape, quant)
  g.op(_OP.QUANTIZE, [x], [q])
  return x, _clamp_codes(g, q, f"{first.name}.in", shape, quant), shape


def build_model(chain: QuantizedChain, *, int8_filters: bool = True) -> bytes:
  """Builds the int8/int4 TFLite flatbuffer of a chain (see the module docstring).

  Args:
    chain: the quantized SubNet.
    int8_filters: every filter INT8 (the default), else INT4 for ``w_bits <= 4``. XNNPACK
      delegates no INT4 filter; measured on the digits quickstart SubNet (4- and 2-bit
      convs): LiteRT's default runtime agrees with ONNX Runtime (= fake-quant) on 100% of the
      359 test predictions with INT8 filters, 99.4% (+0.56 pp accuracy) with INT4.

  Returns:
    The ``.tflite`` file's bytes (schema version 3, file identifier ``TFL3``).

  Raises:
    ValueError: the chain is invalid, or has a grouped convolution that is neither ordinary
      nor depthwise; the message names the layer.
  """
  validate_chain(chain)
  g = _Graph()
  x_in, x, shape = _input(g, chain)
  inputs = []  # the tensor holding each layer's quantized input
  for layer, nxt in zip(chain.layers[:-1], chain.layers[1:], strict=True):
    inputs.append(x)
    out_quant = _in_quant(nxt)
    if isinstance(layer, QConv):
      x, shape = _conv(g, layer, x, shape, _in_quant(layer), out_quant, int8_filters)
    elif isinstance(layer, QAdd):
      x, shape = _add(g, layer, x, inputs[layer.skip], shape, out_quant)
    else:  # validate_chain: only convolutions and the one pool come before the QLinear
      x, shape = _mean(g, layer, x, shape, out_quant)
  logits = _linear(g, chain.layers[-1], x, int8_filters)
  return _serialize_model(g, _metadata(chain, int8_filters), x_in, logits, "qdarts quantized chain")


def _metadata(chain: QuantizedChain, int8_filters: bool) -> dict:
  layers = []
  for layer in chain.layers:
    row = {"name": layer.name, "w_bits": getattr(layer, "w_bits", None), "a_bits": layer.a_bits}
    if isinstance(layer, QConv | QLinear):
      row["weights"] = f"INT{filter_bits(layer.w_bits, int8_filters)}"
    layers.append(row)
  scale, zero_point = logit_quantization(chain.layers[-1])
  logits = {"scale": scale, "zero_point": zero_point}
  return {**chain.metadata, "qdarts.layers": layers, "qdarts.logits": logits}


def _serialize_model(g: _Graph, metadata: dict, x_in: int, logits: int, description: str) -> bytes:
  """The flatbuffer of one subgraph ``x_in → logits`` with ``metadata`` as JSON."""
  subgraph = fb.SubGraphT()
  subgraph.tensors, subgraph.operators = g.tensors, g.operators
  subgraph.inputs, subgraph.outputs, subgraph.name = [x_in], [logits], "main"
  entry = fb.MetadataT()
  entry.name = METADATA_NAME
  entry.buffer = g.buffer(json.dumps(metadata).encode())
  model = fb.ModelT()
  model.version, model.description = _SCHEMA_VERSION, description
  model.operatorCodes = [_opcode(code, version) for code, version in g.opcodes]
  model.subgraphs, model.buffers, model.metadata = [subgraph], g.buffers, [entry]
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
  return bytes(builder.Output())


def _opcode(code: int, version: int) -> "fb.OperatorCodeT":
  opcode = fb.OperatorCodeT()
  opcode.builtinCode, opcode.version = code, version
  opcode.deprecatedBuiltinCode = min(code, _OP.PLACEHOLDER_FOR_GREATER_OP_CODES)
  return opcode


def read_metadata(path: str | os.PathLike) -> dict:
  """The JSON object stored under :data:`METADATA_NAME` in an exported ``.tflite`` file.

  Raises:
    ValueError: the file has no such metadata entry (it was not written by qdarts).
  """
  model = fb.ModelT.InitFromPackedBuf(pathlib.Path(path).read_bytes(), 0)
  for entry in model.metadata or []:
    if _text(entry.name) == METADATA_NAME:
      return json.loads(bytes(model.buffers[entry.buffer].data).decode())
  raise ValueError(f"{path}: no {METADATA_NAME!r} metadata entry")


def _text(value: str | bytes | None) -> str | None:
  return value.decode() if isinstance(value, bytes) else value


def export_tflite(
  chain: QuantizedChain, path: str | os.PathLike, *, int8_filters: bool = True
) -> pathlib.Path:
  """Writes the int8/int4 TFLite model of ``chain`` to ``path``, atomically.

  The model is built in memory, written to a temporary file in the destination folder and
  moved into place with ``os.replace``: a failed export leaves nothing at ``path`` (an existing
  file there is left unchanged).

  Args:
    chain: the quantized SubNet.
    path: destination ``.tflite`` file; missing parent folders are created.
    int8_filters: as :func:`build_model`.

  Returns:
    The path written.

  Raises:
    ValueError: the chain is invalid or not expressible in TFLite; the message names the layer.

  Example::

    path = export_tflite(chain, "out/subnet.tflite")
    logits = run_tflite(path, x_nhwc)  # ≈ reference_forward(chain, x_nhwc, int32_bias=True)
  """
  path = pathlib.Path(path)
  data = build_model(chain, int8_filters=int8_filters)
  path.parent.mkdir(parents=True, exist_ok=True)
  return atomic_write_bytes(path, data)


def run_tflite(
  path: str | os.PathLike, x_nhwc: np.ndarray, *, kernels: str = "xnnpack", num_threads: int = 1
) -> np.ndarray:
  """Runs an exported model in the LiteRT interpreter on the CPU and returns the logits.

  Args:
    path: a ``.tflite`` file written by :func:`export_tflite`.
    x_nhwc: ``(N, H, W, C)`` float inputs, any ``N``.
    kernels: ``"xnnpack"`` (LiteRT's default: the XNNPACK delegate runs the ops it supports,
      the builtin kernels the rest) or ``"builtin"`` (builtin kernels only; fixed-point
      requantization, rounding twice; see the module note).
    num_threads: CPU threads for the interpreter.

  Returns:
    ``(N, num_classes)`` float32 logits, multiples of the logits' int8 scale
    (:func:`logit_quantization`).

  Raises:
    ValueError: unknown ``kernels`` or an input that is not 4-D.
  """
  model = pathlib.Path(path).read_bytes()
  return next(iter(_invoke(model, x_nhwc, kernels, num_threads).values()))


def _invoke(model: bytes, x_nhwc: np.ndarray, kernels: str, num_threads: int = 1) -> dict:
  """Every output of one LiteRT run of ``model`` on ``x_nhwc``, by tensor name."""
  from ai_edge_litert.interpreter import Interpreter, OpResolverType

  resolvers = {"xnnpack": OpResolverType.AUTO}
  resolvers["builtin"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
  if kernels not in resolvers:
    raise ValueError(f"kernels {kernels!r} is not one of {', '.join(KERNELS)}")
  x = np.asarray(x_nhwc, np.float32)
  if x.ndim != 4:
    raise ValueError(f"expected NHWC input (N, H, W, C), got shape {x.shape}")
  interpreter = Interpreter(
    model_content=model, num_threads=num_threads, experimental_op_resolver_type=resolvers[kernels]
  )
  (inp,) = interpreter.get_input_details()
  interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
  interpreter.allocate_tensors()
  interpreter.set_tensor(inp["index"], x)
  interpreter.invoke()
  outs = interpreter.get_output_details()
  return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in outs}


def run_tflite_tensors(
  path: str | os.PathLike, x_nhwc: np.ndarray, *, kernels: str = "xnnpack"
) -> dict[str, np.ndarray]:
  """Every tensor an op writes, by name, after one run of an exported model on ``x_nhwc``.

  A delegate (XNNPACK) writes back only the tensors that leave it, so the model is run with
  every such tensor made a subgraph output; the ops and their partition are unchanged (a
  tensor inside a partition is written by the partition, not read back from elsewhere).

  Returns:
    ``{name: values}``: int8 codes (``u − 128`` on an unsigned grid) or float32 logits.
  """
  model = fb.ModelT.InitFromPackedBuf(pathlib.Path(path).read_bytes(), 0)
  subgraph = model.subgraphs[0]
  subgraph.outputs = [i for op in subgraph.operators for i in op.outputs]
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
  return _invoke(bytes(builder.Output()), x_nhwc, kernels)
