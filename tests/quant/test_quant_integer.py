"""Integer codes agree with the fake quantizers; int4 packing is low nibble first."""

import jax.numpy as jnp
import numpy as np
import pytest

from quant import (
  act_codes,
  act_qrange,
  init_act_step,
  init_weight_step,
  pack_int4,
  quantize_activation,
  quantize_weight,
  unpack_int4,
  weight_codes,
  weight_qrange,
)

_BITS = [2, 3, 4, 8]
_KERNEL = (3, 3, 2, 4)
_ACTS = (2, 3, 3, 2)


def _kernel(bits, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=_KERNEL).astype(np.float32)
  step = init_weight_step(w, bits)
  w[0, 0, 0] = -300.0 * step  # clips below
  w[0, 0, 1] = 300.0 * step  # clips above
  return w, step


def _acts(bits, seed=1):
  x = np.random.default_rng(seed).uniform(-1.0, 4.0, size=_ACTS).astype(np.float32)
  step = init_act_step(x, bits)
  x[0, 0, 0, 0] = 600.0 * step  # clips above
  return x, step


@pytest.mark.parametrize("bits", _BITS)
def test_weight_codes_are_rounded_clipped_int8(bits):
  w, step = _kernel(bits)
  qn, qp = weight_qrange(bits)
  codes = weight_codes(w, step, bits)
  assert codes.dtype == np.int8 and codes.shape == _KERNEL
  np.testing.assert_array_equal(codes, np.clip(np.round(w / step), qn, qp))
  np.testing.assert_array_equal(codes[0, 0, 0], np.full(_KERNEL[-1], qn))
  np.testing.assert_array_equal(codes[0, 0, 1], np.full(_KERNEL[-1], qp))


@pytest.mark.parametrize("bits", _BITS)
def test_weight_codes_times_step_is_fake_quantized_weight(bits):
  w, step = _kernel(bits)
  fake = np.asarray(quantize_weight(jnp.asarray(w), jnp.asarray(step), bits))
  dequant = weight_codes(w, step, bits).astype(np.float32) * step
  np.testing.assert_allclose(dequant, fake, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", _BITS)
def test_act_codes_are_rounded_clipped_uint8(bits):
  x, step = _acts(bits)
  qn, qp = act_qrange(bits)
  codes = act_codes(x, step, bits)
  assert codes.dtype == np.uint8 and codes.shape == _ACTS
  np.testing.assert_array_equal(codes, np.clip(np.round(x / step), qn, qp))
  assert codes[0, 0, 0, 0] == qp
  assert np.all(codes[x < 0] == 0)


@pytest.mark.parametrize("bits", _BITS)
def test_act_codes_times_step_is_fake_quantized_activation(bits):
  x, step = _acts(bits)
  fake = np.asarray(quantize_activation(jnp.asarray(x), jnp.asarray(step), bits))
  dequant = act_codes(x, step, bits).astype(np.float32) * step
  np.testing.assert_allclose(dequant, fake, rtol=0, atol=1e-6)


def test_codes_round_half_to_even():
  step = np.full(2, 0.5, np.float32)
  w = np.array([[0.25, 0.75], [1.25, -0.25], [-0.75, 1.75]], np.float32)  # codes ±0.5, 1.5 …
  np.testing.assert_array_equal(weight_codes(w, step, 4), [[0, 2], [2, 0], [-2, 4]])
  x = np.array([[0.25, 0.75, 1.25]], np.float32)
  np.testing.assert_array_equal(act_codes(x, np.float32(0.5), 4), [[0, 2, 2]])


def test_fake_quantizer_and_codes_agree_on_ties():
  # w/s = 0.5 exactly in float32, so round half to even gives code 0. For this step (found by
  # search) an inexact scale_grad(s, 1/sqrt(18*127)), the step that an 8-bit HWIO kernel with
  # 18 weights per output channel quantizes with, came out one ulp low and the fake quantizer
  # rounded to 1.
  s0 = np.uint32(1031092301).view(np.float32)  # 0.059868146
  w0 = np.float32(0.5) * s0
  assert w0 / s0 == np.float32(0.5)
  w = np.full(_KERNEL, w0, np.float32)
  step = np.full(_KERNEL[-1], s0, np.float32)
  np.testing.assert_array_equal(weight_codes(w, step, 8), 0)
  fake = np.asarray(quantize_weight(jnp.asarray(w), jnp.asarray(step), 8))
  np.testing.assert_allclose(fake, 0.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 15])
def test_pack_unpack_int4_round_trip(n):
  codes = np.random.default_rng(n).integers(-8, 8, size=n).astype(np.int8)
  packed = pack_int4(codes)
  assert packed.dtype == np.uint8
  assert packed.shape == ((n + 1) // 2,)
  out = unpack_int4(packed, n)
  assert out.dtype == np.int8
  np.testing.assert_array_equal(out, codes)


def test_pack_int4_flattens_in_c_order():
  codes = np.array([[-8, -1, 0], [1, 6, 7]], np.int8)
  np.testing.assert_array_equal(unpack_int4(pack_int4(codes), 6), codes.reshape(-1))


def test_pack_int4_low_nibble_first():
  np.testing.assert_array_equal(pack_int4(np.array([1, -2])), [0xE1])
  np.testing.assert_array_equal(pack_int4(np.array([-8, 7, 3])), [0x78, 0x03])
  np.testing.assert_array_equal(pack_int4(np.array([-1, 0])), [0x0F])
  np.testing.assert_array_equal(unpack_int4(np.array([0xE1], np.uint8), 2), [1, -2])


@pytest.mark.parametrize("bad", [[8], [-9], [0, 1, 100]])
def test_pack_int4_rejects_out_of_range(bad):
  with pytest.raises(ValueError, match=r"int4 codes must lie in \[-8, 7\]"):
    pack_int4(np.array(bad))


def test_pack_int4_of_4bit_weight_codes():
  w, step = _kernel(4)
  codes = weight_codes(w, step, 4)
  packed = pack_int4(codes)
  assert packed.size == (codes.size + 1) // 2
  np.testing.assert_array_equal(unpack_int4(packed, codes.size).reshape(_KERNEL), codes)
