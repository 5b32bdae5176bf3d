"""The hand-written gradients of the DARTS building blocks against autodiff of plain versions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant import init_act_step, init_weight_step, mix_activation, mix_weight
from search_spaces.darts_ops import (
  batch_norm,
  channel_shuffle,
  depthwise_conv,
  init_act_steps,
  init_weight_steps,
  mix_act_groups,
  mix_weight_groups,
)

BITS = (2, 4)


def lax_depthwise(x, kernel, stride, dilation):
  pad = dilation * (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
    x, kernel[:, :, None, :], (stride, stride), ((pad, pad), (pad, pad)),
    rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=x.shape[-1],
  )  # fmt: skip


def assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
  ("size", "k", "stride", "dilation"),
  [(8, 3, 1, 1), (8, 5, 1, 1), (8, 3, 2, 1), (8, 5, 2, 2), (7, 3, 2, 1), (7, 5, 1, 2)],
)
def test_depthwise_conv_and_its_gradients_equal_xla_conv(size, k, stride, dilation):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3))
  y = depthwise_conv(x, w, stride, dilation)
  np.testing.assert_allclose(y, lax_depthwise(x, w, stride, dilation), atol=1e-5)
  g = jax.random.normal(jax.random.key(2), y.shape)
  got = jax.vjp(lambda x, w: depthwise_conv(x, w, stride, dilation), x, w)[1](g)
  want = jax.vjp(lambda x, w: lax_depthwise(x, w, stride, dilation), x, w)[1](g)
  assert_trees_close(got, want, rtol=1e-4, atol=1e-4)


def test_mixed_activation_quantizer_equals_quant_mix_activation():
  """Values and gradients (x, steps, probs) of G stacked quantizers equal G separate
  ``quant.mix_activation`` calls, on the range bounds too (x = 0 and x = s·Q_P)."""
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 4, 4, 3, 5)))
  x = x.at[0, 0, 0, 0, :2].set(jnp.array([0.3 * 3, 0.3 * 15]))
  steps = jnp.array([[0.3, 0.1], [0.2, 0.05], [0.5, 0.2]])
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(1), (3, 2)))
  weight = jnp.arange(5.0)

  def stacked(x, s, p):
    return (jnp.square(mix_act_groups(x, s, p, BITS)) * weight).sum()

  def separate(x, s, p):
    outs = [mix_activation(x[:, :, :, g], s[g], p[g], BITS) for g in range(3)]
    return (jnp.square(jnp.stack(outs, 3)) * weight).sum()

  assert_trees_close(
    jax.value_and_grad(stacked, argnums=(0, 1, 2))(x, steps, probs),
    jax.value_and_grad(separate, argnums=(0, 1, 2))(x, steps, probs),
    rtol=1e-4,
  )


def test_mixed_weight_quantizer_equals_quant_mix_weight():
  w = jax.random.normal(jax.random.key(2), (3, 5, 5, 4))
  steps = jnp.abs(jax.random.normal(jax.random.key(3), (3, 2, 4))) * 0.3
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(1), (3, 2)))

  def stacked(w, s, p):
    return (jnp.square(mix_weight_groups(w, s, p, BITS)) * jnp.arange(4.0)).sum()

  def separate(w, s, p):
    outs = [mix_weight(w[g], s[g], p[g], BITS) for g in range(3)]
    return (jnp.square(jnp.stack(outs)) * jnp.arange(4.0)).sum()

  assert_trees_close(
    jax.value_and_grad(stacked, argnums=(0, 1, 2))(w, steps, probs),
    jax.value_and_grad(separate, argnums=(0, 1, 2))(w, steps, probs),
    rtol=1e-4,
  )


def test_initial_steps_follow_quant_formulas():
  w = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 3, 4)))
  got = np.asarray(init_weight_steps(jnp.asarray(w), BITS))
  want = np.stack([[init_weight_step(k, b) for b in BITS] for k in w])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  traced = jax.jit(lambda w: init_weight_steps(w, BITS))(jnp.asarray(w))
  np.testing.assert_allclose(traced, want, rtol=1e-5)
  x = np.abs(np.asarray(jax.random.normal(jax.random.key(1), (2, 4, 4, 3, 2))))
  want_a = [[init_act_step(x[:, :, :, g], b) for b in BITS] for g in range(3)]
  np.testing.assert_allclose(init_act_steps(jnp.asarray(x), BITS), want_a, rtol=1e-5)


def test_batch_norm_and_its_gradient():
  x = jax.random.normal(jax.random.key(0), (4, 5, 6, 3, 2)) * 3 + 1
  g = jax.random.normal(jax.random.key(1), x.shape)

  def plain(x):
    mean = x.mean(axis=(0, 1, 2))
    return (x - mean) / jnp.sqrt(jnp.square(x - mean).mean(axis=(0, 1, 2)) + 1e-5)

  np.testing.assert_allclose(batch_norm(x), plain(x), atol=1e-5)
  got = jax.vjp(batch_norm, x)[1](g)
  want = jax.vjp(plain, x)[1](g)
  assert_trees_close(got, want, atol=1e-5)


def test_channel_shuffle_is_pc_darts_order():
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)  # groups of 2: [0..3], [4..7] for 2 groups
  assert channel_shuffle(x, 2).reshape(-1).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
