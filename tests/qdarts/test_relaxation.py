"""Samplers and the temperature schedule; gumbel_hard runs exactly one op and bit pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qdarts.relaxation import relax, sample_probs, temperature
from qdarts.supernet import Supernet, masked_logits
from search_spaces import Choice, TinySpace

KEY = jax.random.key(0)


@pytest.mark.parametrize("sampler", ["softmax", "gumbel", "gumbel_hard"])
def test_samples_are_distributions(sampler):
  logits = jax.random.normal(KEY, (5, 4))
  p = relax(logits, jax.random.key(1), jnp.float32(0.7), sampler)
  np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, rtol=1e-6)
  assert (np.asarray(p) >= 0).all()


def test_softmax_ignores_noise_and_temperature():
  logits = jax.random.normal(KEY, (3, 4))
  a = relax(logits, jax.random.key(1), jnp.float32(0.5), "softmax")
  b = relax(logits, jax.random.key(2), jnp.float32(5.0), "softmax")
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, jax.nn.softmax(logits, -1))


def test_gumbel_hard_is_one_hot_forward_with_soft_gradient():
  logits = jax.random.normal(KEY, (6, 4))
  key, tau = jax.random.key(3), jnp.float32(1.0)
  hard = np.asarray(relax(logits, key, tau, "gumbel_hard"))
  assert set(np.unique(hard)) <= {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), 1.0)
  weights = jnp.arange(4.0)
  g_hard = jax.grad(lambda z: (relax(z, key, tau, "gumbel_hard") * weights).sum())(logits)
  g_soft = jax.grad(lambda z: (relax(z, key, tau, "gumbel") * weights).sum())(logits)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(g_hard).sum()) > 0


def test_masked_ops_are_never_sampled():
  space = TinySpace((8, 8, 1), 4, 4, (8, 8), (2, 1), ("conv3x3", "skip"))
  net = space.build((2, 8), (4, 8), nnx.Rngs(0))
  model = Supernet(net, np.asarray(space.op_mask()), 2, 2)
  assert space.op_mask() == [[True, False], [True, True]]  # skip cannot change the shape
  for i in range(20):
    probs = sample_probs(masked_logits(model), jax.random.key(i), jnp.float32(5.0), "gumbel")
    assert float(probs.op[0, 1]) == 0.0


def test_gumbel_hard_forward_uses_exactly_one_op_and_bit_pair():
  """The supernet's output under a hard sample equals the SubNet of that sample."""
  ops = ("conv3x3", "conv5x5", "dwsep3x3", "skip")
  space = TinySpace((8, 8, 1), 4, 4, (4, 8, 8), (1, 2, 1), ops)
  w_bits, a_bits = (2, 4, 8), (2, 4, 8)
  net = space.build(w_bits, a_bits, nnx.Rngs(0))
  x = jax.random.uniform(KEY, (16, 8, 8, 1))
  net.calibrate(x)
  model = Supernet(net, np.asarray(space.op_mask()), 3, 3)
  logits = masked_logits(model)
  for i in range(3):
    probs = sample_probs(logits, jax.random.key(10 + i), jnp.float32(1.0), "gumbel_hard")
    op_idx = np.asarray(probs.op).argmax(-1)
    for name, arr in zip(("op", "w", "a"), probs, strict=True):
      a = np.asarray(arr)
      assert set(np.unique(a)) <= {0.0, 1.0}, name
    rows = np.arange(len(op_idx))
    # exactly one op per layer, and for the chosen op exactly one weight and one activation bit
    np.testing.assert_array_equal(np.asarray(probs.op).sum(-1), 1)
    np.testing.assert_array_equal(np.asarray(probs.w)[rows, op_idx].sum(-1), 1)
    np.testing.assert_array_equal(np.asarray(probs.a)[rows, op_idx].sum(-1), 1)
    choices = [
      Choice(
        ops[o],
        w_bits[int(np.asarray(probs.w)[l, o].argmax())],
        a_bits[int(np.asarray(probs.a)[l, o].argmax())],
      )
      for l, o in enumerate(op_idx)
    ]
    subnet = space.build(w_bits, a_bits, nnx.Rngs(1), choices)
    subnet.inherit(net, choices, ops)
    np.testing.assert_allclose(net(x, probs), subnet(x), rtol=1e-5, atol=1e-6)


def test_temperature_schedule():
  assert temperature(0, 2, 10, 5.0, 0.5) == 5.0
  assert temperature(2, 2, 10, 5.0, 0.5) == 5.0
  assert temperature(10, 2, 10, 5.0, 0.5) == pytest.approx(0.5)
  mid = temperature(6, 2, 10, 5.0, 0.5)
  assert mid == pytest.approx(np.sqrt(5.0 * 0.5))  # exponential: geometric mean halfway
