"""uint8 batches → network input: crop + flip augmentation, conversion, and the jitted steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qdarts.datasets import InputSpec, augment, crop_and_flip, prepare_batch, to_network_input
from qdarts.datasets.augment import AUGMENT_STREAM
from qdarts.steps import TrainState, make_predict, make_weight_step, weight_optimizer

N, H, W, C = 16, 6, 5, 2
SPEC = InputSpec(mean=(0.25, 0.5), std=(0.5, 0.25))


@pytest.fixture(scope="module")
def x() -> jax.Array:
  return jnp.asarray(np.random.default_rng(0).integers(1, 256, (N, H, W, C)), jnp.uint8)


def test_augment_keeps_shape_and_dtype(x):
  out = augment(x, jax.random.key(0), pad=2, flip=True)
  assert out.shape == x.shape and out.dtype == jnp.uint8
  assert augment(x.astype(jnp.float32), jax.random.key(0)).dtype == jnp.float32


def test_flipped_only_batch_is_mirrored(x):
  centred = jnp.full((N, 2), 3, jnp.int32)
  out = crop_and_flip(x, centred, jnp.ones((N,), bool), pad=3)
  np.testing.assert_array_equal(out, x[:, :, ::-1])
  np.testing.assert_array_equal(crop_and_flip(x, centred, jnp.zeros((N,), bool), pad=3), x)


def test_crop_shifts_content_and_pads_with_zeros(x):
  pad, no_flip = 2, jnp.zeros((N,), bool)
  down = crop_and_flip(x, jnp.tile(jnp.asarray([[pad + 1, pad]]), (N, 1)), no_flip, pad)
  np.testing.assert_array_equal(down[:, :-1], x[:, 1:])  # content moves up one row
  assert not np.asarray(down[:, -1]).any()  # the row that came from the padding is zero
  right = crop_and_flip(x, jnp.tile(jnp.asarray([[pad, 0]]), (N, 1)), no_flip, pad)
  np.testing.assert_array_equal(right[:, :, pad:], x[:, :, :-pad])
  assert not np.asarray(right[:, :, :pad]).any()


def test_each_sample_is_one_crop_of_its_own_image(x):
  pad = 1
  out = np.asarray(augment(x, jax.random.key(3), pad=pad, flip=True))
  candidates = [
    np.asarray(crop_and_flip(x, jnp.tile(jnp.asarray([[dy, dx]]), (N, 1)), jnp.full((N,), f), pad))
    for dy in range(2 * pad + 1)
    for dx in range(2 * pad + 1)
    for f in (False, True)
  ]
  matches = np.stack([(c == out).all(axis=(1, 2, 3)) for c in candidates])  # (18, N)
  assert matches.any(axis=0).all()
  assert len({int(m.argmax()) for m in matches.T}) > 3  # not one transform for the whole batch


def test_pad_zero_only_flips_some_samples(x):
  out = np.asarray(augment(x, jax.random.key(1), pad=0, flip=True))
  flipped = (out == np.asarray(x)[:, :, ::-1]).all(axis=(1, 2, 3))
  kept = (out == np.asarray(x)).all(axis=(1, 2, 3))
  assert (flipped | kept).all() and flipped.any() and kept.any()
  np.testing.assert_array_equal(augment(x, jax.random.key(1), pad=0, flip=False), x)


def test_augment_is_deterministic_for_a_key_and_differs_between_keys(x):
  a = augment(x, jax.random.key(7))
  np.testing.assert_array_equal(a, augment(x, jax.random.key(7)))
  assert not np.array_equal(a, augment(x, jax.random.key(8)))
  jitted = jax.jit(lambda x, k: augment(x, k, pad=4, flip=True))
  np.testing.assert_array_equal(jitted(x, jax.random.key(7)), a)


def test_network_input_is_pixels_over_255_or_normalized(x):
  ref = np.asarray(x, np.float32) / 255
  out = to_network_input(x, SPEC)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, rtol=1e-6)
  normalized = to_network_input(x, InputSpec(SPEC.mean, SPEC.std, normalize=True))
  np.testing.assert_allclose(normalized, (ref - SPEC.mean) / np.asarray(SPEC.std), atol=1e-6)


def test_prepare_batch_augments_only_when_asked(x):
  key = jax.random.key(0)
  np.testing.assert_array_equal(prepare_batch(x, key, SPEC), to_network_input(x, SPEC))
  spec = InputSpec(SPEC.mean, SPEC.std, augment=True, pad=2)
  expected = to_network_input(augment(x, jax.random.fold_in(key, AUGMENT_STREAM), pad=2), spec)
  np.testing.assert_array_equal(jax.jit(prepare_batch, static_argnums=2)(x, key, spec), expected)
  float_x = to_network_input(x, SPEC)
  assert prepare_batch(float_x, key, None) is float_x  # no spec: already the network input


def test_input_spec_is_hashable_and_describes_the_input():
  spec = InputSpec((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616), augment=True)
  assert hash(spec) == hash(InputSpec(spec.mean, spec.std, augment=True))
  meta = spec.metadata()
  assert "pixels/255" in meta["input"] and meta["input_normalized"] == "false"
  assert meta["input_mean"] == "0.4914,0.4822,0.4465"


def _linear_step(spec):
  """A weight step of a linear classifier on the flattened input."""

  def apply_fn(params, frozen, x, key, tau):
    del frozen, key, tau
    weights, scales = params
    return x.reshape(len(x), -1) @ weights["w"] * scales["s"]

  params = ({"w": jnp.linspace(-1, 1, H * W * C * 3).reshape(H * W * C, 3)}, {"s": jnp.ones(())})
  tx = weight_optimizer("sgd", 0.1, 0.9, 0.0, 10)
  return make_weight_step(apply_fn, tx, spec), TrainState(params, tx.init(params)), apply_fn


def test_weight_step_converts_and_augments_inside_the_jitted_step(x):
  y = jnp.arange(N) % 3
  key, tau = jax.random.key(5), jnp.float32(1.0)
  aug = InputSpec(SPEC.mean, SPEC.std, augment=True, pad=2)
  step_aug, train, apply_fn = _linear_step(aug)
  step_plain, _, _ = _linear_step(SPEC)
  step_float, _, _ = _linear_step(None)
  _, m_plain = step_plain(train, None, x, y, key, tau)
  _, m_float = step_float(train, None, to_network_input(x, SPEC), y, key, tau)
  np.testing.assert_allclose(m_plain["loss"], m_float["loss"], rtol=1e-6)
  _, m_aug = step_aug(train, None, x, y, key, tau)
  _, m_expected = step_float(train, None, prepare_batch(x, key, aug), y, key, tau)
  np.testing.assert_allclose(m_aug["loss"], m_expected["loss"], rtol=1e-6)
  assert abs(float(m_aug["loss"]) - float(m_plain["loss"])) > 1e-4
  predict = make_predict(apply_fn, aug)  # evaluation never augments
  np.testing.assert_allclose(
    predict(train.params, None, x), apply_fn(train.params, None, to_network_input(x, aug), 0, 0)
  )
