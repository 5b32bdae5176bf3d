"""Straight-through estimators: round half to even forward, identity or scaled gradient back."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant import round_ste, scale_grad


@pytest.mark.parametrize("fn", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_round_ste_forward_rounds_half_to_even(fn):
  x = jnp.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49, 0.51, -0.51, 7.2])
  expected = jnp.array([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0, 0.0, 1.0, -1.0, 7.0])
  out = fn(round_ste)(x)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.round(x)))


def test_round_ste_forward_matches_jnp_round_on_random_values():
  x = jnp.asarray(np.random.default_rng(0).normal(scale=5.0, size=(4, 7)).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(round_ste(x)), np.asarray(jnp.round(x)))


def test_round_ste_gradient_is_exactly_one():
  # Ties, integers, near-ties and large values: the gradient ignores where the value sits.
  x = jnp.array([-2.5, -1.0, -0.5, 0.0, 0.3, 0.5, 1.5, 2.0, 2.5, 99.7], jnp.float32)
  grad = jax.grad(lambda v: jnp.sum(round_ste(v)))(x)
  np.testing.assert_array_equal(np.asarray(grad), np.ones(x.shape, np.float32))
  # A non-uniform cotangent passes through unchanged (the Jacobian is the identity).
  cot = jnp.arange(1.0, 11.0, dtype=jnp.float32)
  _, vjp = jax.vjp(round_ste, x)
  np.testing.assert_array_equal(np.asarray(vjp(cot)[0]), np.asarray(cot))


@pytest.mark.parametrize("scale", [0.25, 3.0, 1.0 / np.sqrt(18 * 7)])
def test_scale_grad_keeps_value_and_scales_gradient(scale):
  x = jnp.asarray(np.random.default_rng(1).uniform(0.01, 1.0, size=(5,)).astype(np.float32))
  cot = jnp.asarray(np.random.default_rng(2).normal(size=(5,)).astype(np.float32))
  chex.assert_trees_all_close(scale_grad(x, scale), x, rtol=1e-6, atol=0)
  grad = jax.grad(lambda v: jnp.sum(cot * scale_grad(v, scale)))(x)
  chex.assert_trees_all_close(grad, cot * np.float32(scale), rtol=1e-6, atol=0)


def test_scale_grad_with_array_scale():
  x = jnp.array([1.0, 2.0, 3.0])
  scale = jnp.array([0.5, 2.0, -1.0])
  chex.assert_trees_all_close(scale_grad(x, scale), x, rtol=1e-6, atol=0)
  grad = jax.grad(lambda v: jnp.sum(scale_grad(v, scale)))(x)
  chex.assert_trees_all_close(grad, scale, rtol=1e-6, atol=0)


def test_scale_grad_value_is_bit_exact():
  x = jnp.asarray(np.random.default_rng(0).uniform(0.01, 1.0, size=(1000,)).astype(np.float32))
  out = scale_grad(x, 1.0 / np.sqrt(18 * 127))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
