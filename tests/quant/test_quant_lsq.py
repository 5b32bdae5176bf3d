"""LSQ fake quantization: ranges, the grid, and the hand-derived gradients of Esser et al."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant import (
  act_qrange,
  init_act_step,
  init_weight_step,
  lsq_quantize,
  quantize_activation,
  quantize_weight,
  weight_qrange,
)

_BITS = [2, 3, 4, 8]
_WEIGHT_RANGES = {2: (-1, 1), 3: (-3, 3), 4: (-7, 7), 8: (-127, 127)}
_ACT_RANGES = {2: (0, 3), 3: (0, 7), 4: (0, 15), 8: (0, 255)}
_KERNEL = (3, 3, 2, 4)  # HWIO: N = 3*3*2 = 18 weights share each output channel's step
_ACTS = (2, 3, 3, 2)  # NHWC: N = 3*3*2 = 18 elements per sample share the step


def _codes_off_ties(rng, shape, lo, hi):
  """Values k + f in code units, k in [lo, hi], f away from 0, ½ and 1: no ties, no boundary."""
  k = rng.integers(lo, hi + 1, size=shape)
  f = rng.uniform(0.1, 0.4, size=shape) + 0.5 * rng.integers(0, 2, size=shape)
  return k + f


def _lsq_grads(x, s, qn, qp, g, cot):
  """The equation: ∂x̂/∂s = round(x/s) − x/s inside, qn below, qp above; ∂x̂/∂x = 1 inside.

  Returns (dL/dx, per-element g·cot·∂x̂/∂s) in float64 for L = Σ cot·x̂.
  """
  u = np.asarray(x, np.float64) / np.asarray(s, np.float64)
  inside = (u > qn) & (u < qp)
  ds = np.where(u < qn, qn, np.where(u > qp, qp, np.round(u) - u))
  return np.where(inside, cot, 0.0), g * cot * ds


def _weight_case(bits, seed):
  rng = np.random.default_rng(seed)
  qn, qp = weight_qrange(bits)
  step = rng.uniform(0.05, 0.2, size=_KERNEL[-1]).astype(np.float32)
  u = _codes_off_ties(rng, _KERNEL, qn - 3, qp + 2)
  u[0, 0, 0, :] = qn - 2.3  # clips below in every channel
  u[0, 0, 1, :] = qp + 1.7  # clips above in every channel
  w = (u * step).astype(np.float32)
  cot = rng.normal(size=_KERNEL).astype(np.float32)
  return w, step, cot


@pytest.mark.parametrize("bits", _BITS)
def test_weight_qrange_table(bits):
  assert weight_qrange(bits) == _WEIGHT_RANGES[bits]


@pytest.mark.parametrize("bits", _BITS)
def test_act_qrange_table(bits):
  assert act_qrange(bits) == _ACT_RANGES[bits]


@pytest.mark.parametrize("bits", [1, 0, -4])
def test_weight_qrange_rejects_too_few_bits(bits):
  with pytest.raises(ValueError, match="weight bits must be >= 2"):
    weight_qrange(bits)


@pytest.mark.parametrize("bits", [0, -1])
def test_act_qrange_rejects_too_few_bits(bits):
  with pytest.raises(ValueError, match="activation bits must be >= 1"):
    act_qrange(bits)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("bits", _BITS)
def test_quantize_weight_lies_on_per_channel_grid(bits, jit):
  qn, qp = weight_qrange(bits)
  w, step, _ = _weight_case(bits, seed=bits)
  fn = jax.jit(quantize_weight, static_argnums=2) if jit else quantize_weight
  out = fn(jnp.asarray(w), jnp.asarray(step), bits)
  chex.assert_shape(out, _KERNEL)
  chex.assert_type(out, jnp.float32)
  codes = np.asarray(out) / step  # step broadcasts over the last (output-channel) axis
  np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
  assert codes.min() >= qn - 1e-4 and codes.max() <= qp + 1e-4
  # The grid oracle: s[c]·clip(round_half_even(w/s[c]), qn, qp).
  expected = step * np.clip(np.round(w.astype(np.float64) / step), qn, qp)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=1e-7)
  # Clipping at both ends of the range, channel by channel.
  np.testing.assert_allclose(np.asarray(out)[0, 0, 0], qn * step, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out)[0, 0, 1], qp * step, rtol=1e-6)


def test_quantize_weight_uses_each_channels_own_step():
  # One value per input position, four very different steps: a wrong broadcast mixes them.
  w = jnp.full(_KERNEL, 0.93, jnp.float32)  # codes 9.3, 4.65, 2.325, 0.93
  step = jnp.array([0.1, 0.2, 0.4, 1.0], jnp.float32)
  out = quantize_weight(w, step, 8)
  np.testing.assert_allclose(np.asarray(out)[1, 2, 1], [0.9, 1.0, 0.8, 1.0], rtol=1e-6)


def test_quantize_weight_dense_kernel():
  w = jnp.array([[0.26, -0.9], [-0.05, 3.0]], jnp.float32)  # (cin, cout)
  out = quantize_weight(w, jnp.array([0.1, 0.5], jnp.float32), 3)  # codes in [-3, 3]
  np.testing.assert_allclose(np.asarray(out), [[0.3, -1.0], [-0.0, 1.5]], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_weight_step_gradient_matches_lsq_formula(bits):
  qn, qp = weight_qrange(bits)
  w, step, cot = _weight_case(bits, seed=10 + bits)
  n = w.size // w.shape[-1]
  g = 1.0 / math.sqrt(n * qp)

  def loss(w, s):
    return jnp.sum(jnp.asarray(cot) * quantize_weight(w, s, bits))

  dw, ds = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(w), jnp.asarray(step))
  dw_ref, ds_elems = _lsq_grads(w, step, qn, qp, g, cot)
  chex.assert_shape(ds, step.shape)
  ds_ref = ds_elems.reshape(-1, w.shape[-1]).sum(axis=0)
  np.testing.assert_allclose(np.asarray(ds), ds_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dw), dw_ref, rtol=1e-5, atol=1e-6)
  # Both clipping branches are exercised, and the STE zeroes the gradient there.
  assert np.asarray(dw)[0, 0, :2].max() == 0.0 and np.asarray(dw)[0, 0, :2].min() == 0.0


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_activation_step_gradient_matches_lsq_formula(bits):
  qn, qp = act_qrange(bits)
  rng = np.random.default_rng(20 + bits)
  step = np.float32(rng.uniform(0.05, 0.2))
  u = _codes_off_ties(rng, _ACTS, -3, qp + 2)
  u[:, 0, 0, 0] = -1.3  # negative: clips to 0
  u[:, 0, 0, 1] = qp + 2.2  # large: clips at qp
  x = (u * step).astype(np.float32)
  cot = rng.normal(size=_ACTS).astype(np.float32)
  n = x.size // x.shape[0]
  g = 1.0 / math.sqrt(n * qp)

  def loss(x, s):
    return jnp.sum(jnp.asarray(cot) * quantize_activation(x, s, bits))

  dx, ds = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(step))
  dx_ref, ds_elems = _lsq_grads(x, step, qn, qp, g, cot)
  chex.assert_shape(ds, ())
  np.testing.assert_allclose(float(ds), ds_elems.sum(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dx), dx_ref, rtol=1e-5, atol=1e-6)
  out = np.asarray(quantize_activation(jnp.asarray(x), jnp.asarray(step), bits))
  np.testing.assert_allclose(out[:, 0, 0, 0], 0.0, atol=0)
  np.testing.assert_allclose(out[:, 0, 0, 1], qp * step, rtol=1e-6)
  expected = step * np.clip(np.round(x.astype(np.float64) / step), qn, qp)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_lsq_quantize_single_element_gradient_by_hand():
  # x/s = 2.3 inside [-7, 7]: ∂x̂/∂s = round(2.3) − 2.3 = −0.3, times g = 0.5.
  ds = jax.grad(lambda s: lsq_quantize(jnp.float32(0.23), s, -7, 7, 0.5))(jnp.float32(0.1))
  np.testing.assert_allclose(float(ds), -0.15, rtol=1e-5)
  # x/s = −9 clips at −7: ∂x̂/∂s = −7 (= qn), times g = 0.5.
  ds = jax.grad(lambda s: lsq_quantize(jnp.float32(-0.9), s, -7, 7, 0.5))(jnp.float32(0.1))
  np.testing.assert_allclose(float(ds), -3.5, rtol=1e-6)


@pytest.mark.parametrize("bits", _BITS)
def test_init_weight_step_is_lsq_init_per_channel(bits):
  w = np.random.default_rng(bits).normal(size=_KERNEL).astype(np.float32)
  w[..., 2] *= 10.0  # channels differ: a global mean would fail
  _, qp = weight_qrange(bits)
  step = init_weight_step(w, bits)
  chex.assert_shape(step, (_KERNEL[-1],))
  assert step.dtype == np.float32
  expected = 2.0 * np.abs(w).reshape(-1, _KERNEL[-1]).mean(axis=0) / np.sqrt(qp)
  np.testing.assert_allclose(step, expected, rtol=1e-6)


def test_init_weight_step_has_positive_floor():
  w = np.zeros(_KERNEL, np.float32)
  w[..., 1] = 1.0
  step = init_weight_step(w, 4)
  assert np.all(step > 0)
  np.testing.assert_allclose(step[[0, 2, 3]], 1e-6)
  np.testing.assert_allclose(step[1], 2.0 / np.sqrt(7), rtol=1e-6)


@pytest.mark.parametrize("bits", _BITS)
def test_init_act_step_is_lsq_init(bits):
  x = np.random.default_rng(bits).uniform(0.0, 3.0, size=_ACTS).astype(np.float32)
  _, qp = act_qrange(bits)
  step = init_act_step(x, bits)
  assert np.ndim(step) == 0
  np.testing.assert_allclose(step, 2.0 * np.abs(x).mean() / np.sqrt(qp), rtol=1e-6)


def test_init_act_step_has_positive_floor():
  step = init_act_step(np.zeros(_ACTS, np.float32), 8)
  assert step > 0
  np.testing.assert_allclose(step, 1e-4)
