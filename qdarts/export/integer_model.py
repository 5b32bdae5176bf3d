"""The integer reference model of a :class:`~qdarts.export.ir.QuantizedChain` (numpy only).

:func:`to_integer_chain` turns the float weights and learned steps of a chain into what an
integer runtime stores, and :func:`integer_forward` runs it with integer arithmetic only
(int32 values, int64 intermediates), from the uint8 codes of the input quantizer to the int32
accumulators of the final linear. The C runtime written by :mod:`qdarts.export.c_export`
computes exactly the same integers.

Per layer (activations NHWC, every quantizer unsigned with zero point 0, weights signed narrow
range per output channel, as in :mod:`qdarts.export.ir`):

- ``IntConv``: ``acc[c] = b[c] + Σ x_q · w_q[c]`` in int32, where ``x_q`` are this layer's
  input codes (zero padding is code 0), ``w_q`` the weight codes and
  ``b[c] = round(b / (s_in·s_w[c]))`` the int32 bias codes. Then requantization to the
  *next* layer's input codes, :math:`x'_q = \\operatorname{clip}(\\operatorname{MBQM}(acc[c],
  M[c]), 0, 2^{b'} - 1)` with the real multiplier :math:`M[c] = s_{in} s_w[c] / s'`. A ReLU is
  folded into the clamp's lower bound 0 (the next quantizer is unsigned, so the clamp applies
  with or without it).
- ``IntGlobalAvgPool``: ``sum[c] = Σ_{h,w} x_q`` in int32, then requantization with
  :math:`M = s_{in} / (H W s')`: the division by ``H·W`` is folded into the multiplier, so
  the mean is rounded once (no integer division).
- ``IntAdd`` (a residual add): TFLite's int8 ADD on the previous conv's output (signed int8,
  held as uint8 with zero point 128; that conv requantizes to it) and the input codes of an
  earlier layer (:func:`add_codes`), requantized to the next layer's input codes.
- ``IntLinear`` (last): ``acc[c] = b[c] + Σ_i x_q[i] w_q[i, c]`` in int32. This is the model's
  integer output; the logits are ``acc[c] · s_in·s_w[c]`` (the bias is already in ``acc``).
  :func:`integer_forward` returns those float logits, :func:`integer_trace` the accumulators.

MBQM is TFLite's ``MultiplyByQuantizedMultiplier``. :math:`M` is stored as an int32
``multiplier`` :math:`m \\in [2^{30}, 2^{31})` and an exponent ``shift`` with
:math:`M \\approx m \\cdot 2^{shift - 31}` (:func:`quantize_multiplier`, TFLite's
``QuantizeMultiplier``). Two roundings exist in LiteRT / TFLite and the chain records which one
it uses (``IntegerChain.rounding``):

- ``"single"`` (the default; ``TFLITE_SINGLE_ROUNDING=1``, what LiteRT's XNNPACK and ruy
  kernels compute, and CMSIS-NN with ``CMSIS_NN_USE_SINGLE_ROUNDING``):
  :math:`\\operatorname{MBQM}(x) = \\lfloor (x m + 2^{t-1}) / 2^{t} \\rfloor` with
  :math:`t = 31 - shift`, in int64: one rounding to nearest, ties toward +∞.
- ``"double"`` (gemmlowp; TFLite's reference kernels and TFLite Micro by default):
  ``RDBPOT(SRDHM(sat32(x·2^max(shift, 0)), m), max(−shift, 0))`` where
  ``SRDHM(a, b) = trunc((a·b + nudge) / 2^31)``, ``nudge = 2^30`` if ``a·b ≥ 0`` else
  ``1 − 2^30`` (``SaturatingRoundingDoublingHighMul``: nearest, ties toward +∞;
  ``INT32_MIN·INT32_MIN`` saturates to ``INT32_MAX``) and ``RDBPOT(x, e)`` is ``x / 2^e`` to
  nearest, ties away from zero (``RoundingDivideByPOT``). ``sat32`` saturates where TFLite's
  overflow is undefined; a saturated value clamps to the same code.

Both saturate the result to int32 before the clamp.

.. note:: single rounding reproduces :func:`~qdarts.export.ir.reference_forward` with
  ``int32_bias=True`` (float64, half to even) exactly except where ``acc·M`` lies on or within
  ~``2^-31·acc·M`` of a rounding tie (31-bit ``m``, ties broken upward). Double rounding rounds
  ``x·m/2^31`` to an integer *before* the ``2^-e`` shift, so when ``e`` is small (low-bit
  activations: ``M`` near 1) it is off by one code often, and that compounds over layers.
  Measured on the tests' chains (512 inputs, 4 seeds): single rounding, 0 codes differ and
  argmax agrees on 100%; double rounding, up to 0.4% of codes differ at 8 bits and 10% at 2
  bits, and argmax agreement falls to 0–65% on some 2-bit, 4-bit and odd-bit chains. Against
  ``int32_bias=False`` the int32 rounding of biases (up to half an accumulator step, ``M/2``
  output codes) also shows; at 2-bit weights that can exceed one code. The C runtime of
  :mod:`qdarts.export.c_export` computes the same integers as this module in either mode.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from qdarts.export.ir import (
  QAdd,
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  _conv2d_nhwc,
  bias_codes,
  bias_scale,
  validate_chain,
)
from quant.integer import weight_codes
from quant.lsq import act_qrange

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
ROUNDINGS = ("single", "double")


@dataclasses.dataclass(frozen=True)
class Requantizer:
  """int32 accumulator → the next quantizer's codes, per output channel.

  Attributes:
    multiplier: int32 ``(c,)``, each 0 or in ``[2^30, 2^31)``.
    shift: int32 ``(c,)`` exponents in ``[-31, 30]``; ``M ≈ multiplier · 2^(shift − 31)``.
    real: float64 ``(c,)``, the real multiplier M the pair approximates (for reports).
    out_max: the largest output code (the next quantizer's ``2^b − 1``).
    zero_point: added after the multiplication: 0 for the unsigned quantizers, 128 for the
      signed input of a :class:`IntAdd` held as uint8 (``code − 128`` is the int8 value).
    out_min: the smallest output code: 0, or ``zero_point`` when a ReLU precedes a signed
      quantizer. Outputs are ``clip(MBQM(acc) + zero_point, out_min, out_max)``.
  """

  multiplier: np.ndarray
  shift: np.ndarray
  real: np.ndarray
  out_max: int
  zero_point: int = 0
  out_min: int = 0


@dataclasses.dataclass(frozen=True)
class IntConv:
  """An integer convolution (see the module docstring), input and output NHWC uint8 codes.

  Attributes:
    name: the layer's name in the chain.
    weight: int8 codes ``(cout, kh, kw, cin // groups)`` (OHWI, output channels first), in the
      signed narrow range of ``w_bits``.
    bias: int32 codes ``(cout,)``, on the accumulator grid ``in_scale · w_scale[c]``.
    w_bits: weight bits, 2..8.
    w_scale: float32 ``(cout,)`` weight steps s_w.
    in_scale: float32 step s_in of the input codes (zero point 0).
    in_bits: bits of the input codes, which lie in ``[0, 2^in_bits − 1]``.
    in_shape: ``(H, W, cin)``.
    out_shape: ``(Ho, Wo, cout)``.
    stride: the same stride along H and W.
    padding: ``((top, bottom), (left, right))``; padded positions hold code 0.
    groups: feature groups (``groups == cin == cout``: depthwise).
    requant: accumulator → the next layer's input codes.
  """

  name: str
  weight: np.ndarray
  bias: np.ndarray
  w_bits: int
  w_scale: np.ndarray
  in_scale: float
  in_bits: int
  in_shape: tuple[int, int, int]
  out_shape: tuple[int, int, int]
  stride: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  groups: int
  requant: Requantizer


@dataclasses.dataclass(frozen=True)
class IntGlobalAvgPool:
  """Integer global average pool ``(N, H, W, C) → (N, C)``: int32 sum, then requantization.

  Attributes:
    name: the layer's name in the chain.
    in_scale: float32 step of the input codes.
    in_bits: bits of the input codes.
    in_shape: ``(H, W, C)``.
    requant: with ``M = in_scale / (H·W·s_next)`` (the same value in every channel).
  """

  name: str
  in_scale: float
  in_bits: int
  in_shape: tuple[int, int, int]
  requant: Requantizer


@dataclasses.dataclass(frozen=True)
class IntLinear:
  """The final integer fully connected layer: int32 accumulators, no requantization.

  Attributes:
    name: the layer's name in the chain.
    weight: int8 codes ``(cout, cin)`` (output channels first).
    bias: int32 codes ``(cout,)``.
    w_bits: weight bits, 2..8.
    w_scale: float32 ``(cout,)`` weight steps s_w.
    in_scale: float32 step of the input codes.
    in_bits: bits of the input codes.
    logit_scale: float32 ``(cout,)``, ``in_scale · w_scale[c]``: ``logits = acc · logit_scale``.
  """

  name: str
  weight: np.ndarray
  bias: np.ndarray
  w_bits: int
  w_scale: np.ndarray
  in_scale: float
  in_bits: int
  logit_scale: np.ndarray


@dataclasses.dataclass(frozen=True)
class IntAdd:
  """An integer residual add, TFLite's int8 ADD in the code domain (see :func:`add_codes`).

  Inputs: the previous layer's output ``h`` as uint8 codes with zero point 128 (the int8 value
  ``h − 128`` of step ``in_scale``), and the input codes of layer ``skip`` (zero point 0, step
  ``skip_scale``). With ``S = 2·max(in_scale, skip_scale)``, each input is shifted left by
  ``left_shift`` and multiplied by ``its scale / S`` (a fixed-point pair), the two are summed and
  the sum is requantized by ``S / (2^left_shift · s_next)`` to the next layer's codes.

  Attributes:
    name: the layer's name in the chain.
    skip: index of the layer whose input codes are added.
    shape: ``(H, W, C)`` of both inputs and the output.
    in_scale: float32 step of the signed input ``h``.
    in_zero_point: 128.
    in_bits: 8.
    skip_scale: float32 step of the skip codes.
    skip_bits: bits of the skip codes.
    left_shift: 20, as TFLite's int8 ADD.
    in_multiplier, in_shift: the fixed-point ``in_scale / S``.
    skip_multiplier, skip_shift: the fixed-point ``skip_scale / S``.
    requant: the sum → the next layer's input codes (``M = S / (2^left_shift · s_next)``).
  """

  name: str
  skip: int
  shape: tuple[int, int, int]
  in_scale: float
  in_zero_point: int
  in_bits: int
  skip_scale: float
  skip_bits: int
  left_shift: int
  in_multiplier: int
  in_shift: int
  skip_multiplier: int
  skip_shift: int
  requant: Requantizer


ADD_LEFT_SHIFT = 20
"""TFLite's left shift of int8 ADD inputs (``data->left_shift = 20``)."""
SIGNED_ZERO_POINT = 128
"""The uint8 zero point of a signed int8 quantizer (an :class:`IntAdd` input)."""

IntLayer = IntConv | IntGlobalAvgPool | IntLinear | IntAdd


@dataclasses.dataclass(frozen=True)
class IntegerChain:
  """What an integer runtime stores: ``(IntConv | IntAdd)* → IntGlobalAvgPool → IntLinear``.

  Build it with :func:`to_integer_chain`. The input is quantized by the first layer's input
  quantizer (``in_scale``, ``in_bits``, zero point 0): see :func:`quantize_input`.

  Attributes:
    layers: the integer layers, in order.
    input_shape: ``(H, W, C)`` of one NHWC sample.
    num_classes: number of outputs of the final linear.
    rounding: the requantization rounding, ``"single"`` or ``"double"`` (module docstring).
    metadata: the chain's string metadata.
  """

  layers: tuple[IntLayer, ...]
  input_shape: tuple[int, int, int]
  num_classes: int
  rounding: str = "single"
  metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class IntegerTrace:
  """Every integer tensor of a forward pass.

  Attributes:
    codes: uint8 input codes of every layer, in layer order: ``codes[0]`` is the quantized
      model input ``(N, H, W, C)``, ``codes[i]`` the output of layer ``i − 1`` (zero point 0,
      or 128 where layer ``i`` is an :class:`IntAdd`).
    accumulators: int32 ``(N, num_classes)`` of the final linear (bias included).
  """

  codes: tuple[np.ndarray, ...]
  accumulators: np.ndarray


# --- fixed-point requantization (TFLite / gemmlowp) ----------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
  """TFLite's ``QuantizeMultiplier``: ``real ≈ multiplier · 2^(shift − 31)``.

  ``real = q · 2^shift`` with ``q ∈ [0.5, 1)`` (``frexp``), ``multiplier = round(q · 2^31)``
  (half away from zero; a carry to ``2^31`` halves it and increments ``shift``). A multiplier
  below ``2^-32`` becomes ``(0, 0)``: every int32 accumulator then rounds to 0 anyway.

  Args:
    real: the non-negative real multiplier M.

  Returns:
    ``(multiplier, shift)`` with ``multiplier`` 0 or in ``[2^30, 2^31)`` and
    ``shift ∈ [-31, 30]``.

  Raises:
    ValueError: ``real`` is negative, not finite, or ``≥ 2^30`` (no fixed point with
      ``shift ≤ 30``).
  """
  if not (math.isfinite(real) and real >= 0):
    raise ValueError(f"a requantization multiplier must be finite and >= 0, got {real!r}")
  if real == 0:
    return 0, 0
  q, shift = math.frexp(real)
  multiplier = math.floor(q * 2**31 + 0.5)  # exact: q·2^31 has a 2^-22 resolution
  if multiplier == 2**31:
    multiplier, shift = 2**30, shift + 1
  if shift < -31:
    return 0, 0
  if shift > 30:  # single rounding needs 31 − shift ≥ 1 (TFLite saturates instead)
    raise ValueError(f"a requantization multiplier of {real!r} does not fit int32 fixed point")
  return multiplier, shift


def _saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """gemmlowp's SRDHM on int32 values held in int64: ``trunc((a·b + nudge) / 2^31)``."""
  overflow = (a == _INT32_MIN) & (b == _INT32_MIN)
  ab = a * b  # |a·b| ≤ 2^62 fits int64
  total = ab + np.where(ab >= 0, 2**30, 1 - 2**30)
  high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C division truncates
  return np.where(overflow, _INT32_MAX, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
  """gemmlowp's RoundingDivideByPOT: ``x / 2^exponent``, nearest, ties away from zero."""
  mask = np.left_shift(np.int64(1), exponent) - 1
  remainder = x & mask
  threshold = (mask >> 1) + (x < 0)
  return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
  x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str = "single"
) -> np.ndarray:
  """TFLite's ``MultiplyByQuantizedMultiplier`` (see the module docstring), broadcast.

  Args:
    x: int32-valued accumulators, any integer dtype.
    multiplier: int32 fixed-point multipliers from :func:`quantize_multiplier`.
    shift: their exponents, in ``[-31, 30]``.
    rounding: ``"single"`` (``TFLITE_SINGLE_ROUNDING``) or ``"double"`` (gemmlowp).

  Returns:
    int32 ``≈ x · multiplier · 2^(shift − 31)``, rounded to nearest (saturated to int32).

  Raises:
    ValueError: an unknown ``rounding``.
  """
  x = np.asarray(x, np.int64)
  multiplier = np.asarray(multiplier, np.int64)
  shift = np.asarray(shift, np.int64)
  if rounding == "single":
    total = 31 - shift  # in [1, 62]; |x·m| < 2^62, and >> on int64 is a floor
    y = (x * multiplier + np.left_shift(np.int64(1), total - 1)) >> total
  elif rounding == "double":
    left = np.left_shift(np.int64(1), np.maximum(shift, 0))
    shifted = np.clip(x * left, _INT32_MIN, _INT32_MAX)
    high = _saturating_rounding_doubling_high_mul(shifted, multiplier)
    y = _rounding_divide_by_pot(high, np.maximum(-shift, 0))
  else:
    raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
  return np.clip(y, _INT32_MIN, _INT32_MAX).astype(np.int32)


def requantize(acc: np.ndarray, requant: Requantizer, rounding: str = "single") -> np.ndarray:
  """``clip(MBQM(acc[..., c], M[c]) + zp, out_min, out_max)`` as uint8; channels last."""
  y = multiply_by_quantized_multiplier(acc, requant.multiplier, requant.shift, rounding)
  y = y.astype(np.int64) + requant.zero_point
  return np.clip(y, requant.out_min, requant.out_max).astype(np.uint8)


def _requantizer(real: np.ndarray, out_bits: int, *, signed: bool = False, relu: bool = False):
  """Per-channel fixed point of ``real`` to an unsigned ``out_bits`` quantizer, or to the
  signed int8 input of an add (uint8 codes, zero point 128; ``relu`` clamps at the zero point)."""
  pairs = [quantize_multiplier(float(m)) for m in np.asarray(real, np.float64)]
  zero_point = SIGNED_ZERO_POINT if signed else 0
  return Requantizer(
    multiplier=np.array([m for m, _ in pairs], np.int32),
    shift=np.array([s for _, s in pairs], np.int32),
    real=np.asarray(real, np.float64),
    out_max=255 if signed else act_qrange(out_bits)[1],
    zero_point=zero_point,
    out_min=zero_point if relu else 0,
  )


# --- building the integer chain --------------------------------------------------------------


def _f64(step) -> np.ndarray:
  """A step as float64 of the exported float32 value (what the reference multiplies by)."""
  return np.asarray(step, np.float32).astype(np.float64)


def _int32_bias(layer: QConv | QLinear) -> np.ndarray:
  codes = bias_codes(layer)
  if codes.min(initial=0) < _INT32_MIN or codes.max(initial=0) > _INT32_MAX:
    raise ValueError(f"layer {layer.name!r}: bias / (in_step * w_step) overflows int32")
  return codes.astype(np.int32)


def _check_accumulator(layer: QConv | QLinear, weight: np.ndarray, bias: np.ndarray) -> None:
  """Refuses layers whose int32 accumulator could overflow for some valid input codes.

  The bound per output channel is ``Σ|w_q| · (2^b_in − 1) + |b|``; below ``2^31`` an int32
  accumulator is exact in any summation order (the C runtime's and numpy's agree).
  """
  per_channel = np.abs(weight.reshape(weight.shape[0], -1).astype(np.int64)).sum(1)
  bound = per_channel * act_qrange(layer.a_bits)[1] + np.abs(bias.astype(np.int64))
  if bound.max(initial=0) > _INT32_MAX:
    raise ValueError(
      f"layer {layer.name!r}: the int32 accumulator can overflow "
      f"(bound {int(bound.max())} > {_INT32_MAX}); reduce the fan-in or the bias"
    )


def _conv_out_shape(layer: QConv, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
  h, w, _ = in_shape
  kh, kw, _, cout = np.shape(layer.weight)
  (top, bottom), (left, right) = layer.padding
  return (
    (h + top + bottom - kh) // layer.stride + 1,
    (w + left + right - kw) // layer.stride + 1,
    cout,
  )


def _int_conv(layer: QConv, nxt: QConv | QGlobalAvgPool | QAdd, in_shape) -> IntConv:
  weight = weight_codes(layer.weight, layer.w_step, layer.w_bits).transpose(3, 0, 1, 2)
  bias = _int32_bias(layer)
  _check_accumulator(layer, weight, bias)
  real = _f64(layer.in_step) * _f64(layer.w_step) / _f64(nxt.in_step)
  return IntConv(
    name=layer.name,
    weight=np.ascontiguousarray(weight),
    bias=bias,
    w_bits=int(layer.w_bits),
    w_scale=np.asarray(layer.w_step, np.float32),
    in_scale=float(np.float32(layer.in_step)),
    in_bits=int(layer.a_bits),
    in_shape=in_shape,
    out_shape=_conv_out_shape(layer, in_shape),
    stride=int(layer.stride),
    padding=tuple(tuple(int(p) for p in side) for side in layer.padding),
    groups=int(layer.groups),
    requant=_requantizer(real, nxt.a_bits, signed=isinstance(nxt, QAdd), relu=bool(layer.relu)),
  )


def _int_add(layer: QAdd, skip: QConv, nxt, shape: tuple[int, int, int]) -> IntAdd:
  """TFLite's int8 ADD parameters (``PrepareGeneralSubOp``): scales in double from float32."""
  in_scale, skip_scale = _f64(layer.in_step), _f64(skip.in_step)
  twice_max = 2 * max(float(in_scale), float(skip_scale))
  in_m, in_s = quantize_multiplier(float(in_scale) / twice_max)
  skip_m, skip_s = quantize_multiplier(float(skip_scale) / twice_max)
  real = twice_max / ((1 << ADD_LEFT_SHIFT) * float(_f64(nxt.in_step)))
  return IntAdd(
    name=layer.name,
    skip=int(layer.skip),
    shape=shape,
    in_scale=float(np.float32(layer.in_step)),
    in_zero_point=SIGNED_ZERO_POINT,
    in_bits=8,
    skip_scale=float(np.float32(skip.in_step)),
    skip_bits=int(skip.a_bits),
    left_shift=ADD_LEFT_SHIFT,
    in_multiplier=in_m,
    in_shift=in_s,
    skip_multiplier=skip_m,
    skip_shift=skip_s,
    requant=_requantizer(np.full(shape[2], real), nxt.a_bits),
  )


def add_codes(
  layer: IntAdd, h: np.ndarray, skip: np.ndarray, rounding: str = "single"
) -> np.ndarray:
  """TFLite's int8 ADD on codes: ``h`` uint8 with zero point 128, ``skip`` uint8 with 0.

  ``y = clip(MBQM(MBQM(s·2^20, m_s) + MBQM((h − 128)·2^20, m_h), M), 0, out_max)`` with every
  MBQM in ``rounding`` (TFLite's ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` is the
  double-rounding one). Returns uint8 codes of ``h``'s shape.
  """
  scale = np.int64(1) << layer.left_shift
  a = skip.astype(np.int64) * scale
  b = (h.astype(np.int64) - layer.in_zero_point) * scale
  total = multiply_by_quantized_multiplier(
    a, layer.skip_multiplier, layer.skip_shift, rounding
  ).astype(np.int64) + multiply_by_quantized_multiplier(
    b, layer.in_multiplier, layer.in_shift, rounding
  )
  return requantize(total, layer.requant, rounding)


def _int_pool(
  layer: QGlobalAvgPool, nxt: QLinear, in_shape: tuple[int, int, int]
) -> IntGlobalAvgPool:
  h, w, c = in_shape
  if h * w * act_qrange(layer.a_bits)[1] > _INT32_MAX:
    raise ValueError(f"layer {layer.name!r}: the int32 sum over {h}x{w} pixels can overflow")
  real = _f64(layer.in_step) / (h * w * _f64(nxt.in_step))
  return IntGlobalAvgPool(
    name=layer.name,
    in_scale=float(np.float32(layer.in_step)),
    in_bits=int(layer.a_bits),
    in_shape=in_shape,
    requant=_requantizer(np.full(c, real), nxt.a_bits),
  )


def _int_linear(layer: QLinear) -> IntLinear:
  weight = np.ascontiguousarray(weight_codes(layer.weight, layer.w_step, layer.w_bits).T)
  bias = _int32_bias(layer)
  _check_accumulator(layer, weight, bias)
  return IntLinear(
    name=layer.name,
    weight=weight,
    bias=bias,
    w_bits=int(layer.w_bits),
    w_scale=np.asarray(layer.w_step, np.float32),
    in_scale=float(np.float32(layer.in_step)),
    in_bits=int(layer.a_bits),
    logit_scale=bias_scale(layer),
  )


def to_integer_chain(chain: QuantizedChain, *, rounding: str = "single") -> IntegerChain:
  """The integer form of a chain: weight and bias codes and per-channel requantizers.

  Args:
    chain: a valid quantized chain.
    rounding: ``"single"`` or ``"double"`` requantization (see the module docstring).

  Returns:
    The :class:`IntegerChain`; every layer but the last requantizes to the next layer's
    input quantizer.

  Raises:
    ValueError: an unknown ``rounding``; the chain is invalid, a bias overflows int32, an
      accumulator could overflow int32, or a multiplier has no int32 fixed point (the message
      names the layer).
  """
  if rounding not in ROUNDINGS:
    raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
  validate_chain(chain)
  layers: list[IntLayer] = []
  shape = tuple(int(d) for d in chain.input_shape)
  for layer, nxt in zip(chain.layers, chain.layers[1:] + (None,), strict=True):
    if isinstance(layer, QConv):
      layers.append(_int_conv(layer, nxt, shape))
      shape = layers[-1].out_shape
    elif isinstance(layer, QAdd):
      layers.append(_int_add(layer, chain.layers[layer.skip], nxt, shape))
    elif isinstance(layer, QGlobalAvgPool):
      layers.append(_int_pool(layer, nxt, shape))
    else:  # validate_chain: the one QLinear is last
      layers.append(_int_linear(layer))
  return IntegerChain(
    tuple(layers), _input_shape(chain), chain.num_classes, rounding, dict(chain.metadata)
  )


def _input_shape(chain: QuantizedChain | IntegerChain) -> tuple[int, int, int]:
  h, w, c = (int(d) for d in chain.input_shape)
  return h, w, c


# --- the integer forward pass ----------------------------------------------------------------


def quantize_input(ichain: IntegerChain, x: np.ndarray) -> np.ndarray:
  """The uint8 input codes of the first layer's quantizer (the model's only float step in).

  Args:
    ichain: the integer chain.
    x: ``(N, H, W, C)`` float inputs, quantized as the reference does,
      ``clip(round_half_even(x / s_in), 0, 2^b − 1)`` in float64; or uint8 codes, checked to
      lie in ``[0, 2^b − 1]`` and returned unchanged.

  Returns:
    uint8 ``(N, H, W, C)`` codes.

  Raises:
    ValueError: wrong shape, or uint8 codes above the first quantizer's maximum.
  """
  first = ichain.layers[0]
  x = np.asarray(x)
  if x.ndim != 4 or x.shape[1:] != _input_shape(ichain):
    raise ValueError(f"expected input (N, *{_input_shape(ichain)}), got {x.shape}")
  qmax = act_qrange(first.in_bits)[1]
  if x.dtype == np.uint8:
    if x.size and int(x.max()) > qmax:
      raise ValueError(
        f"uint8 input codes must lie in [0, {qmax}] ({first.in_bits}-bit input quantizer of "
        f"layer {first.name!r}), got {int(x.max())}"
      )
    return x
  codes = np.round(np.asarray(x, np.float64) / _f64(first.in_scale))
  return np.clip(codes, 0, qmax).astype(np.uint8)


def _conv_acc(layer: IntConv, x: np.ndarray) -> np.ndarray:
  """``(N, Ho, Wo, cout)`` int64 accumulators (exact; bounded to int32 by construction)."""
  kernel_hwio = layer.weight.transpose(1, 2, 3, 0).astype(np.int64)
  acc = _conv2d_nhwc(x.astype(np.int64), kernel_hwio, layer.stride, layer.padding, layer.groups)
  return acc + layer.bias.astype(np.int64)


def integer_trace(chain: QuantizedChain | IntegerChain, x: np.ndarray) -> IntegerTrace:
  """Runs the integer model and keeps every layer's input codes and the final accumulators.

  Args:
    chain: a chain (converted by :func:`to_integer_chain`) or an integer chain.
    x: ``(N, H, W, C)`` float inputs or uint8 codes (see :func:`quantize_input`).

  Returns:
    The :class:`IntegerTrace`; ``accumulators`` are what the C runtime outputs.
  """
  ichain = chain if isinstance(chain, IntegerChain) else to_integer_chain(chain)
  codes = [quantize_input(ichain, x)]
  acc = None
  for layer in ichain.layers:
    x_q = codes[-1]
    if isinstance(layer, IntConv):
      codes.append(requantize(_conv_acc(layer, x_q), layer.requant, ichain.rounding))
    elif isinstance(layer, IntGlobalAvgPool):
      pooled = x_q.astype(np.int64).sum(axis=(1, 2))
      codes.append(requantize(pooled, layer.requant, ichain.rounding))
    elif isinstance(layer, IntAdd):
      codes.append(add_codes(layer, x_q, codes[layer.skip], ichain.rounding))
    else:
      acc = x_q.astype(np.int64) @ layer.weight.T.astype(np.int64) + layer.bias
  return IntegerTrace(tuple(codes), np.asarray(acc, np.int32))


def integer_forward(chain: QuantizedChain | IntegerChain, x: np.ndarray) -> np.ndarray:
  """Integer inference: float logits ``acc[c] · s_in · s_w[c]`` of the final linear.

  Everything between the input quantizer and that last scaling is integer arithmetic
  (see the module docstring); :func:`integer_trace` gives the int32 accumulators themselves.

  Args:
    chain: a chain or an integer chain.
    x: ``(N, H, W, C)`` float inputs, or uint8 codes of the first layer's input quantizer.

  Returns:
    float32 ``(N, num_classes)`` logits (the accumulator times its float32 scale, in float64,
    rounded once to float32).
  """
  ichain = chain if isinstance(chain, IntegerChain) else to_integer_chain(chain)
  acc = integer_trace(ichain, x).accumulators
  logit_scale = ichain.layers[-1].logit_scale.astype(np.float64)
  return (acc.astype(np.float64) * logit_scale).astype(np.float32)
