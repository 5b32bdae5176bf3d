"""uint8 image batches → float32 network input, with random crop + flip, inside the jitted steps.

Images stay on the device as uint8 NHWC (a quarter of float32's memory, and what a camera or an
MCU hands the deployed model). Each step turns its batch into the network input here, so the
conversion and the augmentation fuse into the step's XLA program: no per-sample Python work and
no host round trip.

The network input is ``x / 255`` in [0, 1] unless ``InputSpec.normalize`` asks for the
per-channel ``(x / 255 − mean) / std``. The default is off because every primitive of the search
spaces quantizes its input with an *unsigned* quantizer (``quant.lsq.act_qrange``): negative
normalized pixels would be clipped to 0 at the stem. ``x / 255`` is what an 8-bit unsigned
input quantizer represents without loss.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

# Folded into the step key, so the augmentation draws are independent of the Gumbel noise that
# the step draws from the same key.
AUGMENT_STREAM = 0x61756721


@dataclass(frozen=True)
class InputSpec:
  """How a uint8 batch becomes the network input; static and hashable (jit closes over it).

  Attributes:
    mean, std: per-channel statistics of the training pixels / 255, ``C`` entries each.
    normalize: feed ``(x/255 − mean)/std`` instead of ``x/255``.
    augment: random crop (zero padding ``pad``) and, if ``flip``, random horizontal flip.
    pad: crop padding in pixels on every side.
    flip: flip half of the samples left-right (only where ``augment``).
  """

  mean: tuple[float, ...]
  std: tuple[float, ...]
  normalize: bool = False
  augment: bool = False
  pad: int = 4
  flip: bool = True

  def metadata(self) -> dict[str, str]:
    """String key/values describing the network input, for exported models' metadata."""
    rule = "(pixels/255 - input_mean)/input_std" if self.normalize else "pixels/255"
    return {
      "input": f"float32 NCHW = {rule}, from uint8 pixels 0..255",
      "input_mean": ",".join(f"{m:.6g}" for m in self.mean),
      "input_std": ",".join(f"{s:.6g}" for s in self.std),
      "input_normalized": "true" if self.normalize else "false",
    }


def crop_and_flip(x: jax.Array, offsets: jax.Array, flips: jax.Array, pad: int) -> jax.Array:
  """Per-sample crop of the zero-padded batch, then an optional left-right flip.

  Args:
    x: ``(N, H, W, C)`` images, any dtype.
    offsets: ``(N, 2)`` int32 top-left corner (row, column) of each crop in the padded image,
      each in ``[0, 2·pad]``; ``(pad, pad)`` is the identity.
    flips: ``(N,)`` bool, flip sample n left-right.
    pad: zero padding on every side, in pixels.

  Returns:
    ``(N, H, W, C)`` of ``x``'s dtype.
  """
  _, h, w, c = x.shape
  if pad:
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    zero = jnp.zeros((), offsets.dtype)

    def crop(image, corner):
      return jax.lax.dynamic_slice(image, (corner[0], corner[1], zero), (h, w, c))

    x = jax.vmap(crop)(padded, offsets)
  return jnp.where(flips[:, None, None, None], x[:, :, ::-1], x)


def augment(x: jax.Array, key: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
  """Random crop with zero padding and random horizontal flip, per sample (CIFAR-style).

  Each sample's crop corner is uniform over the ``(2·pad + 1)²`` positions of the padded image,
  and it is flipped with probability 1/2 when ``flip``.

  Args:
    x: ``(N, H, W, C)`` images, uint8 or float.
    key: PRNG key; the same key gives the same batch.
    pad: zero padding on every side, in pixels (0: no crop).
    flip: whether to flip.

  Returns:
    ``(N, H, W, C)`` of ``x``'s dtype.
  """
  k_crop, k_flip = jax.random.split(key)
  n = x.shape[0]
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1, dtype=jnp.int32)
  flips = jax.random.bernoulli(k_flip, 0.5, (n,)) if flip else jnp.zeros((n,), bool)
  return crop_and_flip(x, offsets, flips, pad)


def to_network_input(x: jax.Array, spec: InputSpec) -> jax.Array:
  """``(N, H, W, C)`` uint8 pixels → float32 network input (never augmented)."""
  x = x.astype(jnp.float32) / 255.0
  if spec.normalize:
    x = (x - jnp.asarray(spec.mean, jnp.float32)) / jnp.asarray(spec.std, jnp.float32)
  return x


def prepare_batch(x: jax.Array, key: jax.Array | None, spec: InputSpec | None) -> jax.Array:
  """A training batch as the network sees it: augmented if ``spec.augment``, then converted.

  Args:
    x: ``(N, H, W, C)`` uint8 batch.
    key: the step's PRNG key (a stream of its own is folded in); unused without augmentation.
    spec: the dataset's input spec; ``None`` means ``x`` already is the network input.

  Returns:
    ``(N, H, W, C)`` float32.
  """
  if spec is None:
    return x
  if spec.augment:
    x = augment(x, jax.random.fold_in(key, AUGMENT_STREAM), pad=spec.pad, flip=spec.flip)
  return to_network_input(x, spec)
