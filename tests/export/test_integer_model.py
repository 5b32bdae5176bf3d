"""The integer reference model against the float fake-quant oracle and TFLite's fixed point."""

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from qdarts.export import QConv, QGlobalAvgPool, QLinear, QuantizedChain, reference_forward
from qdarts.export.integer_model import (
  IntConv,
  IntGlobalAvgPool,
  IntLinear,
  integer_forward,
  integer_trace,
  multiply_by_quantized_multiplier,
  quantize_input,
  quantize_multiplier,
  requantize,
  to_integer_chain,
)
from qdarts.export.ir import _conv2d_nhwc, _fake_quant_weight, _round_bias
from quant.integer import weight_codes

INPUT_SHAPE = (8, 8, 2)
NUM_CLASSES = 6

# name: (w_bits of conv0, dw1, pw2, fc; a_bits of conv0, dw1, pw2, gap, fc)
BIT_CASES = {
  "all8": ((8, 8, 8, 8), (8, 8, 8, 8, 8)),
  "all4": ((4, 4, 4, 4), (4, 4, 4, 4, 4)),
  "all2": ((2, 2, 2, 2), (2, 2, 2, 2, 2)),
  "mixed": ((8, 4, 2, 8), (8, 4, 2, 8, 8)),
  "mixed_rev": ((2, 4, 8, 4), (2, 4, 8, 2, 4)),
  "odd": ((3, 5, 6, 7), (8, 1, 3, 5, 6)),
}


def _conv(rng, name, cin, cout, k, stride, groups, w_bits, a_bits, in_step, pad, relu=True):
  weight = rng.normal(0.0, 1.0 / np.sqrt(k * k * cin // groups), (k, k, cin // groups, cout))
  return QConv(
    name=name,
    weight=weight.astype(np.float32),
    bias=rng.normal(0.0, 0.1, cout).astype(np.float32),
    w_step=(np.abs(weight).reshape(-1, cout).max(0) / (2 ** (w_bits - 1) - 1)).astype(np.float32),
    w_bits=w_bits,
    in_step=in_step,
    a_bits=a_bits,
    stride=stride,
    padding=pad,
    groups=groups,
    relu=relu,
  )


def make_chain(w_bits, a_bits, seed=0, relu=True):
  """8x8x2 → conv3x3(4) → depthwise 3x3 stride 2 → conv1x1(8) → GAP → linear(6).

  Activation steps cover a fixed range per bit-width, jittered so no two have a simple ratio.
  """
  rng = np.random.default_rng(seed)

  def step(bits, top):
    return float(top * rng.uniform(0.9, 1.1) / (2**bits - 1))

  no_pad, pad1, pad_end = ((0, 0), (0, 0)), ((1, 1), (1, 1)), ((0, 1), (0, 1))
  layers = (
    _conv(rng, "conv0", 2, 4, 3, 1, 1, w_bits[0], a_bits[0], step(a_bits[0], 1.0), pad1, relu),
    _conv(rng, "dw1", 4, 4, 3, 2, 4, w_bits[1], a_bits[1], step(a_bits[1], 0.6), pad_end, relu),
    _conv(rng, "pw2", 4, 8, 1, 1, 1, w_bits[2], a_bits[2], step(a_bits[2], 0.8), no_pad, relu),
    QGlobalAvgPool("gap", in_step=step(a_bits[3], 1.0), a_bits=a_bits[3]),
  )
  weight = rng.normal(0.0, 0.5, (8, NUM_CLASSES)).astype(np.float32)
  fc = QLinear(
    "fc",
    weight,
    rng.normal(0.0, 0.1, NUM_CLASSES).astype(np.float32),
    (np.abs(weight).max(0) / (2 ** (w_bits[3] - 1) - 1)).astype(np.float32),
    w_bits[3],
    in_step=step(a_bits[4], 0.5),
    a_bits=a_bits[4],
  )
  return QuantizedChain(layers + (fc,), INPUT_SHAPE, NUM_CLASSES, {"dataset": "toy"})


def _inputs(n=256, seed=1):
  return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def _codes(x, step, bits):
  return np.clip(np.round(x / float(np.float32(step))), 0, 2**bits - 1)


def _float_layer(layer, xq):
  """One layer of ``reference_forward(..., int32_bias=True)`` on dequantized inputs."""
  if isinstance(layer, QConv):
    w = _fake_quant_weight(layer.weight, layer.w_step, layer.w_bits)
    y = _conv2d_nhwc(xq, w, layer.stride, layer.padding, layer.groups) + _round_bias(layer)
    return np.maximum(y, 0.0) if layer.relu else y
  if isinstance(layer, QGlobalAvgPool):
    return xq.mean(axis=(1, 2))
  return xq @ _fake_quant_weight(layer.weight, layer.w_step, layer.w_bits) + _round_bias(layer)


def reference_codes(chain, x):
  """Every layer's input codes in the float64 oracle, and its logits."""
  codes, y = [], np.asarray(x, np.float64)
  for layer in chain.layers:
    codes.append(_codes(y, layer.in_step, layer.a_bits))
    y = _float_layer(layer, codes[-1] * float(np.float32(layer.in_step)))
  return codes, y


def test_quantize_multiplier_known_values():
  assert quantize_multiplier(0.5) == (2**30, 0)
  assert quantize_multiplier(1.0) == (2**30, 1)
  assert quantize_multiplier(0.75) == (3 * 2**29, 0)
  assert quantize_multiplier(0.0) == (0, 0)
  assert quantize_multiplier(2.0**-40) == (0, 0)  # below 2^-32: every accumulator rounds to 0
  assert quantize_multiplier(1 - 2.0**-40) == (2**30, 1)  # round(q·2^31) carries to 2^31
  for bad in (-0.1, float("nan"), 2.0**30):
    with pytest.raises(ValueError, match="multiplier"):
      quantize_multiplier(bad)


def test_quantize_multiplier_is_31_bit_accurate():
  for real in np.exp(np.random.default_rng(0).uniform(np.log(1e-7), np.log(1e3), 500)):
    m, shift = quantize_multiplier(float(real))
    assert 2**30 <= m < 2**31 and -31 <= shift <= 30
    assert abs(Fraction(m) * Fraction(2) ** (shift - 31) - Fraction(real)) <= Fraction(2) ** (
      shift - 32
    )


def _gemmlowp_scalar(x: int, m: int, shift: int) -> int:
  """TFLite's double-rounding MultiplyByQuantizedMultiplier, transcribed with Python ints."""
  left, right = max(shift, 0), max(-shift, 0)
  a = max(min(x * 2**left, 2**31 - 1), -(2**31))
  ab = a * m
  nudge = 2**30 if ab >= 0 else 1 - 2**30
  high = int(Fraction(ab + nudge, 2**31))  # int() of a Fraction truncates toward zero
  floor, remainder = divmod(high, 2**right)
  threshold = (2**right - 1) // 2 + (1 if high < 0 else 0)
  return floor + (1 if remainder > threshold else 0)


def _random_requant_cases(n=2000, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(-(2**20), 2**20, n)
  x[: n // 4] = rng.integers(-40, 40, n // 4)  # small accumulators: where the modes differ
  reals = np.exp(rng.uniform(np.log(1e-6), np.log(50.0), n))
  pairs = np.array([quantize_multiplier(float(r)) for r in reals])
  return x, pairs[:, 0], pairs[:, 1]


def test_single_rounding_is_round_half_up_of_the_fixed_point_product():
  x, m, shift = _random_requant_cases()
  y = multiply_by_quantized_multiplier(x, m, shift, "single")
  expected = [
    int(np.floor(Fraction(int(a) * int(b), 2 ** (31 - int(s))) + Fraction(1, 2)))
    for a, b, s in zip(x, m, shift, strict=True)
  ]
  assert y.dtype == np.int32 and y.tolist() == expected


def test_double_rounding_matches_gemmlowp_transcription():
  x, m, shift = _random_requant_cases(seed=1)
  y = multiply_by_quantized_multiplier(x, m, shift, "double")
  expected = [_gemmlowp_scalar(int(a), int(b), int(s)) for a, b, s in zip(x, m, shift, strict=True)]
  assert y.tolist() == expected
  single = multiply_by_quantized_multiplier(x, m, shift, "single")
  assert 0 < np.mean(single != y) < 0.2 and np.abs(single.astype(int) - y).max() == 1


def test_double_rounding_is_off_by_one_on_a_small_accumulator():
  # 7·0.33158 = 2.32: SRDHM gives round(4.64) = 5, then 5 / 2 rounds to 3.
  m, shift = quantize_multiplier(0.33158185)
  assert multiply_by_quantized_multiplier(7, m, shift, "single") == 2
  assert multiply_by_quantized_multiplier(7, m, shift, "double") == 3


@pytest.mark.parametrize("rounding", ["single", "double"])
def test_requantize_clamps_and_saturates(rounding):
  ichain = to_integer_chain(make_chain(*BIT_CASES["mixed"]), rounding=rounding)
  requant = ichain.layers[1].requant  # dw1 → pw2, 2-bit output codes
  acc = np.array([[-(2**31), -5, 0, 2**31 - 1]] * 4).T  # (4 values, 4 channels)
  y = requantize(acc, requant, rounding)
  assert y.dtype == np.uint8 and requant.out_max == 3
  np.testing.assert_array_equal(y[0], 0)
  np.testing.assert_array_equal(y[1], 0)
  np.testing.assert_array_equal(y[2], 0)
  np.testing.assert_array_equal(y[3], 3)
  with pytest.raises(ValueError, match="rounding"):
    multiply_by_quantized_multiplier(1, 2**30, 0, "nearest")


def test_integer_chain_holds_codes_and_multipliers():
  chain = make_chain(*BIT_CASES["mixed"])
  ichain = to_integer_chain(chain)
  conv0, dw1, pw2, gap, fc = ichain.layers
  assert isinstance(conv0, IntConv) and isinstance(gap, IntGlobalAvgPool)
  assert isinstance(fc, IntLinear) and ichain.rounding == "single"
  expected = weight_codes(chain.layers[1].weight, chain.layers[1].w_step, 4).transpose(3, 0, 1, 2)
  np.testing.assert_array_equal(dw1.weight, expected)  # OHWI
  assert dw1.weight.dtype == np.int8 and dw1.bias.dtype == np.int32 and dw1.groups == 4
  assert (conv0.out_shape, dw1.out_shape, pw2.out_shape) == ((8, 8, 4), (4, 4, 4), (4, 4, 8))
  s = [float(np.float32(layer.in_step)) for layer in chain.layers]
  np.testing.assert_allclose(dw1.requant.real, s[1] * chain.layers[1].w_step / s[2], rtol=1e-6)
  # The mean's 1/(H·W) is folded into the pool's multiplier.
  np.testing.assert_allclose(gap.requant.real, s[3] / (4 * 4 * s[4]), rtol=1e-12)
  np.testing.assert_array_equal(fc.weight, weight_codes(chain.layers[4].weight, fc.w_scale, 8).T)
  np.testing.assert_allclose(fc.logit_scale, s[4] * chain.layers[4].w_step, rtol=1e-6)
  m = dw1.requant.multiplier.astype(np.float64) * 2.0 ** (dw1.requant.shift - 31.0)
  np.testing.assert_allclose(m, dw1.requant.real, rtol=2.0**-30)


@pytest.mark.parametrize("case", sorted(BIT_CASES))
def test_integer_forward_matches_reference(case):
  chain = make_chain(*BIT_CASES[case])
  x = _inputs()
  ref_codes, ref_logits = reference_codes(chain, x)
  expected = reference_forward(chain, x, int32_bias=True)
  np.testing.assert_allclose(ref_logits, expected, rtol=0, atol=1e-6 * np.abs(expected).max())

  trace = integer_trace(chain, x)
  assert len(trace.codes) == len(chain.layers)
  for layer, codes, ref in zip(chain.layers, trace.codes, ref_codes, strict=True):
    diff = np.abs(codes.astype(np.int64) - ref)
    assert codes.dtype == np.uint8 and codes.max() <= 2**layer.a_bits - 1
    assert diff.max() <= 1, layer.name
    assert np.mean(diff == 0) >= 0.999, layer.name
  logits = integer_forward(chain, x)
  assert logits.dtype == np.float32 and logits.shape == (256, NUM_CLASSES)
  assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("case", ["all2", "mixed", "odd"])
def test_double_rounding_is_within_one_code_per_layer(case):
  chain = make_chain(*BIT_CASES[case])
  trace = integer_trace(to_integer_chain(chain, rounding="double"), _inputs(64))
  # Teacher-forced: each layer on the integer model's own input codes, against the oracle.
  for k, (layer, nxt) in enumerate(zip(chain.layers[:-1], chain.layers[1:], strict=True)):
    y = _float_layer(layer, trace.codes[k] * float(np.float32(layer.in_step)))
    ref = _codes(y, nxt.in_step, nxt.a_bits)
    assert np.abs(trace.codes[k + 1].astype(np.int64) - ref).max() <= 1, layer.name


def test_all_8bit_matches_float_bias_reference():
  chain = make_chain(*BIT_CASES["all8"])
  x = _inputs()
  logits, expected = integer_forward(chain, x), reference_forward(chain, x)
  assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-2 * np.abs(expected).max())


def test_relu_is_folded_into_the_clamp():
  x = _inputs(32)
  with_relu = integer_trace(make_chain(*BIT_CASES["mixed"]), x)
  without = integer_trace(make_chain(*BIT_CASES["mixed"], relu=False), x)
  for a, b in zip(with_relu.codes, without.codes, strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(with_relu.accumulators, without.accumulators)


def test_uint8_codes_input_and_errors():
  ichain = to_integer_chain(make_chain(*BIT_CASES["mixed_rev"]))  # 2-bit input quantizer
  x = _inputs(16)
  codes = quantize_input(ichain, x)
  assert codes.dtype == np.uint8 and codes.max() == 3
  np.testing.assert_array_equal(integer_forward(ichain, codes), integer_forward(ichain, x))
  with pytest.raises(ValueError, match=r"\[0, 3\].*conv0"):
    integer_forward(ichain, np.full((1, *INPUT_SHAPE), 4, np.uint8))
  with pytest.raises(ValueError, match="expected input"):
    integer_forward(ichain, x[:, :4])
  with pytest.raises(ValueError, match="rounding"):
    to_integer_chain(make_chain(*BIT_CASES["all8"]), rounding="nearest")


def test_int32_overflow_is_refused_naming_the_layer():
  chain = make_chain(*BIT_CASES["all8"])
  fc = chain.layers[-1]
  huge_bias = dataclasses.replace(fc, bias=np.full(NUM_CLASSES, 1e9, np.float32))
  with pytest.raises(ValueError, match="'fc'.*overflows int32"):
    to_integer_chain(dataclasses.replace(chain, layers=chain.layers[:-1] + (huge_bias,)))
  # 70,000 inputs · 255 · 127 > 2^31: an int32 accumulator could overflow.
  cin = 70_000
  wide = QuantizedChain(
    (
      QGlobalAvgPool("gap", in_step=0.01, a_bits=8),
      QLinear("wide", np.ones((cin, 2), np.float32), np.zeros(2, np.float32),
              np.full(2, 1 / 127, np.float32), 8, in_step=0.01, a_bits=8),
    ),
    (1, 1, cin),
    2,
  )  # fmt: skip
  with pytest.raises(ValueError, match="'wide'.*accumulator can overflow"):
    to_integer_chain(wide)
