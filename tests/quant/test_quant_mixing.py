"""Bit-width mixing: Σ_b p_b·Q_b(·) against the single quantizers, and its gradient in p."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant import (
  expected_bits,
  init_act_step,
  init_weight_step,
  mix_activation,
  mix_weight,
  quantize_activation,
  quantize_weight,
)

_W_BITS = (2, 4, 8)
_A_BITS = (2, 4, 8)
_KERNEL = (3, 3, 2, 4)
_ACTS = (2, 3, 3, 2)


def _weight_case(seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=_KERNEL).astype(np.float32)
  steps = np.stack([init_weight_step(w, b) for b in _W_BITS])  # (Bw, cout)
  probs = rng.dirichlet(np.ones(len(_W_BITS))).astype(np.float32)
  cot = rng.normal(size=_KERNEL).astype(np.float32)
  return jnp.asarray(w), jnp.asarray(steps), jnp.asarray(probs), jnp.asarray(cot)


def _act_case(seed=1):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-0.5, 3.0, size=_ACTS).astype(np.float32)
  steps = np.array([init_act_step(x, b) for b in _A_BITS], np.float32)  # (Ba,)
  probs = rng.dirichlet(np.ones(len(_A_BITS))).astype(np.float32)
  cot = rng.normal(size=_ACTS).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(steps), jnp.asarray(probs), jnp.asarray(cot)


def _weight_terms(w, steps):
  return [quantize_weight(w, steps[i], b) for i, b in enumerate(_W_BITS)]


def _act_terms(x, steps):
  return [quantize_activation(x, steps[i], b) for i, b in enumerate(_A_BITS)]


def test_mix_weight_is_probability_weighted_sum():
  w, steps, probs, _ = _weight_case()
  out = jax.jit(mix_weight, static_argnums=3)(w, steps, probs, _W_BITS)
  chex.assert_shape(out, _KERNEL)
  expected = sum(float(probs[i]) * np.asarray(q) for i, q in enumerate(_weight_terms(w, steps)))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_mix_activation_is_probability_weighted_sum():
  x, steps, probs, _ = _act_case()
  out = jax.jit(mix_activation, static_argnums=3)(x, steps, probs, _A_BITS)
  chex.assert_shape(out, _ACTS)
  expected = sum(float(probs[i]) * np.asarray(q) for i, q in enumerate(_act_terms(x, steps)))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", range(len(_W_BITS)))
def test_one_hot_probs_select_one_quantizer_exactly(index):
  w, w_steps, _, _ = _weight_case()
  x, a_steps, _, _ = _act_case()
  one_hot = jax.nn.one_hot(index, len(_W_BITS), dtype=jnp.float32)
  np.testing.assert_array_equal(
    np.asarray(mix_weight(w, w_steps, one_hot, _W_BITS)),
    np.asarray(quantize_weight(w, w_steps[index], _W_BITS[index])),
  )
  np.testing.assert_array_equal(
    np.asarray(mix_activation(x, a_steps, one_hot, _A_BITS)),
    np.asarray(quantize_activation(x, a_steps[index], _A_BITS[index])),
  )


def test_single_candidate():
  w, w_steps, _, _ = _weight_case()
  x, a_steps, _, _ = _act_case()
  prob = jnp.array([0.75], jnp.float32)
  chex.assert_trees_all_close(
    mix_weight(w, w_steps[1:2], prob, (4,)), 0.75 * quantize_weight(w, w_steps[1], 4), atol=0
  )
  chex.assert_trees_all_close(
    mix_activation(x, a_steps[2:], prob, (8,)),
    0.75 * quantize_activation(x, a_steps[2], 8),
    atol=0,
  )
  # ∂/∂p of Σ cot·p·Q(·) is Σ cot·Q(·) for a single candidate too.
  grad = jax.grad(lambda p: jnp.sum(mix_weight(w, w_steps[1:2], p, (4,))))(prob)
  np.testing.assert_allclose(
    np.asarray(grad), [float(jnp.sum(quantize_weight(w, w_steps[1], 4)))], rtol=1e-5
  )


def test_mix_weight_gradient_in_probs_is_quantizer_contracted_with_cotangent():
  w, steps, probs, cot = _weight_case()
  grad = jax.grad(lambda p: jnp.sum(cot * mix_weight(w, steps, p, _W_BITS)))(probs)
  chex.assert_shape(grad, (len(_W_BITS),))
  expected = [float(jnp.sum(cot * q)) for q in _weight_terms(w, steps)]
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)


def test_mix_activation_gradient_in_probs_is_quantizer_contracted_with_cotangent():
  x, steps, probs, cot = _act_case()
  grad = jax.grad(lambda p: jnp.sum(cot * mix_activation(x, steps, p, _A_BITS)))(probs)
  chex.assert_shape(grad, (len(_A_BITS),))
  expected = [float(jnp.sum(cot * q)) for q in _act_terms(x, steps)]
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)


def test_mix_weight_step_gradient_is_probability_weighted():
  # Each candidate's steps receive p_b times that quantizer's own LSQ gradient.
  w, steps, probs, cot = _weight_case()
  grad = jax.grad(lambda s: jnp.sum(cot * mix_weight(w, s, probs, _W_BITS)))(steps)
  chex.assert_shape(grad, steps.shape)
  for i, b in enumerate(_W_BITS):
    own = jax.grad(lambda s, b=b: jnp.sum(cot * quantize_weight(w, s, b)))(steps[i])
    np.testing.assert_allclose(
      np.asarray(grad[i]), probs[i] * np.asarray(own), rtol=1e-5, atol=1e-7
    )


def test_expected_bits():
  probs = jnp.array([0.25, 0.25, 0.5], jnp.float32)
  np.testing.assert_allclose(float(expected_bits(probs, (2, 4, 8))), 5.5, rtol=1e-6)
  np.testing.assert_allclose(float(expected_bits(jnp.array([0.0, 1.0, 0.0]), (2, 4, 8))), 4.0)


def test_expected_bits_over_last_axis_matches_loop():
  bits = (2, 3, 4, 8)
  probs = jnp.asarray(np.random.default_rng(3).dirichlet(np.ones(4), size=5).astype(np.float32))
  out = expected_bits(probs, bits)
  chex.assert_shape(out, (5,))
  expected = [sum(float(row[j]) * b for j, b in enumerate(bits)) for row in probs]
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
  grad = jax.grad(lambda p: jnp.sum(expected_bits(p, bits)))(probs)
  np.testing.assert_allclose(np.asarray(grad), np.broadcast_to(bits, (5, 4)), rtol=1e-6)
