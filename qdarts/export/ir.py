"""A numpy-only description of a fixed, quantized SubNet, and its fake-quant reference forward.

The export backends read a :class:`QuantizedChain`: float weights, biases and the learned step
sizes of every quantizer, with the bit-widths the search chose. :func:`reference_forward` runs
the same network in float numpy with fake quantization; it is the oracle every integer export
must reproduce. For now the network is a chain (later issues extend it to DAGs):

  ``(QConv | QAdd)* → QGlobalAvgPool → QLinear``,

where a :class:`QAdd` (a residual add) sums the previous conv's output and the quantized input
of an earlier conv (the block input of an inverted residual block).

Quantizers follow :mod:`quant`: weights are signed, narrow range, per output channel,

.. math::
  \\hat{W}_{:, c} = s_w[c] \\cdot \\operatorname{clip}(\\operatorname{round}(W_{:, c} / s_w[c]),
  -(2^{b_w - 1} - 1), 2^{b_w - 1} - 1),

and activations are unsigned with zero point 0 and one step per quantizer,

.. math::
  \\hat{x} = s_a \\cdot \\operatorname{clip}(\\operatorname{round}(x / s_a), 0, 2^{b_a} - 1),

where round is half to even (``np.round``, as ``jnp.round`` and ONNX ``QuantizeLinear``).
Every layer quantizes its *input*; the layer after a ReLU conv therefore sees codes in
``[0, 2^{b_a} − 1]`` and an 8-bit container holds any ``b_a ≤ 8``.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np

from quant.lsq import act_qrange, weight_qrange

_W_BITS = range(2, 9)
_A_BITS = range(1, 9)


@dataclasses.dataclass(frozen=True)
class QConv:
  """A quantized 2-D convolution (NHWC activations, HWIO kernel), optionally followed by ReLU.

  Attributes:
    name: unique layer name; ONNX tensor names are derived from it.
    weight: float32 ``(kh, kw, cin // groups, cout)``.
    bias: float32 ``(cout,)``.
    w_step: float32 ``(cout,)`` per-output-channel weight step s_w.
    w_bits: weight bits b_w in 2..8, signed narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]``.
    in_step: step s_a of this layer's input quantizer (unsigned, zero point 0).
    a_bits: bits b_a of that input quantizer in 1..8, codes in ``[0, 2^b_a - 1]``.
    stride: the same stride along H and W.
    padding: explicit ``((top, bottom), (left, right))`` zero padding.
    groups: feature groups; ``groups == cin == cout`` is a depthwise convolution.
    relu: whether a ReLU follows the convolution.
  """

  name: str
  weight: np.ndarray
  bias: np.ndarray
  w_step: np.ndarray
  w_bits: int
  in_step: float
  a_bits: int
  stride: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  groups: int = 1
  relu: bool = True


@dataclasses.dataclass(frozen=True)
class QGlobalAvgPool:
  """Input quantizer, then the mean over H and W: ``(N, H, W, C) → (N, C)``.

  Attributes:
    name: unique layer name.
    in_step: step of the unsigned quantizer applied *before* the average.
    a_bits: bits of that quantizer, 1..8.
  """

  name: str
  in_step: float
  a_bits: int = 8


@dataclasses.dataclass(frozen=True)
class QLinear:
  """A quantized fully connected layer ``y = x̂ @ Ŵ + b`` on ``(N, cin)`` features (no ReLU).

  Attributes:
    name: unique layer name.
    weight: float32 ``(cin, cout)``.
    bias: float32 ``(cout,)``.
    w_step: float32 ``(cout,)`` per-output-channel weight step.
    w_bits: weight bits in 2..8 (signed narrow range).
    in_step: step of the unsigned input quantizer.
    a_bits: bits of the input quantizer, 1..8.
  """

  name: str
  weight: np.ndarray
  bias: np.ndarray
  w_step: np.ndarray
  w_bits: int
  in_step: float
  a_bits: int


@dataclasses.dataclass(frozen=True)
class QAdd:
  """A residual add: ``y = Q_s8(x, s_h) + x̂_skip`` (an inverted residual block's last step).

  Its input ``x`` (the previous convolution's output, which may be negative) is quantized with
  a *signed* 8-bit quantizer, ``Q_s8(x, s_h) = s_h·clip(round(x / s_h), −128, 127)``; the other
  summand is the quantized input ``x̂_skip`` of layer ``skip`` (the block's input, as the block's
  first convolution reads it). The sum goes to the next layer's (unsigned) input quantizer. This
  is what TFLite ADD and ONNX QLinearAdd compute: both inputs dequantized, summed, requantized.

  Attributes:
    name: unique layer name.
    skip: index of the earlier layer whose quantized input is added; its input shape equals
      this layer's.
    in_step: the step s_h of the signed quantizer of this layer's input (see
      :func:`residual_step`).
    a_bits: bits of that signed quantizer; only 8 (int8, or uint8 with zero point 128).
  """

  name: str
  skip: int
  in_step: float
  a_bits: int = 8


QLayer = QConv | QGlobalAvgPool | QLinear | QAdd


@dataclasses.dataclass(frozen=True)
class QuantizedChain:
  """A fixed quantized SubNet that is a chain of layers.

  Attributes:
    layers: ``QConv`` / ``QAdd`` layers, one ``QGlobalAvgPool``, then one ``QLinear`` producing
      the logits.
    input_shape: ``(H, W, C)`` of one NHWC sample.
    num_classes: number of logits; the ``cout`` of the final ``QLinear``.
    metadata: string key/value pairs recorded into exported models (dataset name, …); keys
      starting with ``qdarts.`` are reserved for the exporter.
  """

  layers: tuple[QLayer, ...]
  input_shape: tuple[int, int, int]
  num_classes: int
  metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _fake_quant_act(x: np.ndarray, step: float, bits: int) -> np.ndarray:
  """x̂ = s·clip(round(x/s), 0, 2^b − 1) in float64, with s the float32 step that is exported."""
  qn, qp = act_qrange(bits)
  step = float(np.float32(step))
  return step * np.clip(np.round(np.asarray(x, np.float64) / step), qn, qp)


def _fake_quant_signed(x: np.ndarray, step: float) -> np.ndarray:
  """x̂ = s·clip(round(x/s), −128, 127) in float64 (a :class:`QAdd`'s input quantizer)."""
  step = float(np.float32(step))
  return step * np.clip(np.round(np.asarray(x, np.float64) / step), -128, 127)


def residual_step(skip: "QLayer", nxt: "QLayer") -> float:
  """The step of a :class:`QAdd`'s signed int8 input quantizer, chosen without data.

  The fake-quant network adds the float branch output ``h`` to its input; an integer runtime
  needs ``h`` on an int8 grid. Only ``h ∈ [−x_max, y_max]`` can change the result, with
  ``x_max = s_skip·(2^b_skip − 1)`` the largest skip value and ``y_max = s_next·(2^b_next − 1)``
  the largest code of the quantizer after the add (beyond them the sum clips to 0 or to
  ``y_max`` anyway), so ``s_h = max(x_max / 128, y_max / 127)`` loses no range; its rounding
  error is up to ``s_h / 2`` (about one step of an 8-bit next quantizer).

  Returns:
    The float32-representable step s_h.
  """
  x_max = float(np.float32(skip.in_step)) * act_qrange(skip.a_bits)[1]
  y_max = float(np.float32(nxt.in_step)) * act_qrange(nxt.a_bits)[1]
  return float(np.float32(max(x_max / 128, y_max / 127)))


def _fake_quant_weight(w: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
  """Ŵ = s_w·clip(round(W/s_w), −Q_N, Q_P) per output channel (last axis), in float64.

  The codes are computed in float32, as :func:`quant.weight_codes` computes them, so the
  reference and the exported integer weights agree on every tie.
  """
  qn, qp = weight_qrange(bits)
  step32 = np.asarray(step, np.float32)
  codes = np.clip(np.round(np.asarray(w, np.float32) / step32), qn, qp)
  return codes.astype(np.float64) * step32.astype(np.float64)


def _conv2d_nhwc(
  x: np.ndarray,
  w: np.ndarray,
  stride: int,
  padding: tuple[tuple[int, int], tuple[int, int]],
  groups: int,
) -> np.ndarray:
  """Grouped 2-D cross-correlation, one einsum per kernel offset (for tiny shapes).

  Args:
    x: ``(N, H, W, cin)``.
    w: ``(kh, kw, cin // groups, cout)``; output channel ``o`` reads group ``o // (cout/groups)``.
    stride: stride along H and W.
    padding: ``((top, bottom), (left, right))`` zero padding.
    groups: feature groups.

  Returns:
    ``(N, Ho, Wo, cout)`` with ``Ho = (H + top + bottom − kh) // stride + 1`` (same for W).
  """
  kh, kw, cg, cout = w.shape
  xp = np.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  n, hp, wp, _ = xp.shape
  ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
  wg = w.reshape(kh, kw, cg, groups, cout // groups)
  y = np.zeros((n, ho, wo, groups, cout // groups), np.result_type(x, w))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
      patch = patch.reshape(n, ho, wo, groups, cg)
      y += np.einsum("nhwgc,cgo->nhwgo", patch, wg[i, j])
  return y.reshape(n, ho, wo, cout)


def reference_forward(
  chain: QuantizedChain, x_nhwc: np.ndarray, *, int32_bias: bool = False
) -> np.ndarray:
  """Float fake-quant forward pass: the semantics every integer export reproduces.

  Per layer, with ``Q_b(x, s)`` the unsigned activation quantizer and ``Ŵ`` the fake-quantized
  kernel (see the module docstring):

  - ``QConv``: ``y = conv(Q_{b_a}(x, s_a), Ŵ; stride, padding, groups) + b``, then ReLU if set;
  - ``QGlobalAvgPool``: ``y = mean_{H,W} Q_{b_a}(x, s_a)``;
  - ``QLinear``: ``y = Q_{b_a}(x, s_a) @ Ŵ + b`` (the logits);
  - ``QAdd``: ``y = Q_s8(x, s_h) + Q_{b_skip}(x_skip, s_skip)``, the skip layer's quantized
    input (see :class:`QAdd`).

  Computed in float64, so the result is the equation itself, free of summation-order error.

  With ``int32_bias=True`` every bias is first rounded to its accumulator grid,
  ``b ← s_a·s_w[c]·round(b / (s_a·s_w[c]))`` (:func:`bias_codes`), which is what an integer
  kernel adds and what the exports store: this is the oracle an export matches to float
  rounding. The difference from the float bias is at most half a grid step per channel, which
  is negligible at 8 bits but not at 2 (s_w is then the whole weight range).

  Args:
    chain: a valid chain (see :func:`validate_chain`).
    x_nhwc: ``(N, H, W, C)`` float inputs, ``(H, W, C) == chain.input_shape``.
    int32_bias: round biases to the int32 accumulator grid, as the integer exports do.

  Returns:
    ``(N, num_classes)`` float32 logits.

  Raises:
    ValueError: if the chain is invalid (naming the layer) or ``x_nhwc`` has the wrong shape.
  """
  validate_chain(chain)
  x = np.asarray(x_nhwc, np.float64)
  if x.ndim != 4 or x.shape[1:] != tuple(chain.input_shape):
    raise ValueError(f"expected input (N, *{tuple(chain.input_shape)}), got {x.shape}")
  quantized: list[np.ndarray] = []  # every layer's quantized input (QAdd reads its skip's)
  for layer in chain.layers:
    if isinstance(layer, QAdd):
      quantized.append(_fake_quant_signed(x, layer.in_step))
      x = quantized[-1] + quantized[layer.skip]
      continue
    xq = _fake_quant_act(x, layer.in_step, layer.a_bits)
    quantized.append(xq)
    if not isinstance(layer, QGlobalAvgPool):
      bias = _round_bias(layer) if int32_bias else np.asarray(layer.bias, np.float64)
    if isinstance(layer, QConv):
      wq = _fake_quant_weight(layer.weight, layer.w_step, layer.w_bits)
      x = _conv2d_nhwc(xq, wq, layer.stride, layer.padding, layer.groups) + bias
      if layer.relu:
        x = np.maximum(x, 0.0)
    elif isinstance(layer, QGlobalAvgPool):
      x = xq.mean(axis=(1, 2))
    else:
      x = xq @ _fake_quant_weight(layer.weight, layer.w_step, layer.w_bits) + bias
  return x.astype(np.float32)


def bias_scale(layer: QConv | QLinear) -> np.ndarray:
  """The accumulator step s_a·s_w[c], float32 ``(cout,)``: the scale of the int32 bias."""
  return np.float32(layer.in_step) * np.asarray(layer.w_step, np.float32)


def bias_codes(layer: QConv | QLinear) -> np.ndarray:
  """round(b / (s_a·s_w[c])) as float64 ``(cout,)`` (half to even): the int32 bias codes."""
  return np.round(np.asarray(layer.bias, np.float64) / bias_scale(layer).astype(np.float64))


def _round_bias(layer: QConv | QLinear) -> np.ndarray:
  return bias_codes(layer) * bias_scale(layer).astype(np.float64)


def validate_chain(chain: QuantizedChain) -> None:
  """Checks names, bits, steps and the shapes flowing between consecutive layers.

  Raises:
    ValueError: naming the first offending layer (``layer 2 'dw': …``) or field.
  """
  h, w, c = _check_input_shape(chain.input_shape)
  names: set[str] = set()
  flat = False
  in_shapes: list[tuple[int, int, int]] = []  # every layer's input (H, W, C)
  last_add = -1
  for index, layer in enumerate(chain.layers):
    where = f"layer {index} {getattr(layer, 'name', '?')!r}"
    if not isinstance(layer, QConv | QGlobalAvgPool | QLinear | QAdd):
      raise ValueError(f"{where}: unsupported layer type {type(layer).__name__}")
    if not layer.name or layer.name in names:
      raise ValueError(f"{where}: layer names must be unique and non-empty")
    names.add(layer.name)
    in_shapes.append((h, w, c))
    if isinstance(layer, QAdd):
      _check_add(where, chain.layers, index, last_add, in_shapes, flat)
      last_add = index
      continue
    _check_act_quantizer(where, layer.in_step, layer.a_bits)
    if isinstance(layer, QConv):
      if flat:
        raise ValueError(f"{where}: a QConv cannot follow the global average pool")
      h, w, c = _check_conv(where, layer, h, w, c)
    elif isinstance(layer, QGlobalAvgPool):
      if flat:
        raise ValueError(f"{where}: a second global average pool")
      flat = True
    else:
      if not flat:
        raise ValueError(f"{where}: a QLinear needs (N, C) features; put a QGlobalAvgPool first")
      if index != len(chain.layers) - 1:
        raise ValueError(f"{where}: the QLinear must be the last layer (it has no ReLU)")
      c = _check_linear(where, layer, c)
  if not chain.layers or not isinstance(chain.layers[-1], QLinear):
    raise ValueError("the chain must end with a QLinear producing the logits")
  if c != chain.num_classes:
    raise ValueError(f"the last layer has {c} outputs, but num_classes is {chain.num_classes}")
  for key, value in chain.metadata.items():
    if not isinstance(key, str) or not isinstance(value, str):
      raise ValueError(f"metadata must map str to str, got {key!r}: {value!r}")
    if key.startswith("qdarts."):
      raise ValueError(f"metadata key {key!r}: the 'qdarts.' prefix is reserved for the exporter")


def _check_add(where, layers, index, last_add, in_shapes, flat) -> None:
  """A QAdd follows a QConv, adds the input of an earlier QConv of the same shape, and its
  range ``[skip, index]`` starts after the previous QAdd (one skip tensor alive at a time)."""
  layer = layers[index]
  if flat:
    raise ValueError(f"{where}: a QAdd cannot follow the global average pool")
  if layer.a_bits != 8 or not (np.isfinite(layer.in_step) and layer.in_step > 0):
    raise ValueError(f"{where}: a QAdd needs a_bits 8 and a finite positive in_step")
  if index == 0 or not isinstance(layers[index - 1], QConv):
    raise ValueError(f"{where}: a QAdd must follow a QConv (it adds to that conv's output)")
  skip = layer.skip
  if not isinstance(skip, int | np.integer) or not last_add < skip < index:
    raise ValueError(
      f"{where}: skip must index an earlier layer after the previous add, in "
      f"{last_add + 1}..{index - 1}, got {skip!r}"
    )
  if not isinstance(layers[skip], QConv):
    raise ValueError(f"{where}: skip layer {skip} must be a QConv")
  if in_shapes[skip] != in_shapes[index]:
    raise ValueError(
      f"{where}: skip layer {skip} reads {in_shapes[skip]}, but the add's input is "
      f"{in_shapes[index]}"
    )


def _check_input_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
  if len(shape) != 3 or any(int(d) < 1 for d in shape):
    raise ValueError(f"input_shape must be a positive (H, W, C), got {shape}")
  h, w, c = (int(d) for d in shape)
  return h, w, c


def _check_act_quantizer(where: str, step: float, bits: int) -> None:
  if not isinstance(bits, int | np.integer) or bits not in _A_BITS:
    raise ValueError(f"{where}: a_bits must be an int in 1..8, got {bits!r}")
  if not (np.isfinite(step) and step > 0):
    raise ValueError(f"{where}: in_step must be finite and positive, got {step!r}")


def _check_weights(where: str, layer: QConv | QLinear, cout: int) -> None:
  if not isinstance(layer.w_bits, int | np.integer) or layer.w_bits not in _W_BITS:
    raise ValueError(f"{where}: w_bits must be an int in 2..8, got {layer.w_bits!r}")
  for field in ("w_step", "bias"):
    value = np.asarray(getattr(layer, field))
    if value.shape != (cout,):
      raise ValueError(f"{where}: {field} must have shape ({cout},), got {value.shape}")
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{where}: {field} must be finite")
  if not np.all(np.asarray(layer.w_step) > 0):
    raise ValueError(f"{where}: w_step must be positive")
  if not np.all(np.isfinite(layer.weight)):
    raise ValueError(f"{where}: weight must be finite")


def _check_conv(where: str, layer: QConv, h: int, w: int, c: int) -> tuple[int, int, int]:
  weight = np.asarray(layer.weight)
  if weight.ndim != 4:
    raise ValueError(f"{where}: weight must be HWIO (kh, kw, cin // groups, cout)")
  kh, kw, cg, cout = weight.shape
  g = layer.groups
  if g < 1 or c % g or cout % g or cg * g != c:
    raise ValueError(
      f"{where}: weight {weight.shape} with groups={g} does not fit {c} input channels"
    )
  _check_weights(where, layer, cout)
  (top, bottom), (left, right) = layer.padding
  if layer.stride < 1 or min(top, bottom, left, right) < 0:
    raise ValueError(f"{where}: stride must be >= 1 and padding >= 0")
  ho = (h + top + bottom - kh) // layer.stride + 1
  wo = (w + left + right - kw) // layer.stride + 1
  if ho < 1 or wo < 1:
    raise ValueError(f"{where}: kernel {kh}x{kw} does not fit the padded {h}x{w} input")
  return ho, wo, cout


def _check_linear(where: str, layer: QLinear, c: int) -> int:
  weight = np.asarray(layer.weight)
  if weight.ndim != 2 or weight.shape[0] != c:
    raise ValueError(f"{where}: weight must be ({c}, cout), got {weight.shape}")
  _check_weights(where, layer, weight.shape[1])
  return weight.shape[1]
